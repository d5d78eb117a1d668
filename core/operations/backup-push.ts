/**
 * `backup-push [DATADIR]`: a base backup in WAL-E's layout.
 *
 * Order matters, because a backup exists only once its sentinel does:
 *   1. pg_backup_start on one held connection (non-exclusive) → the name base_<segment>_<offset>
 *   2. extended_version.txt
 *   3. the data directory, cut into tar partitions, each streamed through codec and cipher, several at once
 *   4. pg_backup_stop → backup_label and tablespace_map, packed into one last partition of their own
 *   5. wait until the stop segment is archived (the backup is useless without it)
 *   6. the sentinel, last
 * Any failure before 6 leaves no sentinel (delete removes the leftovers later) and ends backup mode.
 */
import { realpath } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import PQueue from 'p-queue';
import { WalrusError, databaseError, refusedError, usageError } from '../errors.js';
import { ArchiveLayout } from '../layout.js';
import { writeCompressedObject, writeObject } from '../pipeline.js';
import { PartitionWorkerPool, partitionsAtOnce } from '../partition-workers.js';
import { WALRUS_PARTITION_LIMITS, planPartitions, type InlineFile, type Partition } from '../tar-partition.js';
import { sealSentinel, type BackupSentinel, type PartitionRecord, type WalrusBackupInfo } from '../backup-sentinel.js';
import type { DataFile, TablespaceSpec } from '../types.js';
import type { Logger } from '../log.js';
import type { ServerRuntime } from '../runtime.js';
import type { VerbRunner } from '../verbs.js';
import { pathExists } from '../durable-files.js';

export interface BackupPushOptions {
  dataDirectory: string;
  offline: boolean;
  poolSize: number;
  /** Bytes per second read from the data directory; null: no limit. */
  rateLimit: number | null;
  fast: boolean;
  /** How long to wait for the stop segment to appear in storage. */
  archiveTimeoutMs: number;
  /** Draw a progress line on this stream (a TTY), or null. */
  progress: NodeJS.WriteStream | null;
}

export interface BackupPushSummary {
  name: string;
  mode: 'online' | 'offline';
  dataDirectory: string;
  sentinelKey: string;
  startSegment: string;
  startOffset: string;
  stopSegment: string;
  stopOffset: string;
  startLsn: string;
  stopLsn: string;
  timeline: number;
  partitions: number;
  /** WAL-E's expanded_size_bytes: member bytes of every partition. */
  expandedSizeBytes: number;
  /** Bytes as stored (compressed, encrypted), partitions and extended_version.txt. */
  storedBytes: number;
  seconds: number;
  /** expandedSizeBytes per second of the whole backup, MB = 10^6 bytes. */
  mbPerSecond: number;
}

const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
const DEFAULT_ARCHIVE_TIMEOUT_S = 120;

// ------------------------------------------------------------------------------- options

/** `1048576`, `512k`, `20M`, `1G` (powers of 1024). */
export function parseByteRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kKmMgG]?)$/.exec(text.trim());
  const n = m ? Number(m[1]) * 1024 ** ' kmg'.indexOf((m[2] || ' ').toLowerCase()) : NaN;
  if (!m || !(n >= 1)) throw usageError(`--rate-limit must be bytes per second, like 52428800 or 50M (got '${text}')`);
  return Math.floor(n);
}

function positiveInteger(name: string, text: string, max: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || n < 1 || n > max) throw usageError(`--${name} must be an integer from 1 to ${max} (got '${text}')`);
  return n;
}

export const run: VerbRunner = async (ctx, [dataDirectoryArgument], options) => {
  const rt = await ctx.runtime();
  const summary = await pushBackup(rt, {
    dataDirectory: resolve(dataDirectoryArgument ?? rt.server.dataDirectory),
    offline: !!options['while-offline'],
    poolSize: options['pool-size'] !== undefined ? positiveInteger('pool-size', String(options['pool-size']), 64) : rt.server.poolSize,
    rateLimit: options['rate-limit'] !== undefined ? parseByteRate(String(options['rate-limit'])) : null,
    fast: !!options.fast,
    archiveTimeoutMs:
      1000 * (options['archive-timeout'] !== undefined ? positiveInteger('archive-timeout', String(options['archive-timeout']), 86400) : DEFAULT_ARCHIVE_TIMEOUT_S),
    progress: process.stderr.isTTY && !ctx.json ? process.stderr : null,
  });
  if (ctx.json) ctx.out.write(JSON.stringify(summary, null, 2) + '\n');
};

