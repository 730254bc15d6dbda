/** A logger whose lines are kept in memory as parsed objects (and raw text, for secret scans). */
import { Writable } from 'node:stream';
import { createLogger, SecretRegistry, type Logger } from '../../src/log.js';

export interface CapturedLog {
  readonly log: Logger;
  readonly secrets: SecretRegistry;
  readonly lines: string[];
  events(): Array<Record<string, unknown>>;
  byEvent(name: string): Array<Record<string, unknown>>;
}

export function captureLog(level: 'trace' | 'debug' | 'info' | 'warn' = 'debug', secrets = new SecretRegistry()): CapturedLog {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
      done();
    },
  });
  const log = createLogger({ level, secrets, destination });
  const events = (): Array<Record<string, unknown>> => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, secrets, lines, events, byEvent: (name) => events().filter((e) => e.event === name) };
}
