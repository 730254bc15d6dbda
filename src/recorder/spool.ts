/**
 * Where probe results wait while PostgreSQL cannot take them: JSON lines in SPOOL_DIR, each
 * append fsynced before it counts as written. Appends go to `current.jsonl`; a replay first
 * renames it to `replay-<time>.jsonl` (so appends during the replay go to a new file), then
 * replays every replay file oldest first, in order, deleting each once all its lines are in the
 * database. Inserts are idempotent by probe_id, so a replay interrupted anywhere can run again.
 * A torn last line (a crash mid-append) is skipped and reported, not fatal.
 */
import { mkdir, open, readdir, readFile, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { LogEvent, type Logger } from '../log.js';
import { reviveProbeResult, type ProbeResult } from '../probe-result.js';

export const CURRENT_FILE = 'current.jsonl';
const REPLAY_PATTERN = /^replay-\d{13}-\d{6}\.jsonl$/;
/**
 * A daemon's own spool directory: SPOOL_DIR/<FLEET_INSTANCE_ID>/<pid>. Daemons on one host never
 * share one, nor do two processes of one slot (PM2 reload runs the next one while the last one
 * finishes). A directory whose process is gone is adopted by the slot's next process (its files
 * moved over and replayed): nothing spooled is left behind by a crash.
 */
export function instanceSpoolDir(spoolDir: string, instanceId: string, pid = process.pid): string {
  return path.join(spoolDir, instanceId.replace(/[^A-Za-z0-9._-]/g, '_'), String(pid));
}

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
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    // An unreadable line is counted and reported by the caller (spool.replayed `skipped`).
    return undefined;
  }
  return reviveProbeResult(raw);
}

export class Spool {
  private handle: FileHandle | undefined;
  private pendingCount = 0;
  private sequence = 0;

  constructor(
    readonly dir: string,
    private readonly log: Logger,
    private readonly batchSize = 2000,
    /**
     * SPOOL_DIR, where to look for spools left by processes that are gone: every slot's pid
     * directories (a slot may never run again: `pm2 scale` down, a changed PORT), and spool files
     * directly in SPOOL_DIR (as earlier releases wrote them).
     */
    private readonly adopt?: { readonly root: string },
  ) {}

  /** Results written to the spool and not yet replayed. */
  get pending(): number {
    return this.pendingCount;
  }

  /** Creates the directory and counts what an earlier run left behind. */
  async open(): Promise<number> {
    await mkdir(this.dir, { recursive: true });
    await this.adoptOrphans();
    // What an earlier run appended is replayed as a file of its own: its last line may be torn,
    // and appending after a torn line would damage the next one too.
    await this.sealCurrent();
    return this.recount();
  }

  /** Counts the results in the directory's files (at open, and after an adoption). */
  private async recount(): Promise<number> {
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
    // An empty directory of this process's goes with it; one holding results stays for adoption.
    if (this.adopt && this.pendingCount === 0) await rm(this.dir, { recursive: true, force: true });
  }

  /**
   * Spools of processes that are gone (a crash, a reload's predecessor once it exited) and files
   * an earlier release left directly in SPOOL_DIR are moved into this directory, to be replayed.
   * Returns how many files were adopted. Run at open and before each replay.
   */
  async adoptOrphans(): Promise<number> {
    if (!this.adopt) return 0;
    const { root } = this.adopt;
    let adopted = await this.moveSpoolFiles(root);
    const slots = (await readdir(root, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => path.join(root, e.name));
    const orphans: Array<{ dir: string; pid: number }> = [];
    for (const slot of slots) {
      for (const entry of await readdir(slot, { withFileTypes: true })) {
        const pid = Number(entry.name);
        const dir = path.join(slot, entry.name);
        if (entry.isDirectory() && /^\d+$/.test(entry.name) && dir !== this.dir && !pidAlive(pid)) orphans.push({ dir, pid });
      }
    }
    for (const { dir, pid } of orphans) {
      const moved = await this.moveSpoolFiles(dir);
      adopted += moved;
      await rm(dir, { recursive: true, force: true });
      if (moved > 0) this.log.warn({ event: LogEvent.spoolFound, from: dir, files: moved }, `adopted ${moved} spool file(s) left by process ${pid}, which is gone; they are replayed`);
    }
    if (adopted > 0) await this.recount();
    return adopted;
  }

  private async moveSpoolFiles(from: string): Promise<number> {
    let names: string[];
    try {
      names = await readdir(from);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
    let moved = 0;
    for (const name of names.filter((n) => n === CURRENT_FILE || REPLAY_PATTERN.test(n)).sort()) {
      const target = name === CURRENT_FILE ? this.replayName() : name;
      try {
        await rename(path.join(from, name), path.join(this.dir, target));
        moved++;
      } catch (err) {
        // Another process adopting at the same moment took it: it replays it.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    return moved;
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

/** Whether a process with this pid runs on this host (EPERM: it does, as another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
