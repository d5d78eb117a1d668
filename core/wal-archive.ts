/**
 * WAL archiving: push one file PostgreSQL finished (archive_command), fetch one back
 * (restore_command), prefetch the next ones. PostgreSQL's own bookkeeping (archive_status/*.ready,
 * *.done) is never touched: segments pushed ahead in parallel are recorded in pg_wal/.walrus/pushed/.
 */
import { createReadStream, createWriteStream, existsSync, readFileSync, unlinkSync, type BigIntStats } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { WalrusError, integrityError, notFound, refusedError, usageError } from './errors.js';
import { isSegmentName, isWalFileName, nextSegmentName } from './layout.js';
import { ByteCounter, DigestTap, encodedSize, openObject, writeObjectCounted } from './pipeline.js';
import type { ServerRuntime } from './runtime.js';
import { fsyncDirectory } from './durable-files.js';
import { DirectoryWaker } from './directory-waker.js';
import { codecOfKey, walKeyCandidates } from './codec-by-suffix.js';

/** walrus's own folder inside pg_wal (WAL-E used .wal-e/): push markers and prefetched segments. */
export const WALRUS_FOLDER = '.walrus';
const PUSHED = 'pushed';
const PREFETCH = 'prefetch';
/** A prefetched segment or push marker older than this is no longer useful. */
const STALE_MS = 6 * 60 * 60 * 1000;

async function streamSha256(stream: NodeJS.ReadableStream): Promise<{ sha256: string; size: number }> {
  const tap = new DigestTap();
  await pipeline(stream, tap, new Writable({ write: (_c, _e, cb) => cb() }));
  return { sha256: tap.digest(), size: tap.bytes };
}

function rate(bytes: number, ms: number): string {
  return ((bytes / 1024) / Math.max(ms / 1000, 0.001)).toFixed(1);
}

// ---------------------------------------------------------------------------------- push

/**
 * A segment pushed ahead, recorded in pg_wal/.walrus/pushed/<name> as one line that
 * bin/walrus-push-hit (archive_command's sh front) reads too:
 *   <ino> <size> <mtime: seconds.nanoseconds> <config stamp> <sha256 or -> <key>
 * (walrus now always writes `-` for the SHA-256: hashing each segment cost as much as compressing
 * it, and nothing compares it; the field stays where the sh front and older records have it)
 * The first three are the file's identity as `stat -c '%i %s %.9Y'` prints it, compared the same
 * way by both. The config stamp (`<mtime seconds.nanoseconds>:<size>` of the fleet config file
 * when it was pushed, `-` when unknown) lets the sh front trust it only while the config is
 * unchanged; the full path compares the key instead.
 */
interface PushMarker {
  identity: string;
  key: string;
}

/** A file's mtime as `stat -c %.9Y` prints it. */
function exactMtime(s: BigIntStats): string {
  return `${s.mtimeNs / 1_000_000_000n}.${(s.mtimeNs % 1_000_000_000n).toString().padStart(9, '0')}`;
}

/** A file's inode, size and mtime as `stat -c '%i %s %.9Y'` prints them. */
function fileIdentity(s: BigIntStats): string {
  return `${s.ino} ${s.size} ${exactMtime(s)}`;
}

