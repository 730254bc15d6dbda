/**
 * Where probe results wait while PostgreSQL cannot take them: JSON lines in SPOOL_DIR, each
 * append fsynced before it counts as written. Appends go to `current.jsonl`; a replay first
 * renames it to `replay-<time>.jsonl` (so appends during the replay go to a new file), then
 * replays every replay file oldest first, in order, deleting each once all its lines are in the
 * database. Inserts are idempotent by probe_id, so a replay interrupted anywhere can run again.
 * A torn last line (a crash mid-append) is skipped and reported, not fatal.
 */
import { mkdir, open, readdir, readFile, rename, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { ExitCode, OperatorError } from '../errors.js';
import { LogEvent, type Logger } from '../log.js';
import type { ProbeResult } from '../probe-result.js';

export const CURRENT_FILE = 'current.jsonl';
/** Who holds a spool directory: `{ pid, host, instance }` of the live daemon writing it. */
export const OWNER_FILE = 'owner.json';

/** A daemon's own spool directory under SPOOL_DIR, named after its instance id. */
export function instanceSpoolDir(spoolDir: string, instanceId: string): string {
  return path.join(spoolDir, instanceId.replace(/[^A-Za-z0-9._-]/g, '_'));
}

/** Another live daemon on this host writes this spool directory (exit 78: two writers would interleave and replay each other's files). */
export class SpoolHeldError extends OperatorError {
  constructor(dir: string, owner: { pid: number; instance: string }) {
    super(
      `the spool ${dir} is held by another running daemon (pid ${owner.pid}, instance ${owner.instance}): give each daemon its own FLEET_INSTANCE_ID (its spool is SPOOL_DIR/<instance>) or its own SPOOL_DIR`,
      ExitCode.configInvalid,
    );
    this.name = 'SpoolHeldError';
  }
}
const REPLAY_PATTERN = /^replay-\d{13}-\d{6}\.jsonl$/;

export interface ReplayOutcome {
  /** Results read back from the spool. */
  readonly replayed: number;
  /** Rows actually inserted (the rest were already there: an earlier replay got that far). */
  readonly inserted: number;
  /** Lines that could not be read back (torn by a crash, or damaged). */
  readonly skipped: number;
}

/** Writes a batch of results; returns how many rows were new. */
export type BatchWriter = (results: readonly ProbeResult[]) => Promise<number>;

function serialize(r: ProbeResult): string {
  return JSON.stringify({
    ...r,
    checkedAt: r.checkedAt.toISOString(),
    refreshTokenExpiresAt: r.refreshTokenExpiresAt?.toISOString(),
  });
}

function deserialize(line: string): ProbeResult | undefined {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(line) as Record<string, unknown>;
  } catch {
    // An unreadable line is counted and reported by the caller (spool.replayed `skipped`).
    return undefined;
  }
  const checkedAt = new Date(String(raw.checkedAt));
  if (typeof raw.probeId !== 'string' || typeof raw.realmId !== 'string' || Number.isNaN(checkedAt.getTime())) return undefined;
  return {
    ...(raw as unknown as ProbeResult),
    checkedAt,
    refreshTokenExpiresAt: typeof raw.refreshTokenExpiresAt === 'string' ? new Date(raw.refreshTokenExpiresAt) : undefined,
  };
}

export class Spool {
  private handle: FileHandle | undefined;
  private pendingCount = 0;
  private sequence = 0;

  private owned = false;

  constructor(
    readonly dir: string,
    private readonly log: Logger,
    private readonly batchSize = 2000,
    /** Claims the directory for this process (owner.json); a live other owner on this host refuses the start. */
    private readonly owner?: { readonly instance: string; readonly adoptFrom?: string },
  ) {}

  /** Results written to the spool and not yet replayed. */
  get pending(): number {
    return this.pendingCount;
  }

  /** Creates the directory and counts what an earlier run left behind. */
  async open(): Promise<number> {
    await mkdir(this.dir, { recursive: true });
    if (this.owner) {
      await this.claimOwnership(this.owner.instance);
      if (this.owner.adoptFrom) await this.adopt(this.owner.adoptFrom);
    }
    // What an earlier run appended is replayed as a file of its own: its last line may be torn,
    // and appending after a torn line would damage the next one too.
    await this.sealCurrent();
    let count = 0;
    for (const file of await this.files()) {
      const text = await readFile(path.join(this.dir, file), 'utf8');
      count += text.split('\n').filter((l) => l.trim() !== '').length;
    }
    this.pendingCount = count;
    return count;
  }