// ------------------------------------------------------------------------------- throttle & progress

/** Spaces reads so that they average `bytesPerSecond`, across every partition packed at once. */
export class ReadRateLimiter {
  private nextSlot = 0;
  constructor(private readonly bytesPerSecond: number) {}
  readonly take = async (n: number): Promise<void> => {
    const now = Date.now();
    const at = Math.max(this.nextSlot, now);
    this.nextSlot = at + (n * 1000) / this.bytesPerSecond;
    if (at > now) await new Promise((r) => setTimeout(r, at - now));
  };
}

const MB = 1e6;

/** One line on a TTY, redrawn at most twice a second: bytes done of total, MB/s, ETA. */
class ProgressLine {
  private done = 0;
  private readonly started = Date.now();
  private timer: NodeJS.Timeout | null = null;
  constructor(private readonly stream: NodeJS.WriteStream | null, private readonly total: number) {
    if (stream) {
      this.timer = setInterval(() => this.draw(), 500);
      this.timer.unref();
    }
  }
  add = (n: number) => {
    this.done += n;
  };
  private draw(): void {
    if (!this.stream) return;
    const seconds = (Date.now() - this.started) / 1000;
    const rate = this.done / Math.max(seconds, 0.001);
    const eta = rate > 0 ? Math.max(0, (this.total - this.done) / rate) : NaN;
    const pct = this.total > 0 ? Math.min(100, (100 * this.done) / this.total) : 100;
    const etaText = Number.isFinite(eta) ? `${Math.floor(eta / 60)}m${String(Math.round(eta % 60)).padStart(2, '0')}s` : '--';
    this.stream.write(`\r\x1b[K${(this.done / MB).toFixed(0)} / ${(this.total / MB).toFixed(0)} MB (${pct.toFixed(1)}%)  ${(rate / MB).toFixed(1)} MB/s  ETA ${etaText}`);
  }
  finish(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.stream?.write('\r\x1b[K');
  }
}

// ------------------------------------------------------------------------------- uploading partitions

interface UploadContext {
  rt: ServerRuntime;
  /** Read, pack, hash and compress each partition on a core of their own. */
  workers: PartitionWorkerPool;
  name: string;
  log: Logger;
  onBytes: (n: number) => void;
  throttle?: (n: number) => Promise<void>;
}

function memberCount(files: DataFile[], inline: InlineFile[]): number {
  return files.filter((f) => !(f.type === 'directory' && f.relativePath === '')).length + inline.length;
}

async function uploadPartition(u: UploadContext, partition: Partition, inline: InlineFile[], register?: (s: Readable) => void): Promise<PartitionRecord> {
  const { rt, log } = u;
  const key = rt.layout.partitionKey(u.name, partition.number);
  const where = rt.storage.describe(key);
  log.info('begin uploading a base backup volume', {
    detail: `Uploading to "${where}".`,
    structured: { action: 'push-backup', key: where, partition: partition.number, state: 'begin' },
  });
  const began = Date.now();
  // files → tar → codec in a worker thread; cipher → storage here (plugin instances of this thread)
  const encoded = u.workers.encode(
    { codecSpec: rt.codec ? rt.server.compression : 'none', configDirectory: rt.fleet.directory, partition, inlineFiles: inline, throttled: !!u.throttle },
    { onBytesRead: u.onBytes, throttle: u.throttle },
  );
  register?.(encoded.output);
  const stored = await writeCompressedObject(rt.storage, key, encoded.output, rt.cipher);
  const tar = await encoded.result;
  const rate = (tar.tarBytes / 1024 / Math.max((Date.now() - began) / 1000, 0.001)).toFixed(1);
  log.info('finish uploading a base backup volume', {
    detail: `Uploading to "${where}" complete at ${rate}KiB/s.`,
    structured: { action: 'push-backup', key: where, partition: partition.number, state: 'complete', rate },
  });
  return {
    number: partition.number,
    key,
    tarBytes: tar.tarBytes,
    storedBytes: stored.bytes,
    storedSha256: stored.sha256,
    members: memberCount(partition.files, inline),
  };
}