/** A file's identity (fileIdentity), or null when it does not exist. */
export async function fileIdentityOf(path: string): Promise<string | null> {
  try {
    return fileIdentity(await stat(path, { bigint: true }));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

function formatPushMarker(identity: string, configStamp: string, key: string): string {
  return `${identity} ${configStamp} - ${key}\n`;
}

/** Null for anything else (a marker an older walrus wrote as JSON is not trusted: the segment is checked in storage instead). */
function parsePushMarker(text: string): PushMarker | null {
  const m = /^(\d+ \d+ \d+\.\d{9}) \S+ \S+ (.+)\n$/.exec(text);
  if (!m) return null;
  return { identity: m[1]!, key: m[2]! };
}

/** The stamp of the fleet config file that push markers carry (see PushMarker). */
export async function configStampOf(configPath: string | undefined): Promise<string> {
  if (!configPath) return '-';
  try {
    const s = await stat(configPath, { bigint: true });
    return `${exactMtime(s)}:${s.size}`;
  } catch {
    return '-';
  }
}

/** pg_wal/.walrus/pushed/: push records, the sh front's settings, the push follower's lock and asks. */
export function pushedDirectory(walDirectory: string) {
  return join(walDirectory, WALRUS_FOLDER, PUSHED);
}

function markerPath(walDirectory: string, name: string) {
  return join(pushedDirectory(walDirectory), name);
}

/** Read by bin/walrus-push-hit: the config file (absolute) and --server as given, a line each. */
export const PUSH_FAST_PATH_SH = '.fast-path.sh';

/** Lets archive_command's sh front take later calls for segments pushed ahead under this config and server. */
export async function recordPushFastPath(walDirectory: string, configPath: string, server: string | null): Promise<void> {
  const dir = pushedDirectory(walDirectory);
  const wanted = `${resolve(configPath)}\n${server ?? ''}\n`;
  if ((await readFile(join(dir, PUSH_FAST_PATH_SH), 'utf8').catch(() => null)) === wanted) return;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = join(dir, `${PUSH_FAST_PATH_SH}.${randomBytes(4).toString('hex')}`);
  await writeFile(temp, wanted, { mode: 0o600 });
  await rename(temp, join(dir, PUSH_FAST_PATH_SH));
}

export type PushOutcome = 'archived' | 'already-archived' | 'pushed-ahead';

/** Bytes per read of a WAL file being pushed: lzop's block size (plugins/lzo). */
const SEGMENT_READ_BYTES = 256 * 1024;

/**
 * If the archived copy exists: same content → fine; different → refuse (PostgreSQL's rule).
 * Without the secret key an encrypted copy cannot be read back: then the stored size is compared
 * with a fresh encoding of the local file (an RSA session key's length may differ by a byte).
 */
async function compareWithArchived(rt: ServerRuntime, path: string, name: string, key: string, storedSize: number): Promise<'same' | 'same-size'> {
  const local = await streamSha256(createReadStream(path));
  try {
    const body = await openObject(rt.storage, key, rt);
    if (!body) throw refusedError(`${rt.storage.describe(key)} vanished while being compared`);
    const archived = await streamSha256(body);
    if (archived.sha256 === local.sha256) return 'same';
  } catch (e) {
    if (!(e instanceof WalrusError) || e.kind !== 'KEY' || !rt.cipher) throw e;
    if (Math.abs((await encodedSize(createReadStream(path), rt)) - storedSize) <= 8) return 'same-size';
  }
  throw refusedError(`${name} is already archived at ${rt.storage.describe(key)} with different content; refusing to overwrite it`, {
    hint: 'two servers may share one prefix, or this server was restored without a new timeline: check prefixes in the fleet config',
  });
}

export interface PushOptions {
  /** Pushed before PostgreSQL asks for it: skipped when a current record exists, recorded when pushed. */
  recordAsPushedAhead?: boolean;
  /** PostgreSQL's own call, recorded too once pushed (for a push follower started after it, which then skips it). */
  recordWhenPushed?: boolean;
  /** configStampOf the config it runs with, written into records. */
  configStamp?: string;
}

/** Push one WAL file. `path` as PostgreSQL passes %p (relative to the data directory, the cwd). */
export async function pushWalFile(rt: ServerRuntime, path: string, options: PushOptions = {}): Promise<PushOutcome> {
  const name = basename(path);
  if (!isWalFileName(name)) throw usageError(`'${path}' is not a WAL file name (segment, .history, .backup or .partial)`, { hint: "archive_command must pass %p: wal-push %p" });
  let info;
  try {
    info = await stat(path, { bigint: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw notFound(`WAL file ${path} does not exist`, { hint: 'archive_command runs in the data directory and passes %p' });
    throw e;
  }
  if (!info.isFile()) throw usageError(`WAL file ${path} is not a regular file`);
  const identity = fileIdentity(info);
  const size = Number(info.size);
  const walDirectory = dirname(path);
  const key = rt.layout.walKey(name);

  // Pushed ahead by an earlier call's parallel push? Then the check is cheap: same file, unchanged.
  // A later call's parallel push of the same segment skips it too (and leaves the marker for
  // PostgreSQL's own call) instead of reading the archived copy back to compare it again.
  const markerText = await readFile(markerPath(walDirectory, name), 'utf8').catch(() => null); // none: push it
  const marker = markerText === null ? null : parsePushMarker(markerText);
  if (markerText !== null && marker === null && !options.recordAsPushedAhead) await unlink(markerPath(walDirectory, name)).catch(() => {});
  if (marker) {
    const current = marker.identity === identity && marker.key === key;
    if (current && options.recordAsPushedAhead) return 'pushed-ahead';
    if (!options.recordAsPushedAhead) await unlink(markerPath(walDirectory, name)).catch(() => {});
    if (current) {
      rt.log.info('WAL file was already archived by a parallel push', { detail: `${path} is at ${rt.storage.describe(key)}.`, structured: { action: 'push-wal', key: rt.storage.describe(key), seg: name, state: 'complete', ahead: true } });
      return 'already-archived';
    }
  }

  const existing = await rt.storage.head(key);
  if (existing) {
    let how: 'same' | 'same-size';
    try {
      how = await compareWithArchived(rt, path, name, key, existing.size);
    } catch (e) {
      // Another wal-push of the same segment may be replacing the object right now (storages that
      // are not atomic about it, like a test S3 server assembling a multipart upload): read it
      // once more after a moment before calling the archived copy damaged.
      if (!(e instanceof WalrusError) || e.kind !== 'INTEGRITY') throw e;
      rt.log.warn(`the archived copy of ${name} could not be read back; reading it again in a second`, { detail: e.message });
      await new Promise((r) => setTimeout(r, 1000));
      const again = await rt.storage.head(key);
      if (!again) throw e;
      how = await compareWithArchived(rt, path, name, key, again.size);
    }
    rt.log.info('WAL file is already archived with the same content', {
      detail: `${rt.storage.describe(key)} exists; ${how === 'same' ? 'its content equals' : 'no secret key here to read it back; its size matches an encoding of'} ${path}.`,
      structured: { action: 'push-wal', key: rt.storage.describe(key), seg: name, state: 'complete', duplicate: true },
    });
    if (options.recordAsPushedAhead || options.recordWhenPushed) await recordPushedAhead(walDirectory, name, identity, key, options.configStamp ?? '-');
    return 'already-archived';
  }

  const started = Date.now();
  rt.log.info('begin archiving a file', {
    detail: `Uploading "${path}" to "${rt.storage.describe(key)}".`,
    structured: { action: 'push-wal', key: rt.storage.describe(key), prefix: rt.server.prefix, seg: name, state: 'begin' },
  });
  // Read in lzop-block-sized chunks: each is then one block as it is, never copied together from 64 KiB reads.
  const written = await writeObjectCounted(rt.storage, key, createReadStream(path, { highWaterMark: SEGMENT_READ_BYTES }), rt);
  if (written.contentBytes !== size) {
    // PostgreSQL never changes a finished segment; a different size means the file was not finished.
    await rt.storage.delete([key]).catch(() => {});
    throw integrityError(`${path} changed size while being archived (${size} → ${written.contentBytes} bytes)`);
  }
  const ms = Date.now() - started;
  rt.log.info('completed archiving to a file', {
    detail: `Archiving to "${rt.storage.describe(key)}" complete at ${rate(written.contentBytes, ms)}KiB/s.`,
    structured: { action: 'push-wal', key: rt.storage.describe(key), prefix: rt.server.prefix, rate: rate(written.contentBytes, ms), seg: name, state: 'complete' },
  });
  if (options.recordAsPushedAhead || options.recordWhenPushed) await recordPushedAhead(walDirectory, name, identity, key, options.configStamp ?? '-');
  return options.recordAsPushedAhead ? 'pushed-ahead' : 'archived';
}

async function recordPushedAhead(walDirectory: string, name: string, identity: string, key: string, configStamp: string) {
  const dir = pushedDirectory(walDirectory);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = join(dir, `.${name}.${randomBytes(4).toString('hex')}`);
  await writeFile(temp, formatPushMarker(identity, configStamp, key), { mode: 0o600 });
  await rename(temp, join(dir, name));
}

/**
 * The segments PostgreSQL has marked ready after `name`, oldest first, up to `count`: pushed in
 * parallel with it. Only read archive_status/, never written.
 */
export async function readySegmentsAfter(walDirectory: string, name: string, count: number): Promise<string[]> {
  if (count <= 0) return [];
  let entries: string[];
  try {
    entries = await readdir(join(walDirectory, 'archive_status'));
  } catch {
    return [];
  }
  return entries
    .filter((e) => e.endsWith('.ready'))
    .map((e) => e.slice(0, -'.ready'.length))
    .filter((n) => isSegmentName(n) && n > name)
    .sort()
    .slice(0, count);
}

/**
 * Remove push markers for segments that are gone or old (PostgreSQL removed or recycled them), and
 * hidden files (a record being written, the sh front's asks, the follower's answers) older than 10
 * minutes: left by a process that was killed. The follower's lock and the sh front's settings stay.
 */
export async function cleanPushMarkers(walDirectory: string): Promise<void> {
  const dir = pushedDirectory(walDirectory);
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return;
  }
  const now = Date.now();
  for (const e of entries) {
    const p = join(dir, e);
    try {
      if (e === PUSH_FAST_PATH_SH || e === FOLLOWER_PID) continue;
      const s = await stat(p);
      const leftOver = e.startsWith('.') ? now - s.mtimeMs > 10 * 60 * 1000 : !isSegmentName(e) || (await stat(join(walDirectory, e)).then(() => false, () => true));
      if (leftOver || now - s.mtimeMs > STALE_MS) await rm(p, { force: true });
    } catch {
      /* raced with another cleaner */
    }
  }
}

// ---------------------------------------------------------------------------------- fetch

/** Write `name` from storage to `dest` atomically: temp file beside it, fsync, rename. */
export async function fetchWalFile(rt: ServerRuntime, name: string, dest: string, options: { onFound?: () => Promise<void> } = {}): Promise<{ bytes: number }> {
  if (!isWalFileName(name)) throw usageError(`'${name}' is not a WAL file name (segment, .history, .backup or .partial)`, { hint: 'restore_command must pass %f %p: wal-fetch %f %p' });
  const destDirectory = dirname(dest);
  await stat(destDirectory).catch((e: NodeJS.ErrnoException) => {
    throw usageError(`destination directory ${destDirectory} does not exist (${e.code})`);
  });
  const started = Date.now();
  const found = await openWalObject(rt, name);
  if (!found) throw notFound(`WAL file ${name} is not in the archive (${rt.storage.describe(rt.layout.walKey(name))})`);
  const { key, body } = found;
  await options.onFound?.();
  const bytes = await writeFileAtomically(body, dest, `${rt.storage.describe(key)}`);
  const ms = Date.now() - started;
  rt.log.info('completed download of a WAL file', {
    detail: `Downloaded "${rt.storage.describe(key)}" to "${dest}" at ${rate(bytes, ms)}KiB/s.`,
    structured: { action: 'wal-fetch', key: rt.storage.describe(key), seg: name, state: 'complete', rate: rate(bytes, ms) },
  });
  return { bytes };
}

/**
 * A WAL file's object, opened with the codec its name says: under the configured codec's suffix
 * or, in an archive whose compression was changed, another one. Null when it is under none.
 */
export async function openWalObject(rt: ServerRuntime, name: string): Promise<{ key: string; body: Readable } | null> {
  for (const key of walKeyCandidates(rt, name)) {
    const body = await openObject(rt.storage, key, { ...rt, expectCodec: await codecOfKey(rt, key) });
    if (body) return { key, body };
  }
  return null;
}

/** Stream into a hidden temp file beside `dest`, fsync it, then rename: `dest` is whole or absent. */
export async function writeFileAtomically(body: NodeJS.ReadableStream, dest: string, what: string): Promise<number> {
  const temp = join(dirname(dest), `.${basename(dest)}.walrus-partial-${randomBytes(4).toString('hex')}`);
  let bytes = 0;
  try {
    const counter = new ByteCounter();
    // flush: fsync before close, so the rename below never publishes unwritten data
    await pipeline(body, counter, createWriteStream(temp, { flags: 'wx', mode: 0o600, flush: true, highWaterMark: 1024 * 1024 }));
    bytes = counter.bytes;
    await rename(temp, dest);
  } catch (e) {
    await unlink(temp).catch(() => {});
    if (e instanceof WalrusError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code && /^E[A-Z]+$/.test(code) && !['EPIPE', 'ECONNRESET'].includes(code)) throw e;
    throw integrityError(`${what}: ${(e as Error).message}`, { cause: e });
  }
  await fsyncDirectory(dirname(dest));
  return bytes;
}


// ---------------------------------------------------------------------------------- prefetch

export function prefetchDirectory(walDirectory: string) {
  return join(walDirectory, WALRUS_FOLDER, PREFETCH);
}

/** A finished prefetched copy of `name`, moved into `dest`. True when it was there. */
export async function takePrefetched(walDirectory: string, name: string, dest: string): Promise<boolean> {
  const ready = join(prefetchDirectory(walDirectory), name);
  try {
    await rename(ready, dest);
  } catch {
    return false;
  }
  await fsyncDirectory(dirname(dest));
  return true;
}

/** The `count` segments after `name` on its timeline. */
export function segmentsAfter(name: string, count: number): string[] {
  const out: string[] = [];
  let n = name;
  for (let i = 0; i < count; i++) out.push((n = nextSegmentName(n)));
  return out;
}

/**
 * Download segments into pg_wal/.walrus/prefetch/ (in progress under running/, claimed with an
 * exclusive create so two prefetchers never fetch the same one). Missing segments end the run.
 */
export async function prefetchSegments(rt: ServerRuntime, walDirectory: string, names: string[]): Promise<number> {
  return (await prefetchWindow(rt, walDirectory, names)).fetched;
}

/** prefetchSegments, also telling whether a segment of `names` is not archived (yet). */
async function prefetchWindow(rt: ServerRuntime, walDirectory: string, names: string[]): Promise<{ fetched: number; archiveEnded: boolean }> {
  const dir = prefetchDirectory(walDirectory);
  const running = join(dir, 'running');
  await mkdir(running, { recursive: true, mode: 0o700 });
  let fetched = 0;
  let archiveEnded = false;
  const queue = [...names];
  const worker = async () => {
    for (let name = queue.shift(); name; name = queue.shift()) {
      const done = join(dir, name);
      if (await alreadyRequested(walDirectory, name)) continue; // recovery is past it: nobody will take it
      if (await stat(done).then(() => true, () => false)) continue;
      if (await stat(join(walDirectory, name)).then(() => true, () => false)) continue;
      const claim = join(running, name);
      let handle;
      try {
        handle = await open(claim, 'wx', 0o600);
      } catch {
        continue; // another prefetcher has it
      }
      await handle.close();
      try {
        const found = await openWalObject(rt, name);
        if (!found) {
          queue.length = 0; // the archive ends here for now
          archiveEnded = true;
          continue;
        }
        await writeFileAtomically(found.body, claim, rt.storage.describe(found.key));
        await rename(claim, done);
        fetched++;
      } catch (e) {
        rt.log.debug(`prefetch of ${name} failed; wal-fetch will fetch it itself`, { detail: (e as Error).message });
      } finally {
        await rm(claim, { force: true }).catch(() => {});
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(rt.server.poolSize, names.length)) }, worker));
  return { fetched, archiveEnded };
}

/**
 * restore_command's sh front (bin/walrus-prefetch-hit) asks the follower for a file it does not
 * have ready with an empty `.ask-NAME`, instead of starting node: the follower looks in the
 * archive now, after the ask was made, and answers with the file (NAME, as for a prefetched
 * segment) or with `.absent-NAME`. A "not found" is therefore as fresh as the full wal-fetch's own
 * look, never remembered from an earlier one. Misses are what PostgreSQL asks at the end of the
 * archive, for the next timeline's history and, once recovery ends, the last segment again: each
 * was a node start. An ask the follower cannot answer (a storage error) is removed unanswered, and
 * the front runs the full wal-fetch, which reports the error as restore_command must.
 */
const ASK_PREFIX = '.ask-';
const ABSENT_PREFIX = '.absent-';

async function answerAsks(rt: ServerRuntime, walDirectory: string): Promise<number> {
  const dir = prefetchDirectory(walDirectory);
  const names = (await readdir(dir).catch(() => [] as string[]))
    .filter((e) => e.startsWith(ASK_PREFIX) && isWalFileName(e.slice(ASK_PREFIX.length)))
    .map((e) => e.slice(ASK_PREFIX.length));
  for (const name of names) {
    const ask = join(dir, ASK_PREFIX + name);
    const ready = join(dir, name);
    if (await stat(ready).then(() => true, () => false)) {
      await rm(ask, { force: true }); // the front takes it
      continue;
    }
    const claim = join(dir, 'running', name);
    try {
      await (await open(claim, 'wx', 0o600)).close();
    } catch {
      continue; // being prefetched: the front waits for it, and the ask is looked at again after
    }
    try {
      const found = await openWalObject(rt, name);
      if (found) {
        await writeFileAtomically(found.body, claim, rt.storage.describe(found.key));
        await rename(claim, ready);
      } else {
        await writeFile(join(dir, ABSENT_PREFIX + name), '', { mode: 0o600 });
      }
    } catch (e) {
      rt.log.debug(`could not answer the ask for ${name}; wal-fetch will fetch it itself`, { detail: (e as Error).message });
    } finally {
      await rm(claim, { force: true }).catch(() => {});
      await rm(ask, { force: true }).catch(() => {});
    }
  }
  return names.length;
}

/** Holds the pid of the one following prefetcher of a pg_wal (`wal-prefetch --follow`). */
export const FOLLOWER_PID = 'follower.pid';

export interface FollowOptions {
  /** Segments kept ready ahead of the last one recovery asked for. */
  count: number;
  /** Exit after this long without a request from recovery and without a fetch (default 15 s). */
  idleMs?: number;
  /** Wait between looks at the archive once it has no next segment (default 2 s). */
  archiveEndPollMs?: number;
  /** Called on each request seen and each segment fetched (a watchdog's heartbeat). */
  onActivity?: () => void;
  /** The fleet config it runs with: when the file changes, it stops and drops what it fetched. */
  configPath?: string;
}

/** Whether a live process holds pg_wal's follower lock (bin/walrus checks the same way). */
export async function followerRunning(walDirectory: string): Promise<boolean> {
  return followerLockHeld(prefetchDirectory(walDirectory));
}

/** Whether a live process holds the follower lock (follower.pid) of `dir`. */
export async function followerLockHeld(dir: string): Promise<boolean> {
  const pid = Number(await readFile(join(dir, FOLLOWER_PID), 'utf8').catch(() => ''));
  return Number.isInteger(pid) && pid > 0 && processAlive(pid);
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Take the follower lock of `dir` (follower.pid): false when another live follower holds it. */
export async function lockFollower(dir: string): Promise<boolean> {
  const path = join(dir, FOLLOWER_PID);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(path, String(process.pid), { flag: 'wx', mode: 0o600 });
      // Stopped with a signal (an operator, a test): still release the lock on the way out.
      for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(signal, () => process.exit(0));
      process.once('exit', () => {
        try {
          if (readFileSync(path, 'utf8') === String(process.pid)) unlinkSync(path);
        } catch {
          /* already gone */
        }
      });
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(await readFile(path, 'utf8').catch(() => ''));
      if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) return false;
      await unlink(path).catch(() => {}); // left by a follower that was killed
    }
  }
  return false;
}

