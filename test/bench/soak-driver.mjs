// The daemon in a process of its own for soak_memory: Daemon.start from dist/ with the
// environment's configuration, then back-to-back probe cycles (probeNow) instead of waiting for
// the cron schedule, and memory and handle counts after a warm-up and at the end, each after a
// full garbage collection. Run with --expose-gc; prints one JSON line on stdout.
import { pino } from 'pino';
import { parseConfig, readEnvironment } from '../../dist/config.js';
import { Daemon } from '../../dist/daemon/daemon.js';
import { createLogger, SecretRegistry } from '../../dist/log.js';

const warmup = Number(process.env.SOAK_WARMUP_CYCLES);
const cycles = Number(process.env.SOAK_CYCLES);
const secrets = new SecretRegistry();
const parsed = parseConfig(readEnvironment(process.env, process.cwd()), 'full', process.cwd());
secrets.add(...parsed.secrets);
if (!parsed.ok) throw new Error(parsed.problems.join('; '));
// Every line is still built and scrubbed; it just goes nowhere.
const log = createLogger({ level: 'info', secrets, destination: pino.destination({ dest: '/dev/null', sync: true }) });
const daemon = await Daemon.start(parsed.config, log, secrets, 'soak');

// Before the samples whose handles are compared, the pool's idle connections (30 s idle timeout)
// are given time to close, so both counts hold only what the daemon keeps open.
const settleMs = Number(process.env.SOAK_SETTLE_MS ?? 0);
async function sample(probes, settle = 200) {
  await new Promise((r) => setTimeout(r, settle));
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  const resources = process.getActiveResourcesInfo();
  const byType = {};
  for (const r of resources) byType[r] = (byType[r] ?? 0) + 1;
  return { probes, rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, handles: resources.length, byType };
}

let probes = 0;
const realmCount = (await daemon.realmCount()) ?? 0;
for (let i = 0; i < warmup; i++) {
  await daemon.probeNow();
  probes += realmCount;
}
const every = Number(process.env.SOAK_SAMPLE_EVERY ?? cycles);
const samples = [await sample(probes, settleMs)];
for (let i = 1; i <= cycles; i++) {
  await daemon.probeNow();
  probes += realmCount;
  if (i % every === 0) samples.push(await sample(probes, i === cycles ? settleMs : 200));
}
await daemon.stop('SIGINT');
process.stdout.write(`${JSON.stringify({ samples })}\n`);
process.exit(0);