/** Every partition, `poolSize` at once; the first failure stops the others and is thrown. */
async function uploadPartitions(u: UploadContext, partitions: Partition[], poolSize: number): Promise<PartitionRecord[]> {
  const queue = new PQueue({ concurrency: poolSize });
  const active = new Set<Readable>();
  let failure: unknown = null;
  const tasks = partitions.map((p) =>
    queue.add(async () => {
      if (failure) throw failure;
      let mine: Readable | null = null;
      try {
        return await uploadPartition(u, p, [], (s) => {
          mine = s;
          active.add(s);
        });
      } catch (e) {
        if (!failure) {
          failure = e;
          // queued tasks see `failure` and end at once (clear() would leave their promises pending)
          // the uploads still running would only leave more leftovers
          for (const s of active) if (s !== mine) s.destroy(new WalrusError('INTERNAL', 'stopped: another partition failed'));
        }
        throw e;
      } finally {
        if (mine) active.delete(mine);
      }
    }),
  );
  const results = await Promise.allSettled(tasks);
  if (failure) throw failure;
  return results.map((r) => (r as PromiseFulfilledResult<PartitionRecord>).value);
}

// ------------------------------------------------------------------------------- the backup


async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

async function putPlain(rt: ServerRuntime, key: string, body: Buffer) {
  // WAL-E writes extended_version.txt and the sentinel uncompressed and unencrypted
  return writeObject(rt.storage, key, Readable.from([body]), { codec: null, cipher: null });
}

/** Polls storage until the WAL segment is there: a backup is usable only with its stop segment archived. */
async function waitForArchived(rt: ServerRuntime, segment: string, timeoutMs: number, log: Logger): Promise<void> {
  const key = rt.layout.walKey(segment);
  const deadline = Date.now() + timeoutMs;
  let said = false;
  // archive_command usually has it within a second: look again soon, then every second
  for (let pause = 100; ; pause = Math.min(1000, pause * 2)) {
    if (await rt.storage.head(key)) return;
    if (Date.now() >= deadline) {
      throw databaseError(`the backup's stop segment ${segment} was not archived within ${Math.round(timeoutMs / 1000)} s: ${rt.storage.describe(key)} does not exist`, {
        hint: "check archive_mode and archive_command (walrus wal-push for this server) and the server log; the backup's objects stay without a sentinel until delete removes them",
      });
    }
    if (!said) {
      log.info(`waiting for ${segment} to be archived`, { detail: `looking for "${rt.storage.describe(key)}"` });
      said = true;
    }
    await new Promise((r) => setTimeout(r, pause));
  }
}

function specOf(dataDirectory: string, tablespaces: TablespaceSpec[]): BackupSentinel['spec'] {
  const spec: BackupSentinel['spec'] = { base_prefix: dataDirectory.endsWith('/') ? dataDirectory : `${dataDirectory}/`, tablespaces: tablespaces.map((t) => t.name) };
  for (const t of tablespaces) spec[t.name] = { loc: t.loc, link: t.link };
  return spec;
}

interface Identity {
  versionText: string;
  versionNum: number;
  systemIdentifier: string;
}

interface StartPoint {
  name: string;
  startSegment: string;
  startOffset: string;
  startLsn: string;
  timeline: number;
  startedAt: Date;
}

interface StopPoint {
  stopSegment: string;
  stopOffset: string;
  stopLsn: string;
  stoppedAt: Date;
  backupLabel?: string;
  tablespaceMap?: string | null;
}

/** The parts both modes share: version file, listing, partitions, sentinel. */
class BackupWriter {
  readonly began = Date.now();
  extendedVersion: { key: string; storedBytes: number; storedSha256: string } | null = null;
  records: PartitionRecord[] = [];
  expandedSizeBytes = 0;
  partitionCount = 0;

  constructor(
    private readonly rt: ServerRuntime,
    private readonly o: BackupPushOptions,
    private readonly log: Logger,
    private readonly workers: PartitionWorkerPool,
  ) {}

  async refuseExisting(name: string): Promise<void> {
    if (await this.rt.storage.head(this.rt.layout.sentinelKey(name))) {
      throw refusedError(`backup ${name} already exists in ${this.rt.storage.describe(this.rt.layout.backupsFolder())}`, {
        hint: 'nothing changed in the cluster since that backup (offline); it is still good',
      });
    }
  }