/**
 * The long-lived prefetcher of a recovery (what pgBackRest's archive-get async does with its
 * spool): one per pg_wal, it keeps `count` segments ready after the last one recovery asked for
 * (`.last-requested`, written by every wal-fetch), waking on each request. One process for the
 * whole recovery instead of one per few segments: no config load and no process start per batch.
 * Ends when nothing happened for `idleMs` (recovery over, or a standby whose archive stands
 * still); a later wal-fetch starts it again. Returns false when another follower already runs.
 */
export async function followRecovery(rt: ServerRuntime, walDirectory: string, first: string, options: FollowOptions): Promise<boolean> {
  const dir = prefetchDirectory(walDirectory);
  await mkdir(join(dir, 'running'), { recursive: true, mode: 0o700 });
  if (!(await lockFollower(dir))) return false;
  const idleMs = options.idleMs ?? 15_000;
  // pg_wal's data directory in recovery has recovery.signal or standby.signal; PostgreSQL removes
  // it when recovery ends, and then nobody will ask for more.
  const dataDirectory = dirname(resolve(walDirectory));
  const inRecovery = () => ['recovery.signal', 'standby.signal'].some((f) => existsSync(join(dataDirectory, f)));
  const followsRecovery = basename(resolve(walDirectory)) === 'pg_wal' && inRecovery();
  const endPollMs = options.archiveEndPollMs ?? 2_000;
  let lastActivity = Date.now();
  let lastRequest = '';
  // Wake on any change in the prefetch directory (a request, an ask, a segment taken), else poll.
  // A change while it was busy fetching is remembered: the next pause returns at once.
  const waker = new DirectoryWaker([dir]);
  const configStamp = async () => {
    const s = options.configPath ? await stat(options.configPath).catch(() => null) : null;
    return s ? `${s.ino}:${s.size}:${s.mtimeMs}` : '';
  };
  const loadedConfig = await configStamp();
  try {
    for (;;) {
      if ((await configStamp()) !== loadedConfig) {
        // Fetched under the old settings (another storage or key, maybe): gone, and the next
        // wal-fetch, which loads the new config, starts a new follower.
        for (const e of await readdir(dir).catch(() => [] as string[])) if (isSegmentName(e)) await rm(join(dir, e), { force: true });
        return true;
      }
      await answerAsks(rt, walDirectory);
      const requested = await readRequest(dir);
      if (requested.stamp !== lastRequest) {
        [lastRequest, lastActivity] = [requested.stamp, Date.now()];
        options.onActivity?.();
      }
      // The window: after the last request, or from `first` while recovery has not reached it.
      const req = requested.name;
      const window = req && (req.slice(0, 8) !== first.slice(0, 8) || req >= first) ? segmentsAfter(req, options.count) : [first, ...segmentsAfter(first, options.count - 1)];
      const { fetched, archiveEnded } = await prefetchWindow(rt, walDirectory, window);
      if (fetched) {
        lastActivity = Date.now();
        options.onActivity?.();
      }
      if (Date.now() - lastActivity > idleMs || (followsRecovery && !inRecovery())) return true;
      await waker.pause(archiveEnded ? endPollMs : fetched ? 0 : 250);
    }
  } finally {
    waker.close();
  }
}

