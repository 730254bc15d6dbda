// The daemon in a process of its own for soak_memory: Daemon.start from dist/ with the
// environment's configuration, then back-to-back probe cycles (probeNow) instead of waiting for
// the cron schedule. Memory and handle counts are sampled after a full garbage collection: a few
// settled samples after the warm-up and again at the end, and samples along the way. Run with
// --expose-gc; prints one JSON line on stdout: { before, during, after }.
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

// Before the samples that are compared, the pool's idle connections (30 s idle timeout) are given
// time to close, so both ends hold only what the daemon keeps open; then several samples a second
// apart, so the comparison is of several pairs rather than one.
const settleMs = Number(process.env.SOAK_SETTLE_MS ?? 0);
const settledSamples = Number(process.env.SOAK_SETTLED_SAMPLES ?? 1);
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

function sample(probes) {
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  const resources = process.getActiveResourcesInfo();
  const byType = {};
  for (const r of resources) byType[r] = (byType[r] ?? 0) + 1;
  return { probes, rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers, handles: resources.length, byType };
}

async function settled(probes) {
  await pause(settleMs);
  const samples = [];
  for (let i = 0; i < settledSamples; i++) {
    if (i > 0) await pause(1000);
    samples.push(sample(probes));
  }
  return samples;
}

let probes = 0;
const realmCount = (await daemon.realmCount()) ?? 0;
for (let i = 0; i < warmup; i++) {
  await daemon.probeNow();
  probes += realmCount;
}
const before = await settled(probes);
const every = Number(process.env.SOAK_SAMPLE_EVERY ?? cycles);
const during = [];
for (let i = 1; i <= cycles; i++) {
  await daemon.probeNow();
  probes += realmCount;
  if (i % every === 0 && i < cycles) {
    await pause(200);
    during.push(sample(probes));
  }
}
const after = await settled(probes);
await daemon.stop('SIGINT');
process.stdout.write(`${JSON.stringify({ before, during, after })}\n`);
process.exit(0);