  async putVersion(name: string, versionText: string): Promise<void> {
    const key = this.rt.layout.extendedVersionKey(name);
    this.log.info('start upload postgres version metadata', { detail: `Uploading to ${this.rt.storage.describe(key)}.` });
    const w = await putPlain(this.rt, key, Buffer.from(versionText));
    this.extendedVersion = { key, storedBytes: w.storedBytes, storedSha256: w.storedSha256 };
    this.log.info('postgres version metadata upload complete');
  }

  async putDataFiles(name: string, files: DataFile[]): Promise<number> {
    const partitions = await planPartitions(files, WALRUS_PARTITION_LIMITS);
    const atOnce = partitionsAtOnce(this.o.poolSize);
    const total = partitions.reduce((s, p) => s + p.bytes, 0);
    this.log.info('beginning volume compression', {
      detail: `${partitions.length} partition${partitions.length === 1 ? '' : 's'}, ${files.length} entries, ${total} bytes; ${atOnce} at once${this.o.rateLimit ? `, reading at most ${this.o.rateLimit} bytes/s` : ''}.`,
      structured: { action: 'push-backup', backup: name, partitions: partitions.length, bytes: total, state: 'begin' },
    });
    const progress = new ProgressLine(this.o.progress, total);
    const limiter = this.o.rateLimit ? new ReadRateLimiter(this.o.rateLimit) : null;
    try {
      this.records = await uploadPartitions(
        { rt: this.rt, workers: this.workers, name, log: this.log, onBytes: progress.add, throttle: limiter?.take },
        partitions,
        atOnce,
      );
    } finally {
      progress.finish();
    }
    this.expandedSizeBytes += total;
    this.partitionCount = partitions.length;
    return partitions.length;
  }

  /** backup_label and tablespace_map from pg_backup_stop, as files at the tar root. */
  async putLabelPartition(name: string, number: number, label: string, tablespaceMap: string | null): Promise<void> {
    const inline: InlineFile[] = [{ name: 'backup_label', content: Buffer.from(label) }];
    if (tablespaceMap) inline.push({ name: 'tablespace_map', content: Buffer.from(tablespaceMap) });
    const record = await uploadPartition({ rt: this.rt, workers: this.workers, name, log: this.log, onBytes: () => {} }, { number, files: [], bytes: 0 }, inline);
    this.records.push(record);
    this.expandedSizeBytes += inline.reduce((s, f) => s + f.content.length, 0);
    this.partitionCount += 1;
  }

  async putSentinel(start: StartPoint, stop: StopPoint, identity: Identity, tablespaces: TablespaceSpec[], mode: 'online' | 'offline'): Promise<BackupPushSummary> {
    const { rt, o } = this;
    const walrus: WalrusBackupInfo = {
      format: 1,
      startLsn: start.startLsn,
      stopLsn: stop.stopLsn,
      timeline: start.timeline,
      startedAt: start.startedAt.toISOString(),
      stoppedAt: stop.stoppedAt.toISOString(),
      serverVersion: identity.versionText,
      serverVersionNum: identity.versionNum,
      systemIdentifier: identity.systemIdentifier,
      mode,
      compression: rt.codec ? rt.codec.name : 'none',
      encrypted: rt.cipher !== null,
      ...(stop.backupLabel !== undefined ? { backupLabel: stop.backupLabel, tablespaceMap: stop.tablespaceMap ?? null } : {}),
      partitions: this.records,
      ...(this.extendedVersion ? { extendedVersion: this.extendedVersion } : {}),
    };
    const sentinel: BackupSentinel = {
      wal_segment_backup_stop: stop.stopSegment,
      wal_segment_offset_backup_stop: stop.stopOffset,
      expanded_size_bytes: this.expandedSizeBytes,
      spec: specOf(o.dataDirectory, tablespaces),
      walrus,
    };
    const key = rt.layout.sentinelKey(start.name);
    await putPlain(rt, key, Buffer.from(sealSentinel(sentinel)));
    const seconds = (Date.now() - this.began) / 1000;
    const storedBytes = this.records.reduce((s, r) => s + r.storedBytes, 0) + (this.extendedVersion?.storedBytes ?? 0);
    const summary: BackupPushSummary = {
      name: start.name,
      mode,
      dataDirectory: o.dataDirectory,
      sentinelKey: key,
      startSegment: start.startSegment,
      startOffset: start.startOffset,
      stopSegment: stop.stopSegment,
      stopOffset: stop.stopOffset,
      startLsn: start.startLsn,
      stopLsn: stop.stopLsn,
      timeline: start.timeline,
      partitions: this.partitionCount,
      expandedSizeBytes: this.expandedSizeBytes,
      storedBytes,
      seconds: Math.round(seconds * 1000) / 1000,
      mbPerSecond: Math.round((this.expandedSizeBytes / MB / Math.max(seconds, 0.001)) * 10) / 10,
    };
    this.log.info('base backup complete', {
      detail: `${start.name}: ${summary.partitions} partitions, ${summary.expandedSizeBytes} bytes (${summary.storedBytes} stored) in ${summary.seconds} s, ${summary.mbPerSecond} MB/s; sentinel "${rt.storage.describe(key)}".`,
      structured: { action: 'push-backup', backup: start.name, state: 'complete', bytes: summary.expandedSizeBytes, seconds: summary.seconds },
    });
    return summary;
  }
}