/** The segment recovery asked for last, and a stamp that changes with every request. */
async function readRequest(dir: string): Promise<{ name: string | null; stamp: string }> {
  try {
    const path = join(dir, LAST_REQUESTED);
    const [name, s] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    return { name: isSegmentName(name) ? name : null, stamp: `${name}@${s.ino}:${s.mtimeMs}` };
  } catch {
    return { name: null, stamp: '' };
  }
}

const LAST_REQUESTED = '.last-requested';
/** Read by bin/walrus's prefetch-hit fast path: which config and server this pg_wal's wal-fetch runs with. */
const FAST_PATH_SETTINGS = '.fast-path';
/** Read by bin/walrus-prefetch-hit (restore_command's sh front): config and server, a line each. */
const FAST_PATH_SH_SETTINGS = '.fast-path.sh';
/** Touched by the fast path when it starts a prefetcher: it starts no other for 1 s. */
const FAST_PATH_STARTED = '.fast-path-started';

export interface FastPathSettings {
  /** The fleet config file, absolute, and its mtime and size when wal-fetch last loaded it. */
  config: string;
  configMtimeMs: number;
  configSize: number;
  /** --server / WALRUS_SERVER as given (null: the config's only server). */
  server: string | null;
  /** The server's name in the config: the detached prefetcher the fast path starts is given it. */
  serverName: string;
  /** The server's `prefetch` setting. */
  prefetch: number;
}

