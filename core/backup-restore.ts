/**
 * Fetching a base backup into a data directory: what `backup-fetch` does, and what `restore` builds on.
 *
 * - The target must be empty (or absent: it is created 0700). Tablespace locations likewise.
 * - A marker file `.walrus-restore-incomplete` is written first and removed only after every
 *   partition was extracted and verified and everything was fsynced. A directory that still has
 *   it is not a restore to start PostgreSQL on; a rerun into it is refused with the hint to remove
 *   it and start over (no resume: a partition half written cannot be told from a whole one
 *   without re-reading it, and re-reading everything is what a fresh run does anyway).
 * - Partitions are fetched several at once (largest first), each streamed storage → decrypt on
 *   this thread, then decompress → tar extraction (core/tar-extract.ts, which treats the archive
 *   as hostile) in a worker thread (core/partition-workers.ts), so that poolSize partitions use
 *   poolSize cores. The first failure stops the others.
 * - walrus backups record each partition's stored size and SHA-256 and its tar's: both are
 *   checked while streaming. WAL-E backups have only the lzop and OpenPGP checksums.
 * - Directories a backup leaves empty or out (pg_wal/archive_status, pg_replslot, ...) are made.
 */
import type { Readable } from 'node:stream';
import path from 'node:path';
import { chmod, lstat, mkdir, readFile, readdir, readlink, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import PQueue from 'p-queue';
import { WalrusError, integrityError, localIoError, refusedError, usageError } from './errors.js';
import { DigestTap, openObject } from './pipeline.js';
import { PartitionWorkerPool, partitionsAtOnce } from './partition-workers.js';
import { readSentinel, resolveBackupName } from './backup-catalog.js';
import type { BackupSentinel, PartitionRecord } from './backup-sentinel.js';
import type { ServerRuntime } from './runtime.js';
import { fsyncDirectory, pathExists } from './durable-files.js';
import { codecNameOfKey, codecOfKey } from './codec-by-suffix.js';
import type { Codec } from './types.js';

/** Present while a restore is unfinished (or failed). */
export const RESTORE_INCOMPLETE_MARKER = '.walrus-restore-incomplete';

/** WAL-E's restore spec (`--restore-spec FILE`) and the sentinel's `spec`: tablespace name → {loc, link}. */
export interface RestoreSpec {
  base_prefix?: string;
  tablespaces: string[];
  [name: string]: unknown;
}

export interface FetchProgress {
  backup: string;
  partitionsDone: number;
  partitionsTotal: number;
  /** Stored (compressed, encrypted) bytes read so far, and the total when known. */
  storedBytes: number;
  storedBytesTotal: number | null;
  /** Bytes of file data written so far (updated per finished partition). */
  bytesWritten: number;
}

export interface FetchBackupOptions {
  /** Tablespace locations instead of the sentinel's. */
  restoreSpec?: RestoreSpec;
  /** Partitions fetched at once (default: the server's poolSize), at most one per core (partitionsAtOnce). */
  poolSize?: number;
  onProgress?: (p: FetchProgress) => void;
  /** fsync (default true); only tests turn it off. */
  fsync?: boolean;
}

export interface FetchResult {
  backup: string;
  dataDirectory: string;
  partitions: number;
  files: number;
  /** File data written. */
  bytes: number;
  storedBytes: number;
  /** `sha256`: every partition matched the sizes and SHA-256 its sentinel recorded; `stream-checksums`: lzop/OpenPGP checks only (WAL-E backups). */
  verification: 'sha256' | 'stream-checksums';
  /** pg_tblspc/<oid> → location. */
  tablespaces: Record<string, string>;
  /** Directories made because the backup left them out. */
  createdDirectories: string[];
  seconds: number;
}

export interface PartitionToFetch {
  number: number;
  key: string;
  storedSize: number | null;
  record: PartitionRecord | null;
}

/** What PostgreSQL (10+) needs to start that a backup may leave out or leave empty. */
const DIRECTORIES_POSTGRES_NEEDS = [
  'pg_wal',
  'pg_wal/archive_status',
  'pg_replslot',
  'pg_stat',
  'pg_stat_tmp',
  'pg_tblspc',
  'pg_twophase',
  'pg_notify',
  'pg_serial',
  'pg_snapshots',
  'pg_subtrans',
  'pg_commit_ts',
  'pg_dynshmem',
  'pg_logical',
  'pg_logical/snapshots',
  'pg_logical/mappings',
];
/** Before PostgreSQL 10 the WAL directory was pg_xlog. */
const DIRECTORIES_BEFORE_10 = DIRECTORIES_POSTGRES_NEEDS.map((d) => d.replace(/^pg_wal/, 'pg_xlog'));

const PARTITION_NAME = /(?:^|\/)part_(\d+)\.tar(?:\.[A-Za-z0-9]+)?$/;

// ---------------------------------------------------------------- target checks

function ioError(what: string, target: string, e: unknown): WalrusError {
  if (e instanceof WalrusError) return e;
  const code = (e as NodeJS.ErrnoException).code ?? 'error';
  return localIoError(`${what} ${target} failed: ${code}`, { detail: (e as Error).message, cause: e });
}

async function entriesOf(directory: string): Promise<string[] | null> {
  try {
    return await readdir(directory);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ENOTDIR') throw refusedError(`${directory} exists and is not a directory`, { hint: 'restore into an empty or new directory' });
    throw ioError('reading', directory, e);
  }
}

function describeEntries(entries: string[]): string {
  const shown = entries.slice().sort().slice(0, 8);
  return `${shown.join(', ')}${entries.length > shown.length ? ` and ${entries.length - shown.length} more` : ''}`;
}

/**
 * The restore target must be absent or empty. A directory with our incomplete-restore marker is
 * an earlier restore that did not finish: refused too, with what to do.
 */
export async function checkRestoreTarget(dataDirectory: string): Promise<void> {
  const entries = await entriesOf(dataDirectory);
  if (entries === null || entries.length === 0) return;
  if (entries.includes(RESTORE_INCOMPLETE_MARKER)) {
    let about = '';
    try {
      const m = JSON.parse(await readFile(path.join(dataDirectory, RESTORE_INCOMPLETE_MARKER), 'utf8'));
      about = ` (backup ${m.backup}, started ${m.startedAt})`;
    } catch {
      /* the marker's content is informational */
    }
    throw refusedError(`${dataDirectory} holds an unfinished restore${about}: it is not a usable data directory`, {
      detail: `${entries.length} entries: ${describeEntries(entries)}`,
      hint: `remove it (rm -rf ${dataDirectory}, and the tablespace locations the restore used) and run backup-fetch again; do not start PostgreSQL on it`,
    });
  }
  throw refusedError(`${dataDirectory} is not empty (${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}: ${describeEntries(entries)})`, {
    hint: 'restore into an empty or new directory; move the existing one aside first if it is an old data directory',
  });
}

async function prepareEmptyDirectory(directory: string, what: string): Promise<void> {
  const entries = await entriesOf(directory);
  if (entries !== null && entries.length) {
    throw refusedError(`${what} ${directory} is not empty (${describeEntries(entries)})`, {
      hint: 'give the tablespace an empty location with --restore-spec, or empty this one',
    });
  }
  try {
    if (entries === null) await mkdir(directory, { recursive: true, mode: 0o700 });
    await chmod(directory, 0o700);
  } catch (e) {
    throw ioError('creating', directory, e);
  }
}

// ---------------------------------------------------------------- restore spec

/** Reads and checks a WAL-E restore spec: `{"tablespaces": ["16385"], "16385": {"loc": "/new/place/", "link": "pg_tblspc/16385"}}`. */
export async function readRestoreSpec(file: string): Promise<RestoreSpec> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw usageError(`--restore-spec ${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw usageError(`--restore-spec ${file} is not JSON: ${(e as Error).message}`);
  }
  tablespaceMapOf(data as RestoreSpec, `--restore-spec ${file}`);
  return data as RestoreSpec;
}

/** pg_tblspc/<oid> → absolute location, from a spec; `where` names the spec in errors. */
export function tablespaceMapOf(spec: RestoreSpec, where: string): Record<string, string> {
  const bad = (m: string) => usageError(`${where}: ${m}`, { hint: 'format: {"tablespaces": ["16385"], "16385": {"loc": "/new/location", "link": "pg_tblspc/16385"}}' });
  if (typeof spec !== 'object' || spec === null || !Array.isArray(spec.tablespaces)) throw bad('needs a "tablespaces" list');
  const map: Record<string, string> = {};
  for (const name of spec.tablespaces) {
    const entry = spec[name] as { loc?: unknown; link?: unknown } | undefined;
    if (typeof name !== 'string' || !entry || typeof entry !== 'object') throw bad(`tablespace ${JSON.stringify(name)} has no {"loc", "link"} entry`);
    if (typeof entry.loc !== 'string' || !path.isAbsolute(entry.loc)) throw bad(`tablespace ${name}: "loc" must be an absolute path`);
    const link = typeof entry.link === 'string' ? entry.link.replace(/^\/+|\/+$/g, '') : '';
    if (!/^pg_tblspc\/[0-9]+$/.test(link)) throw bad(`tablespace ${name}: "link" must be pg_tblspc/<oid>`);
    map[link] = path.resolve(entry.loc);
  }
  return map;
}

// ---------------------------------------------------------------- partitions

async function partitionsOf(rt: ServerRuntime, name: string, sentinel: BackupSentinel): Promise<PartitionToFetch[]> {
  const folder = rt.layout.backupFolder(name);
  const listed = new Map<number, { key: string; size: number }>();
  for await (const o of rt.storage.list(`${folder}tar_partitions/`)) {
    const m = PARTITION_NAME.exec(o.key);
    if (m) listed.set(Number(m[1]), { key: o.key, size: o.size });
  }
  const records = sentinel.walrus?.partitions;
  if (records) {
    return records
      .slice()
      .sort((a, b) => a.number - b.number)
      .map((r) => {
        // The sentinel names the key; never follow it outside this backup's folder.
        const candidates = [r.key, `${rt.layout.prefix}${r.key}`].filter((k) => k.startsWith(folder));
        const key = candidates[0] ?? listed.get(r.number)?.key ?? rt.layout.partitionKey(name, r.number);
        return { number: r.number, key, storedSize: r.storedBytes, record: r };
      });
  }
  const numbers = [...listed.keys()].sort((a, b) => a - b);
  if (!numbers.length) {
    throw integrityError(`backup ${name} has no tar partitions in ${rt.storage.describe(folder)}`, { hint: 'the backup is damaged: restore another one' });
  }
  for (let i = 0; i < numbers.length; i++) {
    if (numbers[i] !== i) {
      throw integrityError(`backup ${name} is missing tar partition part_${String(i).padStart(8, '0')} (found ${numbers.length}, up to part_${String(numbers[numbers.length - 1]).padStart(8, '0')})`, {
        hint: 'the backup is damaged: restore another one',
      });
    }
  }
  return numbers.map((n) => ({ number: n, key: listed.get(n)!.key, storedSize: listed.get(n)!.size, record: null }));
}

/**
 * How long a partition takes to restore, in bytes-equivalent: what it decompresses to and writes,
 * plus 256 KiB per member. Measured in one worker on the project machine: a partition of 256
 * small files (7 MB) took 0.2-0.5 s, one 269 MB file 0.5-0.6 s, so a member costs what writing
 * about a quarter of a megabyte does. The stored size alone misleads: a 1 GiB table of pgbench
 * rows compresses to 74 MB, as much as 225 MB of its index. A WAL-E backup records neither, so
 * its stored size is all there is.
 */
const BYTES_PER_MEMBER = 256 * 1024;
export function restoreWork(p: PartitionToFetch): number {
  if (p.record) return p.record.tarBytes + p.record.members * BYTES_PER_MEMBER;
  return p.storedSize ?? 0;
}

/** A DigestTap that reports each chunk's size as it passes (for progress). */
class CountingTap extends DigestTap {
  constructor(private readonly onBytes: (n: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, encoding: BufferEncoding, done: (e?: Error | null, c?: Buffer) => void) {
    this.onBytes(chunk.length);
    super._transform(chunk, encoding, done);
  }
}


function inPartition(e: unknown, where: string): unknown {
  if (!(e instanceof WalrusError) || e.message.includes(where)) return e;
  return new WalrusError(e.kind, `${where}: ${e.message}`, { detail: e.detail, hint: e.hint, cause: e });
}

// ---------------------------------------------------------------- the fetch



export async function fetchBackup(rt: ServerRuntime, dataDirectory: string, nameOrLatest: string, options: FetchBackupOptions = {}): Promise<FetchResult> {
  const started = Date.now();
  const fsync = options.fsync ?? true;
  // Started first: their module loading (~0.1 s each) overlaps the checks and the sentinel's read.
  const poolSize = partitionsAtOnce(options.poolSize ?? rt.server.poolSize);
  const workers = new PartitionWorkerPool(rt.log);
  workers.prewarm(poolSize);
  try {
    return await fetchWithWorkers(rt, workers, poolSize, dataDirectory, nameOrLatest, options, started, fsync);
  } finally {
    await workers.close();
  }
}

async function fetchWithWorkers(
  rt: ServerRuntime,
  workers: PartitionWorkerPool,
  poolSize: number,
  dataDirectory: string,
  nameOrLatest: string,
  options: FetchBackupOptions,
  started: number,
  fsync: boolean,
): Promise<FetchResult> {
  const target = path.resolve(dataDirectory);
  await checkRestoreTarget(target);
  const name = await resolveBackupName(rt, nameOrLatest);
  const sentinel = await readSentinel(rt, name);

  const tablespaces = options.restoreSpec
    ? tablespaceMapOf(options.restoreSpec, '--restore-spec')
    : tablespaceMapOf(sentinel.spec as RestoreSpec, `the sentinel of ${name}`);
  for (const [link, loc] of Object.entries(tablespaces)) {
    const entries = await entriesOf(loc);
    if (!entries?.length) continue;
    throw refusedError(`tablespace ${link} of backup ${name} would go to ${loc}, which is not empty (${describeEntries(entries)})`, {
      hint: options.restoreSpec
        ? 'give it an empty location in the restore spec'
        : 'restoring on the same host as the original? give the tablespaces new locations with --restore-spec FILE (WAL-E\'s format)',
    });
  }
  const partitions = await partitionsOf(rt, name, sentinel);

  // From here on the target is ours: the marker says so until the very end.
  await prepareEmptyDirectory(target, 'data directory');
  const dataRoot = await realpath(target);
  const marker = path.join(dataRoot, RESTORE_INCOMPLETE_MARKER);
  try {
    await writeFile(marker, JSON.stringify({ backup: name, startedAt: new Date().toISOString(), pid: process.pid, storage: rt.storage.describe(rt.layout.backupFolder(name)) }) + '\n', { mode: 0o600, flag: 'wx' });
    if (fsync) await fsyncDirectory(dataRoot);
  } catch (e) {
    throw ioError('writing', marker, e);
  }
  for (const loc of Object.values(tablespaces)) await prepareEmptyDirectory(loc, 'tablespace location');

  const storedBytesTotal = partitions.every((p) => p.storedSize !== null) ? partitions.reduce((s, p) => s + (p.storedSize ?? 0), 0) : null;
  const progress: FetchProgress = { backup: name, partitionsDone: 0, partitionsTotal: partitions.length, storedBytes: 0, storedBytesTotal, bytesWritten: 0 };
  const active = new Set<Readable>();
  let firstFailure: unknown = null;
  let files = 0;
  const onStoredBytes = (n: number) => {
    progress.storedBytes += n;
    options.onProgress?.(progress);
  };
  const badHead = (where: string, codec: Codec, head: Buffer) =>
    integrityError(`${where} is not a valid ${codec.name} stream (${head.length ? 'wrong magic bytes' : 'empty object'})`, {
      hint: 'the object is corrupt or was not written by walrus/WAL-E; restore it from another copy',
    });
  // Decoding runs in worker threads; the stored bytes are hashed there too unless a cipher (a plugin of this thread) decrypts them first.
  const hashInWorker = rt.cipher === null;

  const fetchOne = async (p: PartitionToFetch) => {
    if (firstFailure !== null) return;
    const where = `partition ${rt.storage.describe(p.key)}`;
    const storedTap = hashInWorker ? null : new CountingTap(onStoredBytes);
    try {
      // by the partition's suffix: a backup taken before the compression was changed stays readable
      const codec = await codecOfKey(rt, p.key);
      const body = await openObject(rt.storage, p.key, {
        codec: null,
        expectCodec: null, // decompressed in the worker
        cipher: rt.cipher,
        storedTap: storedTap ?? undefined,
        onRaw: (raw) => {
          active.add(raw);
          raw.once('close', () => active.delete(raw));
        },
      });
      if (!body) throw integrityError(`${where} is missing`, { hint: 'the backup is damaged: restore another one' });
      if (firstFailure !== null) {
        body.destroy();
        return;
      }
      active.add(body);
      const result = await workers.decode(
        { codecSpec: codecNameOfKey(rt, p.key), configDirectory: rt.fleet.directory, hashInput: hashInWorker, storedBytesVerified: p.record !== null, dataRoot, tablespaces, fsync },
        body,
        {
          onChunk: hashInWorker ? onStoredBytes : undefined,
          checkHead: codec
            ? (head) => {
                if (!codec.recognizes(head)) throw badHead(rt.storage.describe(p.key), codec, head);
              }
            : undefined,
        },
      );
      active.delete(body);
      if (p.record) {
        const r = p.record;
        const stored = result.stored ?? { bytes: storedTap!.bytes, sha256: storedTap!.digest() };
        if (stored.bytes !== r.storedBytes || stored.sha256 !== r.storedSha256) {
          throw integrityError(`${where} does not match its sentinel: ${stored.bytes} bytes stored, ${r.storedBytes} recorded${stored.bytes === r.storedBytes ? ' (SHA-256 differs)' : ''}`, {
            hint: 'the object was changed or damaged after the backup: restore another backup',
          });
        }
        const tar = result.tar;
        // the stored SHA-256 matched: the tar is what backup-push wrote (core/partition-decode.ts)
        if (tar.bytes !== r.tarBytes) {
          throw integrityError(`${where} does not match its sentinel: its tar has ${tar.bytes} bytes, ${r.tarBytes} recorded`, {
            hint: 'the object was changed or damaged after the backup: restore another backup',
          });
        }
      }
      files += result.files;
      progress.bytesWritten += result.bytes;
      progress.partitionsDone += 1;
      options.onProgress?.(progress);
      rt.log.debug(`restored ${where}`, { structured: { action: 'backup-fetch', key: rt.storage.describe(p.key), files: result.files, bytes: result.bytes, state: 'complete' } });
    } catch (e) {
      if (firstFailure === null) {
        firstFailure = inPartition(e, where);
        // stop the others: their streams fail, their workers remove what they were writing
        for (const s of active) s.destroy(new Error('cancelled: another partition failed'));
      }
      throw e;
    }
  };

  // Longest first: a long partition started last would run alone at the end while the other workers idle.
  const longestFirst = partitions.slice().sort((a, b) => restoreWork(b) - restoreWork(a) || a.number - b.number);
  const queue = new PQueue({ concurrency: poolSize });
  const results = await Promise.allSettled(longestFirst.map((p) => queue.add(() => fetchOne(p))));
  if (firstFailure === null) {
    const other = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (other) firstFailure = other.reason;
  }
  if (firstFailure !== null) throw firstFailure;

  const createdDirectories = await finishDataDirectory(rt, dataRoot, name, sentinel, tablespaces, fsync);
  try {
    await rm(marker);
    if (fsync) await fsyncDirectory(dataRoot);
  } catch (e) {
    throw ioError('removing', marker, e);
  }
  return {
    backup: name,
    dataDirectory: dataRoot,
    partitions: partitions.length,
    files,
    bytes: progress.bytesWritten,
    storedBytes: progress.storedBytes,
    verification: partitions.every((p) => p.record) ? 'sha256' : 'stream-checksums',
    tablespaces,
    createdDirectories,
    seconds: (Date.now() - started) / 1000,
  };
}

/** Tablespace links, directories PostgreSQL needs, a missing backup_label; then fsync. */
async function finishDataDirectory(rt: ServerRuntime, root: string, name: string, sentinel: BackupSentinel, tablespaces: Record<string, string>, fsync: boolean): Promise<string[]> {
  let version: number;
  try {
    version = parseInt((await readFile(path.join(root, 'PG_VERSION'), 'utf8')).trim(), 10);
  } catch {
    throw integrityError(`backup ${name} restored no PG_VERSION file: it is not a PostgreSQL data directory`, { hint: 'the backup is damaged or not a base backup: restore another one' });
  }
  const created: string[] = [];
  try {
    for (const relative of version >= 10 || Number.isNaN(version) ? DIRECTORIES_POSTGRES_NEEDS : DIRECTORIES_BEFORE_10) {
      const p = path.join(root, relative);
      if (await pathExists(p)) continue;
      await mkdir(p, { mode: 0o700 });
      created.push(relative);
    }
    // A tablespace without any file in the backup still needs its link.
    for (const [link, loc] of Object.entries(tablespaces)) {
      const p = path.join(root, link);
      const st = await lstat(p).catch(() => null);
      if (st === null) {
        await symlink(loc, p);
        created.push(link);
      } else if (st.isSymbolicLink() && path.resolve(path.dirname(p), await readlink(p)) !== loc) {
        throw refusedError(`${p} links elsewhere than the tablespace location ${loc}`);
      }
    }
    // walrus backups carry backup_label in the tar; should one be missing, the sentinel has it.
    const label = sentinel.walrus?.backupLabel;
    if (sentinel.walrus?.mode === 'online' && label && !(await pathExists(path.join(root, 'backup_label')))) {
      rt.log.warn(`backup ${name} had no backup_label file; writing the one its sentinel recorded`);
      await writeFile(path.join(root, 'backup_label'), label, { mode: 0o600 });
      const map = sentinel.walrus.tablespaceMap;
      if (map && !(await pathExists(path.join(root, 'tablespace_map')))) await writeFile(path.join(root, 'tablespace_map'), map, { mode: 0o600 });
    }
    if (fsync) {
      const directories = new Set([root, path.join(root, 'pg_tblspc'), ...created.map((c) => path.dirname(path.join(root, c)))]);
      for (const d of directories) if (await pathExists(d)) await fsyncDirectory(d);
    }
  } catch (e) {
    throw ioError('finishing', root, e);
  }
  return created;
}