export async function pushBackup(rt: ServerRuntime, o: BackupPushOptions): Promise<BackupPushSummary> {
  // Started first: their module loading overlaps connecting and pg_backup_start's checkpoint.
  const workers = new PartitionWorkerPool(rt.log);
  workers.prewarm(partitionsAtOnce(o.poolSize));
  try {
    return await (o.offline ? pushOffline(rt, o, workers) : pushOnline(rt, o, workers));
  } finally {
    await workers.close();
  }
}

async function sameDirectory(a: string, b: string): Promise<boolean> {
  const [ra, rb] = await Promise.all([realpath(a).catch(() => resolve(a)), realpath(b).catch(() => resolve(b))]);
  return ra === rb;
}

async function pushOnline(rt: ServerRuntime, o: BackupPushOptions, workers: PartitionWorkerPool): Promise<BackupPushSummary> {
  const log = rt.log;
  const { connectSource } = await import('../../plugins/postgres/index.js');
  const source = await connectSource(rt.server.connection, log);
  let inBackup = false;
  try {
    const identity = await source.identify();
    if (!(await sameDirectory(identity.dataDirectory, o.dataDirectory))) {
      throw refusedError(`${o.dataDirectory} is not the data directory of the PostgreSQL server walrus connected to (${identity.dataDirectory})`, {
        hint: "give the server's data directory, or fix dataDirectory/connection in the server config",
      });
    }
    // Two backups of one server at once would make the later-starting one's leftovers look
    // older than a complete backup, and delete would take them: one at a time.
    if (!(await source.lockBackups()))
      throw refusedError(`another walrus backup-push of ${rt.server.name} is running (it holds the backup lock on the server)`, {
        hint: 'wait for it to finish; pg_stat_activity shows its session',
      });
    const writer = new BackupWriter(rt, o, log, workers);
    if (!o.fast)
      log.info('waiting for PostgreSQL to finish a spread checkpoint before the backup starts', {
        detail: 'this can take up to checkpoint_timeout × checkpoint_completion_target (4.5 minutes by default)',
        hint: 'backup-push --fast requests an immediate checkpoint instead (more I/O at once)',
      });
    const begun = await source.startBackup(`walrus ${new Date().toISOString()}`, { fast: o.fast });
    inBackup = true;
    const start: StartPoint = {
      name: ArchiveLayout.backupName(begun.startSegment, begun.startOffset),
      startSegment: begun.startSegment,
      startOffset: hex8(begun.startOffset),
      startLsn: begun.startLsn,
      timeline: begun.timeline,
      startedAt: begun.startedAt,
    };
    log.info('backup started', {
      detail: `${start.name}: start LSN ${start.startLsn} on timeline ${start.timeline}, data directory ${o.dataDirectory}`,
      structured: { action: 'push-backup', backup: start.name, lsn: start.startLsn, state: 'start' },
    });
    await writer.refuseExisting(start.name);
    await writer.putVersion(start.name, identity.versionText);
    const tablespaces = await source.tablespaces(o.dataDirectory);
    const files = await collect(source.listDataFiles(o.dataDirectory));
    const dataPartitions = await writer.putDataFiles(start.name, files);

    const ended = await source.stopBackup();
    inBackup = false;
    await writer.putLabelPartition(start.name, dataPartitions, ended.backupLabel, ended.tablespaceMap);
    await waitForArchived(rt, ended.stopSegment, o.archiveTimeoutMs, log);
    return await writer.putSentinel(
      start,
      {
        stopSegment: ended.stopSegment,
        stopOffset: hex8(ended.stopOffset),
        stopLsn: ended.stopLsn,
        stoppedAt: ended.stoppedAt,
        backupLabel: ended.backupLabel,
        tablespaceMap: ended.tablespaceMap,
      },
      { versionText: identity.versionText, versionNum: identity.versionNum, systemIdentifier: identity.systemIdentifier },
      tablespaces,
      'online',
    );
  } catch (e) {
    if (inBackup) {
      // Leave backup mode explicitly; closing the session below would abort it too.
      await Promise.race([source.stopBackup(), new Promise((r) => setTimeout(r, 30_000).unref())]).catch((stopError) =>
        log.warn('could not stop the backup after the failure; closing the session ends it', { detail: (stopError as Error).message }),
      );
    }
    log.error('base backup failed; no sentinel was written, so this backup does not exist', {
      detail: 'its uploaded objects are removed by walrus delete',
      structured: { action: 'push-backup', state: 'failed' },
    });
    throw e;
  } finally {
    await source.close();
  }
}

