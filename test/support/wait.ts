/** Waiting on a condition, never on a fixed sleep. */
import http from 'node:http';

/** Retries `check` until it passes (or rethrows its last failure after `timeoutMs`). */
export async function eventually(check: () => Promise<void>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * Polls `url` every 20 ms until stop() (what a load balancer's health checks see): each answer's
 * status, or the connection error's message.
 */
export function pollStatuses(url: string, opts: { newConnection?: boolean } = {}): { count(): number; stop(): Promise<Array<number | string>> } {
  const answers: Array<number | string> = [];
  let polling = true;
  const loop = (async () => {
    while (polling) {
      try {
        answers.push(opts.newConnection ? await statusOnNewConnection(url) : (await fetch(url)).status);
      } catch (err) {
        answers.push(String((err as Error & { cause?: Error }).cause?.message ?? (err as Error).message ?? err));
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    count: () => answers.length,
    stop: async () => {
      polling = false;
      await loop;
      return answers;
    },
  };
}

/** One GET on a connection of its own, as a load balancer's health check makes it (HAProxy's default). */
function statusOnNewConnection(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}