  /** Appends and fsyncs; resolves only once the results are on disk. */
  async append(results: readonly ProbeResult[]): Promise<void> {
    if (results.length === 0) return;
    this.handle ??= await open(path.join(this.dir, CURRENT_FILE), 'a', 0o600);
    const text = results.map((r) => `${serialize(r)}\n`).join('');
    try {
      await this.handle.appendFile(text, 'utf8');
      await this.handle.datasync();
    } catch (err) {
      // The handle may be unusable now; the next append reopens it.
      await this.closeHandle();
      throw err;
    }
    this.pendingCount += results.length;
    this.log.warn(
      { event: LogEvent.spoolAppended, count: results.length, pending: this.pendingCount, dir: this.dir },
      `${results.length} result(s) kept in the spool until PostgreSQL takes them`,
    );
  }

  /** Replays everything spooled, in order. Throws (leaving the rest in place) when the writer fails. */
  async replay(write: BatchWriter): Promise<ReplayOutcome> {
    await this.sealCurrent();
    let replayed = 0;
    let inserted = 0;
    let skipped = 0;
    for (const file of (await this.files()).filter((f) => f !== CURRENT_FILE)) {
      const full = path.join(this.dir, file);
      const text = await readFile(full, 'utf8');
      const lines = text.split('\n');
      const torn = lines.at(-1) !== '';
      let batch: ProbeResult[] = [];
      for (const [i, line] of lines.entries()) {
        if (line.trim() === '') continue;
        const result = deserialize(line);
        if (!result) {
          skipped++;
          const last = torn && i === lines.length - 1;
          this.log.warn(
            { event: LogEvent.spoolReplayed, file, line: i + 1, skipped: true },
            last ? 'skipped a torn last line in the spool (a crash during an append)' : 'skipped an unreadable line in the spool',
          );
          continue;
        }
        batch.push(result);
        if (batch.length >= this.batchSize) {
          inserted += await write(batch);
          replayed += batch.length;
          batch = [];
        }
      }
      if (batch.length > 0) {
        inserted += await write(batch);
        replayed += batch.length;
      }
      await unlink(full);
      this.pendingCount = Math.max(0, this.pendingCount - (lines.filter((l) => l.trim() !== '').length));
    }
    if (replayed > 0 || skipped > 0) {
      this.log.info(
        { event: LogEvent.spoolReplayed, count: replayed, inserted, skipped, pending: this.pendingCount },
        `replayed ${replayed} spooled result(s) into PostgreSQL`,
      );
    }
    return { replayed, inserted, skipped };
  }

  async close(): Promise<void> {
    await this.closeHandle();
    if (this.owned) {
      this.owned = false;
      await unlink(path.join(this.dir, OWNER_FILE)).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      });
    }
  }

  private async claimOwnership(instance: string): Promise<void> {
    const file = path.join(this.dir, OWNER_FILE);
    let text: string | undefined;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text !== undefined) {
      let owner: { pid?: unknown; host?: unknown; instance?: unknown } = {};
      try {
        owner = JSON.parse(text) as typeof owner;
      } catch (err) {
        // A torn owner file (a crash while writing it) holds nothing: it is replaced.
        this.log.warn({ event: LogEvent.spoolFound, file, err }, 'unreadable spool owner file replaced');
      }
      if (typeof owner.pid === 'number' && owner.host === hostname() && owner.pid !== process.pid && pidAlive(owner.pid)) {
        throw new SpoolHeldError(this.dir, { pid: owner.pid, instance: String(owner.instance) });
      }
    }
    await writeFile(file, JSON.stringify({ pid: process.pid, host: hostname(), instance }), { mode: 0o600 });
    this.owned = true;
  }

  /** Spool files an earlier release left directly in SPOOL_DIR are moved into this daemon's directory, to be replayed. */
  private async adopt(from: string): Promise<void> {
    const names = await readdir(from);
    for (const name of names.filter((n) => n === CURRENT_FILE || REPLAY_PATTERN.test(n)).sort()) {
      const target = name === CURRENT_FILE ? this.replayName() : name;
      try {
        await rename(path.join(from, name), path.join(this.dir, target));
      } catch (err) {
        // Another daemon adopting at the same moment took it: it replays it.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }

  private async closeHandle(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }

  /** Closes the current file and renames it for replay (appends then start a new one). */
  private async sealCurrent(): Promise<void> {
    await this.closeHandle();
    try {
      await rename(path.join(this.dir, CURRENT_FILE), path.join(this.dir, this.replayName()));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  private replayName(): string {
    this.sequence = (this.sequence + 1) % 1_000_000;
    return `replay-${String(Date.now()).padStart(13, '0')}-${String(this.sequence).padStart(6, '0')}.jsonl`;
  }

  /** Replay files oldest first, then the current file. */
  private async files(): Promise<string[]> {
    const names = await readdir(this.dir);
    const replays = names.filter((n) => REPLAY_PATTERN.test(n)).sort();
    return names.includes(CURRENT_FILE) ? [...replays, CURRENT_FILE] : replays;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