async function pushOffline(rt: ServerRuntime, o: BackupPushOptions, workers: PartitionWorkerPool): Promise<BackupPushSummary> {
  const log = rt.log;
  const { offlineIdentity, listDataFiles, readTablespaces } = await import('../../plugins/postgres/index.js');
  const pidFile = join(o.dataDirectory, 'postmaster.pid');
  const refuseRunning = async () => {
    if (await pathExists(pidFile)) {
      throw refusedError(`the cluster in ${o.dataDirectory} is running (postmaster.pid exists): --while-offline needs it stopped`, {
        hint: 'stop PostgreSQL cleanly (pg_ctl stop -m fast), or take an online backup without --while-offline',
      });
    }
  };
  await refuseRunning();
  const id = await offlineIdentity(o.dataDirectory, rt.server.pgBinDirectory || undefined);
  if (!id.cleanlyShutDown) {
    throw refusedError(`the cluster in ${o.dataDirectory} was not shut down cleanly (state: ${id.clusterState}): an offline copy would not be consistent`, {
      hint: 'start it and stop it cleanly (pg_ctl stop -m fast), or take an online backup',
    });
  }
  // WAL-E's offline naming: the REDO segment is start and stop, its last 8 hex digits the "offset"
  const start: StartPoint = {
    name: ArchiveLayout.backupName(id.redoSegment, parseInt(id.walEOffset, 16)),
    startSegment: id.redoSegment,
    startOffset: id.walEOffset,
    startLsn: id.redoLsn,
    timeline: id.timeline,
    startedAt: new Date(),
  };
  log.info('offline backup started', {
    detail: `${start.name}: cluster shut down cleanly at REDO ${id.redoLsn} on timeline ${id.timeline}`,
    structured: { action: 'push-backup', backup: start.name, lsn: start.startLsn, state: 'start' },
  });
  const writer = new BackupWriter(rt, o, log, workers);
  await writer.refuseExisting(start.name);
  await writer.putVersion(start.name, id.versionText);
  const tablespaces = await readTablespaces(o.dataDirectory);
  const files = await collect(listDataFiles(o.dataDirectory));
  await writer.putDataFiles(start.name, files);
  // The copy is only good if nobody started the cluster while we read it.
  await refuseRunning();
  const after = await offlineIdentity(o.dataDirectory, rt.server.pgBinDirectory || undefined);
  if (!after.cleanlyShutDown || after.redoLsn !== id.redoLsn) {
    throw refusedError(`the cluster in ${o.dataDirectory} was started during the offline backup: the copy is not consistent; no sentinel written`, {
      hint: 'take the backup again while the cluster stays stopped, or take an online backup',
    });
  }
  return writer.putSentinel(
    start,
    { stopSegment: id.redoSegment, stopOffset: id.walEOffset, stopLsn: id.redoLsn, stoppedAt: new Date() },
    { versionText: id.versionText, versionNum: versionNumOf(id.versionText), systemIdentifier: id.systemIdentifier },
    tablespaces,
    'offline',
  );
}

/** `PostgreSQL 15.18 (Debian ...)` → 150018; 0 when the text says no version. */
function versionNumOf(text: string): number {
  const m = /PostgreSQL (\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(text);
  if (!m) return 0;
  const major = Number(m[1]);
  return major >= 10 ? major * 10000 + Number(m[2] ?? 0) : major * 10000 + Number(m[2] ?? 0) * 100 + Number(m[3] ?? 0);
}
