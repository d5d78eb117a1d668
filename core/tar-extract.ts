/**
 * Extracts one base-backup tar partition into a data directory, treating the archive as hostile:
 * nothing is ever written outside the data directory (or the tablespace locations the caller maps).
 *
 * Rules, each breach refused with WalrusError INTEGRITY naming the entry:
 * - Names: leading `/` is stripped (WAL-E writes `/`, `/PG_VERSION`, `/pg_wal/`, all relative to
 *   the data directory), so `/etc/evil` lands at `<data>/etc/evil`. A `..` component anywhere,
 *   a NUL byte, or a path resolving outside the data directory is refused.
 * - Symbolic links: only `pg_tblspc/<oid>` (tablespaces), and only when `tablespaceMap` names
 *   its location; the link is made to the mapped location, whatever the archive recorded.
 *   WAL-E archives carry no link entries at all, just `pg_tblspc/<oid>/...` files: a mapped oid
 *   gets its link on first use. Unmapped, those files land in `pg_tblspc/<oid>/` as in-place
 *   directories (WAL-E's blind restore). Top-level `pg_wal`/`pg_xlog`/`pg_log`/`pg_replslot`
 *   links (WAL-E records them as links when they are) become empty directories. Any other link
 *   is refused.
 * - Nothing is written through a link: every parent component is checked with lstat (only the
 *   mapped tablespace links are followed), and files are opened with O_NOFOLLOW.
 * - Hard links, devices, FIFOs and unknown entry types are refused.
 * - A stream that ends early (inside a member, or without the end-of-archive blocks) is refused
 *   as a truncated archive; the file being written is deleted, never left short.
 * Files are written 0600 and fsynced; directories are 0700 and fsynced at the end.
 *
 * A file's fsync does not hold up the next member: each written file is queued to a small
 * background syncer (reopen read-only, fsync, close: what PostgreSQL's own sync of a data
 * directory does), which runs while later members are decompressed and written. extractPartition
 * returns only after every queued fsync and the directories' fsyncs succeeded; a failed fsync
 * fails the extraction.
 */
import type { Readable } from 'node:stream';
import { once } from 'node:events';
import path from 'node:path';
import { closeSync, constants as fsConstants, fchmodSync, fdatasync, futimesSync, openSync, writeSync, type Stats } from 'node:fs';
import { promisify } from 'node:util';
import { chmod, lstat, mkdir, open, readlink, realpath, stat, symlink, unlink } from 'node:fs/promises';
import tarStream from 'tar-stream';
import { WalrusError, integrityError, localIoError, refusedError, usageError, isWalrusError } from './errors.js';
import type { Logger } from './log.js';
import { fsyncDirectory } from './durable-files.js';

export interface ExtractOptions {
  /** `pg_tblspc/<oid>` → absolute location for that tablespace (from the backup's spec or a restore spec). */
  tablespaceMap?: Record<string, string>;
  log?: Logger;
  /** fsync files and directories (default true). Only tests have a reason to turn it off. */
  fsync?: boolean;
}

export interface ExtractResult {
  /** Regular files written. */
  files: number;
  /** Bytes of file data written. */
  bytes: number;
}

/** Top-level links WAL-E records as links when they are; restored as plain directories. */
const LINKS_RESTORED_AS_DIRECTORIES = new Set(['pg_wal', 'pg_xlog', 'pg_log', 'pg_replslot']);
const END_OF_ARCHIVE_BYTES = 1024; // two zero blocks
const BLOCK = 512;

type Header = tarStream.Header & { byteOffset?: number };
type EntryStream = AsyncIterable<Buffer> & { resume(): unknown; destroy(error?: Error): unknown };

interface Extraction {
  root: string;
  tablespaces: Map<string, string>;
  verifiedTablespaces: Set<string>;
  /** Directories already checked (the archive cannot turn them into links later: link entries are refused). */
  verifiedDirectories: Set<string>;
  log?: Logger;
  fsync: boolean;
  /** Directories whose entries changed: fsynced at the end. */
  touchedDirectories: Set<string>;
  /** fsyncs of written files, running beside the extraction. */
  fileSyncs: FileSyncer;
  files: number;
  bytes: number;
}

