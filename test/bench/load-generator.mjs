// The benchmarks' load generator: autocannon in a process of its own, driven over IPC, so that
// it can be given a CPU of its own (cpu.ts) instead of sharing one, at the scheduler's whim, with
// the server it measures. Each message { id, url, seconds, connections } is answered with
// { id, ok: true, load } or, when autocannon fails, { id, ok: false, error } for the caller to throw.
import autocannon from 'autocannon';

process.on('message', async ({ id, url, seconds, connections }) => {
  try {
    const r = await autocannon({ url, connections, duration: seconds });
    process.send({ id, ok: true, load: { rps: r.requests.total / r.duration, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors } });
  } catch (err) {
    process.send({ id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
});
process.on('disconnect', () => process.exit(0));