/**
 * Let later wal-fetch calls with the same config and server take prefetched segments without
 * loading the CLI (bin/walrus). Any mismatch there falls back to the full wal-fetch.
 */
export async function recordFastPathSettings(walDirectory: string, configPath: string, server: string | null, serverName: string, prefetch: number): Promise<void> {
  const dir = prefetchDirectory(walDirectory);
  const config = resolve(configPath);
  const s = await stat(config);
  const settings: FastPathSettings = { config, configMtimeMs: s.mtimeMs, configSize: s.size, server, serverName, prefetch };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = join(dir, `${FAST_PATH_SETTINGS}.${randomBytes(4).toString('hex')}`);
  await writeFile(temp, JSON.stringify(settings), { mode: 0o600 });
  await rename(temp, join(dir, FAST_PATH_SETTINGS));
  // The same for bin/walrus-prefetch-hit (sh): config and --server a line each; its mtime, newer
  // than the config file's, says the config is unchanged since.
  const shTemp = join(dir, `${FAST_PATH_SH_SETTINGS}.${randomBytes(4).toString('hex')}`);
  await writeFile(shTemp, `${config}\n${server ?? ''}\n`, { mode: 0o600 });
  await rename(shTemp, join(dir, FAST_PATH_SH_SETTINGS));
}