export async function extractPartition(
  tarBytes: Readable | AsyncIterable<Buffer>,
  dataDirectory: string,
  options: ExtractOptions = {},
): Promise<ExtractResult> {
  const extraction: Extraction = {
    root: await dataDirectoryRoot(dataDirectory),
    tablespaces: tablespaceLocations(options.tablespaceMap ?? {}),
    verifiedTablespaces: new Set(),
    verifiedDirectories: new Set(),
    log: options.log,
    fsync: options.fsync ?? true,
    touchedDirectories: new Set(),
    fileSyncs: new FileSyncer(),
    files: 0,
    bytes: 0,
  };

  const extract = tarStream.extract();
  let entryFailure: unknown = null;
  let parserFailure: unknown = null;
  let sourceFailure: unknown = null;
  let pendingEntry: Promise<void> = Promise.resolve();
  let currentEntry: string | null = null;
  let lastEntryEnd = 0;
  let total = 0;
  let tail = Buffer.alloc(0);

  extract.on('error', (error: unknown) => {
    parserFailure ??= error;
  });
  const closed = new Promise<void>((resolve) => extract.once('close', () => resolve()));
  extract.on('entry', (header: Header, stream, next) => {
    currentEntry = header.name;
    // Its failure reaches us through iteration; an 'error' event without a listener would throw (as tar-stream's own iterator knows).
    stream.on('error', () => undefined);
    if (typeof header.byteOffset === 'number') lastEntryEnd = header.byteOffset + roundUpToBlock(header.type === 'directory' ? 0 : header.size);
    pendingEntry = extractEntry(extraction, header, stream as unknown as EntryStream).then(
      () => {
        currentEntry = null;
        next();
      },
      (error) => {
        entryFailure ??= error;
        next(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });

  try {
    for await (const chunk of tarBytes as AsyncIterable<Buffer>) {
      total += chunk.length;
      tail = chunk.length >= END_OF_ARCHIVE_BYTES
        ? Buffer.from(chunk.subarray(chunk.length - END_OF_ARCHIVE_BYTES))
        : Buffer.concat([tail, chunk]).subarray(-END_OF_ARCHIVE_BYTES);
      if (!extract.write(chunk)) await Promise.race([once(extract, 'drain'), closed]);
      if (extract.destroying) break; // refused or corrupt: stop reading the source
    }
    if (!extract.destroying) {
      extract.end(undefined); // streamx types require an argument; undefined writes nothing
      await Promise.race([once(extract, 'finish'), closed]);
    }
  } catch (error) {
    // events.once rejects with the extractor's own error; anything else came from the source.
    if (error !== parserFailure) {
      sourceFailure = error;
      extract.destroy(error instanceof Error ? error : new Error(String(error)));
    }
  }
  await pendingEntry;
  // Every queued fsync settles before returning, also on failure (no fsync outlives the call).
  const syncFailure = await extraction.fileSyncs.drain();

  // A source failure (storage, key) is the cause of whatever the entries saw after it.
  const failure = sourceFailure ?? entryFailure ?? parserFailure;
  if (failure !== null) throw archiveError(failure, currentEntry);

  const endBlocksPresent = total - lastEntryEnd >= END_OF_ARCHIVE_BYTES && tail.length === END_OF_ARCHIVE_BYTES && tail.every((b) => b === 0);
  if (!endBlocksPresent) {
    throw integrityError('truncated archive: the tar stream ended without its end-of-archive blocks', {
      detail: `${total} bytes read; the last member ends at byte ${lastEntryEnd}.`,
      hint: 'The partition object is incomplete or corrupt: fetch it again, or restore another backup.',
    });
  }

  if (syncFailure !== null) throw entryError(extraction, syncFailure.name, syncFailure.error);
  if (extraction.fsync) {
    for (const directory of extraction.touchedDirectories) await fsyncDirectory(directory);
  }
  return { files: extraction.files, bytes: extraction.bytes };
}

// ---------------------------------------------------------------- entries

async function extractEntry(extraction: Extraction, header: Header, stream: EntryStream): Promise<void> {
  try {
    const parts = memberPathParts(extraction, header.name);
    switch (header.type) {
      case 'file':
      case 'contiguous-file':
        await writeFileEntry(extraction, parts, header, stream);
        return;
      case 'directory':
        stream.resume();
        await makeDirectoryEntry(extraction, parts, header.name);
        return;
      case 'symlink':
        stream.resume();
        await makeSymlinkEntry(extraction, parts, header);
        return;
      case 'link':
        throw refuse(header.name, `hard link to ${JSON.stringify(header.linkname)}`);
      case 'character-device':
      case 'block-device':
      case 'fifo':
        throw refuse(header.name, `${header.type} entry`);
      default:
        throw refuse(header.name, `unknown entry type ${JSON.stringify(header.type)}`);
    }
  } catch (error) {
    throw entryError(extraction, header.name, error);
  }
}

function refuse(name: string, what: string, hint?: string): WalrusError {
  return integrityError(`hostile archive entry refused: ${JSON.stringify(name)}: ${what}`, {
    hint: hint ?? 'The backup is damaged or was not written by walrus or WAL-E; nothing was written outside the data directory.',
  });
}

/** Components below the data directory; `[]` is the data directory itself. */
function memberPathParts(extraction: Extraction, name: string): string[] {
  if (name.includes('\0')) throw refuse(name, 'NUL byte in the name');
  // Leading `/` is WAL-E's way of writing a path relative to the data directory.
  const parts = name.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw refuse(name, '`..` component in the name');
  const resolved = path.resolve(extraction.root, ...parts);
  if (resolved !== extraction.root && !resolved.startsWith(extraction.root + path.sep)) throw refuse(name, 'resolves outside the data directory');
  return parts;
}

function tablespaceOid(parts: string[], index: number): string | null {
  return index === 1 && parts[0] === 'pg_tblspc' && /^[0-9]+$/.test(parts[1]) ? parts[1] : null;
}

async function writeFileEntry(extraction: Extraction, parts: string[], header: Header, stream: EntryStream): Promise<void> {
  const name = header.name;
  if (parts.length === 0) throw refuse(name, 'a file named as the data directory itself');
  const parent = await ensureParents(extraction, parts, name);
  const target = path.join(parent, parts[parts.length - 1]);
  if (tablespaceOid(parts, parts.length - 1) !== null && extraction.tablespaces.has(parts[1])) {
    throw refuse(name, 'a file in place of a tablespace link');
  }
  // The usual case, a new name: O_EXCL creates it and never follows or reuses anything there.
  // Only when something exists already (an earlier entry of the same name) is it looked at first.
  let existing: Stats | null = null;
  let fd: number;
  try {
    fd = openSync(target, CREATE_NEW_FILE, 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    existing = await lstatOrNull(target);
    if (existing !== null && !existing.isFile()) throw refuse(name, `would replace an existing ${describeType(existing)}`);
    try {
      fd = openSync(target, REPLACE_FILE, 0o600);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw refuse(name, 'would write through a symbolic link');
      throw error;
    }
  }
  // Files are written with synchronous calls: each asynchronous call is a round trip through
  // libuv's pool, and five of them per file cost more than a small file's writes. A large file's
  // chunks went through the pool once, to overlap writing with decompression; measured on a 1 GiB
  // relation file the overlap gained nothing, while the chunks waiting in the pool held ~30 MB
  // more RSS per worker (backup-fetch of a 1.6 GB cluster: 194-202 MB then, 167-172 MB now).
  // A large file's data is flushed to disk while the rest is still being written, so the final
  // fsync does not wait for all of it at once: the disk works while the CPU decompresses.
  const writeback = extraction.fsync && header.size > EARLY_WRITEBACK_FROM_BYTES ? new EarlyWriteback(fd) : null;
  let written = 0;
  let closed = false;
  try {
    if (existing !== null) fchmodSync(fd, 0o600); // a new file already has 0600 (umask only removes bits)
    try {
      for await (const chunk of stream) {
        writeChunk(fd, chunk, target);
        written += chunk.length;
        if (writeback?.wrote(chunk.length)) await yieldToEventLoop();
      }
    } catch (error) {
      // The entry stream fails when the archive stops short ("Unexpected end of data", or
      // streamx's "Stream was destroyed"); a failing source is reported ahead of this anyway.
      if (isWalrusError(error)) throw error;
      throw truncatedEntry(name, written, header.size, error);
    }
    if (written !== header.size) throw truncatedEntry(name, written, header.size);
    futimesSync(fd, header.mtime, header.mtime);
    await writeback?.settle();
    closed = true; // before the call: a failed close still releases the descriptor, never close it twice
    closeSync(fd);
  } catch (error) {
    // Never leave a short file behind that looks restored.
    await writeback?.settle().catch(() => undefined); // the fd stays open until no flush uses it
    if (!closed) closeQuietly(fd);
    await unlink(target).catch(() => undefined);
    throw error;
  }
  if (extraction.fsync) extraction.fileSyncs.add(target, name);
  extraction.touchedDirectories.add(parent);
  extraction.files += 1;
  extraction.bytes += written;
}

const CREATE_NEW_FILE = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
const REPLACE_FILE = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NOFOLLOW;
/** Files larger than this are flushed while written (EarlyWriteback). */
const EARLY_WRITEBACK_FROM_BYTES = 1024 * 1024;

/** A failed write (disk full, file too large, I/O error) is the target's fault, never the archive's: LOCAL_IO. */
function writeChunk(fd: number, chunk: Buffer, target: string): void {
  try {
    for (let offset = 0; offset < chunk.length; ) offset += writeSync(fd, chunk, offset, chunk.length - offset);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw localIoError(`writing ${target} failed: ${code}`, {
      detail: `${(error as Error).message}; the partial file was removed.`,
      hint: code === 'ENOSPC' || code === 'EDQUOT' ? 'the restore target is full: free space (or give more), remove the directory and run again' : 'check the restore target file system, remove the directory and run again',
      cause: error,
    });
  }
}

/** Bytes written between two early flushes of a large file. */
const WRITEBACK_EVERY_BYTES = 32 * 1024 * 1024;
const fdatasyncInPool = promisify(fdatasync);

/**
 * Starts an fdatasync of a large file every WRITEBACK_EVERY_BYTES, in libuv's pool and without
 * waiting for it (one at a time): what PostgreSQL's own flush-after settings do with
 * sync_file_range. The file's real fsync still comes after it is complete (FileSyncer).
 */
class EarlyWriteback {
  private unflushed = 0;
  private inFlight: Promise<void> | null = null;
  private failure: unknown = null;

  constructor(private readonly fd: number) {}

  /**
   * Counts written bytes; true once WRITEBACK_EVERY_BYTES are written since the last flush began.
   * The caller then lets the event loop turn (yieldToEventLoop): while decoded data keeps coming,
   * the extraction runs from one microtask to the next and the loop would never see the flush
   * complete, so no other flush of the file would start until its end.
   */
  wrote(bytes: number): boolean {
    this.unflushed += bytes;
    if (this.unflushed < WRITEBACK_EVERY_BYTES) return false;
    if (this.inFlight !== null) return true;
    this.unflushed = 0;
    this.inFlight = fdatasyncInPool(this.fd).then(
      () => {
        this.inFlight = null;
      },
      (error) => {
        this.inFlight = null;
        this.failure ??= error;
      },
    );
    return false;
  }

  /** Waits for the flush in flight; throws the first flush failure. */
  async settle(): Promise<void> {
    if (this.inFlight) await this.inFlight;
    if (this.failure !== null) throw this.failure;
  }
}

/** Resolves after the event loop has polled for I/O once (setImmediate runs after the poll phase). */
const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already failing: the first error is the one reported
  }
}

function truncatedEntry(name: string, written: number, size: number, cause?: unknown): WalrusError {
  return integrityError(`truncated archive: the tar stream ended inside ${JSON.stringify(name)}`, {
    detail: `${written} of ${size} bytes present; the partial file was removed.`,
    hint: 'The partition object is incomplete or corrupt: fetch it again, or restore another backup.',
    cause,
  });
}

async function makeDirectoryEntry(extraction: Extraction, parts: string[], name: string): Promise<void> {
  if (parts.length === 0) return; // WAL-E's `/`: the data directory itself, which the caller made
  const parent = await ensureParents(extraction, parts, name);
  const target = path.join(parent, parts[parts.length - 1]);
  const oid = tablespaceOid(parts, parts.length - 1);
  if (oid !== null && extraction.tablespaces.has(oid)) {
    await ensureTablespaceLink(extraction, oid, target, name);
    return;
  }
  await ensureDirectory(extraction, target, name);
}

async function makeSymlinkEntry(extraction: Extraction, parts: string[], header: Header): Promise<void> {
  const name = header.name;
  const linkname = header.linkname ?? '';
  if (linkname.includes('\0')) throw refuse(name, 'NUL byte in the link target');
  const oid = parts.length === 2 ? tablespaceOid(parts, 1) : null;
  if (oid !== null) {
    const location = extraction.tablespaces.get(oid);
    if (location === undefined) {
      throw refuse(name, `tablespace link to ${JSON.stringify(linkname)} with no location given for it`,
        `Restore with a tablespace map (restore spec) naming a location for pg_tblspc/${oid}.`);
    }
    if (path.resolve(linkname) !== location) {
      extraction.log?.debug(`tablespace pg_tblspc/${oid} restored to a mapped location`, {
        detail: `archive recorded "${linkname}", linking to "${location}".`,
      });
    }
    const parent = await ensureParents(extraction, parts, name);
    await ensureTablespaceLink(extraction, oid, path.join(parent, oid), name);
    return;
  }
  if (parts.length === 1 && LINKS_RESTORED_AS_DIRECTORIES.has(parts[0])) {
    extraction.log?.debug(`${parts[0]} was a symbolic link in the backup; restored as a directory`, { detail: `it pointed to "${linkname}".` });
    await ensureDirectory(extraction, path.join(extraction.root, parts[0]), name);
    return;
  }
  throw refuse(name, `symbolic link to ${JSON.stringify(linkname)} (only pg_tblspc/<oid> tablespace links are restored)`);
}

// ---------------------------------------------------------------- paths

/**
 * Makes (0700) or checks every parent of `parts`, never passing through a link other than a
 * mapped tablespace link, and returns the absolute parent path.
 */
async function ensureParents(extraction: Extraction, parts: string[], name: string): Promise<string> {
  let current = extraction.root;
  for (let index = 0; index < parts.length - 1; index += 1) {
    const next = path.join(current, parts[index]);
    const oid = tablespaceOid(parts, index);
    if (oid !== null && extraction.tablespaces.has(oid)) await ensureTablespaceLink(extraction, oid, next, name);
    else await ensureDirectory(extraction, next, name);
    current = next;
  }
  return current;
}

async function ensureDirectory(extraction: Extraction, target: string, name: string): Promise<void> {
  if (extraction.verifiedDirectories.has(target)) return;
  let existing = await lstatOrNull(target);
  if (existing === null) {
    try {
      await mkdir(target, { mode: 0o700 });
      extraction.touchedDirectories.add(path.dirname(target));
      extraction.touchedDirectories.add(target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error; // another partition made it meanwhile
    }
    existing = await lstat(target);
  }
  if (existing.isSymbolicLink()) throw refuse(name, `${relativeTo(extraction, target)} is a symbolic link; refusing to write through it`);
  if (!existing.isDirectory()) throw refuse(name, `${relativeTo(extraction, target)} is a ${describeType(existing)}, not a directory`);
  await chmod(target, 0o700);
  extraction.verifiedDirectories.add(target);
}

/** `pg_tblspc/<oid>` as a link to the mapped location (made 0700 if missing). */
async function ensureTablespaceLink(extraction: Extraction, oid: string, linkPath: string, name: string): Promise<void> {
  if (extraction.verifiedTablespaces.has(oid)) return;
  const location = extraction.tablespaces.get(oid)!;
  const existing = await lstatOrNull(linkPath);
  if (existing === null) {
    await mkdir(location, { recursive: true, mode: 0o700 });
    const made = await stat(location);
    if (!made.isDirectory()) throw refusedError(`tablespace location ${location} for pg_tblspc/${oid} is not a directory`);
    await chmod(location, 0o700);
    try {
      await symlink(location, linkPath);
      extraction.touchedDirectories.add(path.dirname(linkPath));
      extraction.touchedDirectories.add(path.dirname(location));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error; // another partition made it meanwhile
    }
    return ensureTablespaceLink(extraction, oid, linkPath, name);
  }
  if (!existing.isSymbolicLink() || path.resolve(path.dirname(linkPath), await readlink(linkPath)) !== location) {
    throw refusedError(`pg_tblspc/${oid} already exists and is not a link to its mapped location ${location}`, {
      detail: `while extracting ${JSON.stringify(name)} into ${extraction.root}`,
      hint: 'Restore into an empty data directory.',
    });
  }
  extraction.verifiedTablespaces.add(oid);
}

async function dataDirectoryRoot(dataDirectory: string): Promise<string> {
  let root: string;
  try {
    root = await realpath(dataDirectory);
  } catch (error) {
    throw refusedError(`cannot extract into ${dataDirectory}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
      hint: 'Create the data directory (mode 0700, owned by the PostgreSQL user) before restoring.',
      cause: error,
    });
  }
  if (!(await stat(root)).isDirectory()) throw refusedError(`cannot extract into ${dataDirectory}: not a directory`);
  return root;
}

function tablespaceLocations(map: Record<string, string>): Map<string, string> {
  const locations = new Map<string, string>();
  for (const [key, location] of Object.entries(map)) {
    const match = /^\/?pg_tblspc\/([0-9]+)\/?$/.exec(key);
    if (!match) throw usageError(`tablespace map key ${JSON.stringify(key)} is not pg_tblspc/<oid>`);
    if (!path.isAbsolute(location)) throw usageError(`tablespace location ${JSON.stringify(location)} for ${key} is not an absolute path`);
    locations.set(match[1], path.resolve(location));
  }
  return locations;
}

/**
 * fsyncs written files, at most FILE_SYNCS_AT_ONCE at a time, in the background. Two keep the
 * disk's flushes going without taking every libuv thread from the writes of the extraction.
 */
const FILE_SYNCS_AT_ONCE = 2;
class FileSyncer {
  private queue: Array<{ target: string; name: string }> = [];
  private running = 0;
  private idle: Array<() => void> = [];
  private failure: { name: string; error: unknown } | null = null;

  add(target: string, name: string): void {
    this.queue.push({ target, name });
    this.pump();
  }

  private pump(): void {
    while (this.running < FILE_SYNCS_AT_ONCE && this.queue.length > 0) {
      const job = this.queue.shift()!;
      this.running += 1;
      fsyncFile(job.target)
        .catch((error) => {
          this.failure ??= { name: job.name, error };
        })
        .finally(() => {
          this.running -= 1;
          if (this.failure !== null) this.queue.length = 0;
          this.pump();
          if (this.running === 0 && this.queue.length === 0) for (const done of this.idle.splice(0)) done();
        });
    }
  }

  /** Waits for every queued fsync; the first failure, if any. */
  async drain(): Promise<{ name: string; error: unknown } | null> {
    if (this.running > 0 || this.queue.length > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
    return this.failure;
  }
}

async function fsyncFile(target: string): Promise<void> {
  const handle = await open(target, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}


async function lstatOrNull(target: string): Promise<Stats | null> {
  try {
    return await lstat(target);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

function describeType(stats: Stats): string {
  if (stats.isSymbolicLink()) return 'symbolic link';
  if (stats.isDirectory()) return 'directory';
  if (stats.isFile()) return 'file';
  return 'special file';
}

function relativeTo(extraction: Extraction, target: string): string {
  return path.relative(extraction.root, target) || '.';
}

function roundUpToBlock(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

// ---------------------------------------------------------------- errors

/** tar-stream's own parse failures (plain Errors): a corrupt or short stream. */
function isArchiveParseError(error: unknown): boolean {
  const message = error instanceof Error ? error.message : '';
  return /Unexpected end of data|Invalid tar header|Invalid header|Header exceeds max size|unknown format/.test(message);
}

function entryError(extraction: Extraction, name: string, error: unknown): unknown {
  if (isWalrusError(error) || isArchiveParseError(error)) return error;
  const code = (error as NodeJS.ErrnoException)?.code;
  if (typeof code === 'string' && (error as NodeJS.ErrnoException).syscall) {
    return new WalrusError('LOCAL_IO', `cannot write ${JSON.stringify(name)} into ${extraction.root}: ${code}`, {
      hint: 'Check free space and that walrus runs as the owner of the data directory.',
      cause: error,
    });
  }
  return error; // the source's own failure (storage, key, codec): already what it should be
}

function archiveError(error: unknown, entry: string | null): unknown {
  if (isWalrusError(error) || !isArchiveParseError(error)) return error;
  const message = (error as Error).message;
  if (/Unexpected end of data/.test(message)) {
    return integrityError(`truncated archive: the tar stream ended ${entry === null ? 'inside a header' : `inside ${JSON.stringify(entry)}`}`, {
      hint: 'The partition object is incomplete or corrupt: fetch it again, or restore another backup.',
      cause: error,
    });
  }
  return integrityError(`corrupt archive: ${message}${entry === null ? '' : ` (after ${JSON.stringify(entry)})`}`, {
    hint: 'The partition object is corrupt: restore another backup.',
    cause: error,
  });
}