/** Note the segment recovery asked for last: prefetchers skip it and everything before it. */
export async function recordRequested(walDirectory: string, name: string): Promise<void> {
  const dir = prefetchDirectory(walDirectory);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const temp = join(dir, `${LAST_REQUESTED}.${randomBytes(4).toString('hex')}`);
  await writeFile(temp, name, { mode: 0o600 });
  await rename(temp, join(dir, LAST_REQUESTED));
}

async function alreadyRequested(walDirectory: string, name: string): Promise<boolean> {
  const last = await readFile(join(prefetchDirectory(walDirectory), LAST_REQUESTED), 'utf8').catch(() => '');
  return isSegmentName(last) && last.slice(0, 8) === name.slice(0, 8) && name <= last;
}

/** A wal-fetch killed mid-write leaves its hidden temp file beside DEST: old ones are removed. */
export async function cleanPartialFiles(walDirectory: string, olderThanMs = 10 * 60 * 1000): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(walDirectory);
  } catch {
    return;
  }
  for (const e of entries.filter((e) => e.startsWith('.') && e.includes('.walrus-partial-'))) {
    const p = join(walDirectory, e);
    const s = await stat(p).catch(() => null);
    if (s && Date.now() - s.mtimeMs > olderThanMs) await rm(p, { force: true }).catch(() => {});
  }
}

/** Remove prefetched segments at or before `name` (replayed or skipped) and stale claims. */
export async function cleanPrefetched(walDirectory: string, name: string): Promise<void> {
  const dir = prefetchDirectory(walDirectory);
  const now = Date.now();
  for (const sub of ['', 'running']) {
    let entries: string[];
    try {
      entries = await readdir(join(dir, sub));
    } catch {
      continue;
    }
    for (const e of entries) {
      if (e === 'running' || e === LAST_REQUESTED || e === FAST_PATH_SETTINGS || e === FAST_PATH_STARTED || e === FOLLOWER_PID || e === FAST_PATH_SH_SETTINGS) continue;
      const p = join(dir, sub, e);
      try {
        const s = await stat(p);
        const replayed = isSegmentName(e) && isSegmentName(name) && e.slice(0, 8) === name.slice(0, 8) && e <= name;
        if (replayed || now - s.mtimeMs > STALE_MS || (sub === 'running' && now - s.mtimeMs > 10 * 60 * 1000)) await rm(p, { force: true });
      } catch {
        /* raced */
      }
    }
  }
}
