/**
 * Base backup tar partitions, WAL-E style (layout 005): a data-directory listing is cut into
 * partitions of at most 1.5 GiB of member data and 6144 members (a bigger file gets a partition
 * of its own), and each partition is packed as a POSIX tar stream (pax headers where a name or
 * size does not fit ustar, like Python's tarfile default).
 *
 * Files are packed with the size they had when listed: PostgreSQL keeps writing during an online
 * backup, so a file that grew is cut at its listed size and one that shrank or vanished is padded
 * with zeros. WAL-E does the same; WAL replay from the backup's start LSN repairs those pages.
 */
import { Readable } from 'node:stream';
import { open, readlink, type FileHandle } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import tarStream from 'tar-stream';
import { WalrusError } from './errors.js';
import type { DataFile } from './types.js';
import type { Logger } from './log.js';

/** WAL-E's `PARTITION_MAX_SZ` and `PARTITION_MAX_MEMBERS`. */
export const WAL_E_PARTITION_LIMITS: PartitionLimits = { maxBytes: 1610612736, maxMembers: 6144 };

/**
 * What walrus writes: at most 256 MiB and 256 members per partition. WAL-E (and walrus) read
 * partitions of any size and count; WAL-E's 1.5 GiB and 6144 members were only its writer's limits.
 * With them a cluster below 1.5 GiB was one partition and got no parallelism from poolSize; and
 * restoring a partition is bound by its members as much as its bytes: creating a file costs about
 * a millisecond on ext4 (measured 0.6-1.3 ms on the project machine), so a partition of a thousand
 * small files was the straggler of a restore while the other workers idled. 256 members (~0.25 s
 * of file creation) are small enough to spread across workers; a cluster of 100,000 files has
 * ~400 partitions, which object storage does not mind.
 */
export const WALRUS_PARTITION_LIMITS: PartitionLimits = { maxBytes: 256 * 1024 * 1024, maxMembers: 256 };

export interface PartitionLimits {
  /** Most member bytes (file sizes, headers not counted) in one partition. */
  maxBytes: number;
  /** Most members (files, directories, symlinks) in one partition. */
  maxMembers: number;
}

export interface Partition {
  /** 0-based; becomes `part_<8 decimal digits>.tar.lzo`. */
  number: number;
  files: DataFile[];
  /** Sum of the listed sizes of `files`. */
  bytes: number;
}

/** `part_00000003.tar` for partition 3 (the codec adds its suffix, `.lzo`). */
export function partitionTarName(number: number): string {
  return `part_${String(number).padStart(8, '0')}.tar`;
}

/**
 * Cuts a listing into partitions as it goes, yielding each one as soon as it is full, so a huge
 * cluster is never listed whole in memory before the first upload starts.
 */
export async function* partitionsOf(
  files: Iterable<DataFile> | AsyncIterable<DataFile>,
  limits: PartitionLimits = WAL_E_PARTITION_LIMITS,
): AsyncGenerator<Partition> {
  if (!(limits.maxBytes > 0) || !(limits.maxMembers >= 1)) {
    throw new WalrusError('INTERNAL', `invalid partition limits: maxBytes=${limits.maxBytes} maxMembers=${limits.maxMembers}`);
  }
  let current: Partition = { number: 0, files: [], bytes: 0 };
  const startNext = () => {
    current = { number: current.number + 1, files: [], bytes: 0 };
  };
  for await (const file of files) {
    const size = file.type === 'file' ? file.size : 0;
    if (size > limits.maxBytes) {
      // Bigger than a partition: alone in its own, WAL-E's rule.
      if (current.files.length > 0) {
        yield current;
        startNext();
      }
      current.files.push(file);
      current.bytes = size;
      yield current;
      startNext();
      continue;
    }
    if (current.files.length >= limits.maxMembers || current.bytes + size > limits.maxBytes) {
      yield current;
      startNext();
    }
    current.files.push(file);
    current.bytes += size;
  }
  if (current.files.length > 0) yield current;
}

/** All partitions of a listing at once (fine for tests and small clusters; see partitionsOf). */
export async function planPartitions(
  files: DataFile[] | Iterable<DataFile> | AsyncIterable<DataFile>,
  limits: PartitionLimits = WAL_E_PARTITION_LIMITS,
): Promise<Partition[]> {
  const partitions: Partition[] = [];
  for await (const partition of partitionsOf(files, limits)) partitions.push(partition);
  return partitions;
}

/** A file whose bytes are given, not read from disk (`backup_label`, `tablespace_map`). */
export interface InlineFile {
  /** Path relative to the data directory, no leading `/`. */
  name: string;
  content: Buffer;
  /** Default 0600. */
  mode?: number;
  mtime?: Date;
}

export interface PackOptions {
  /** Debug lines for files that changed size or vanished since listing. */
  log?: Logger;
  /** Called with each number of member bytes read (progress). */
  onBytes?: (n: number) => void;
  /** Awaited before each read of `n` bytes from disk (`--cluster-read-rate-limit`). */
  throttle?: (n: number) => Promise<void>;
  /** Added after the listed files. */
  inlineFiles?: InlineFile[];
  /** Bytes per disk read; default 256 KiB. */
  readChunkSize?: number;
}

const DEFAULT_READ_CHUNK = 256 * 1024;
/** ustar's 11 octal digits hold sizes below 8 GiB; above that a pax `size` record is needed. */
const USTAR_MAX_SIZE = 8 * 1024 ** 3 - 1;

/**
 * One partition as a tar byte stream. Member names are relative to the data directory, without
 * WAL-E's leading `/`. Files are read chunk by chunk as the consumer pulls (never whole), each
 * exactly its listed size. Errors (an unreadable file) destroy the returned stream.
 */
export function packPartition(partition: Partition, options: PackOptions = {}): Readable {
  const pack = tarStream.pack();
  const produce = async () => {
    for (const file of partition.files) await packMember(pack, file, options);
    for (const inline of options.inlineFiles ?? []) await packInline(pack, inline);
    pack.finalize();
  };
  produce().catch((error) => pack.destroy(error));
  // tar-stream's streams are streamx streams; hand out a plain Node byte stream that pulls from it.
  return Readable.from(pack, { objectMode: false });
}

type Pack = tarStream.Pack;
type EntrySink = ReturnType<Pack['entry']>;
type EntryHeader = Parameters<Pack['entry']>[0];

function checkMemberName(name: string): void {
  const parts = name.split('/');
  if (name === '' || name.startsWith('/') || name.includes('\0') || parts.includes('..')) {
    throw new WalrusError('INTERNAL', `refusing to pack a member named ${JSON.stringify(name)}: not a clean path relative to the data directory`);
  }
}

function ownerFields() {
  return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
}

function sizeFields(size: number) {
  return size > USTAR_MAX_SIZE ? { size, pax: { size: String(size) } } : { size };
}

async function packMember(pack: Pack, file: DataFile, options: PackOptions): Promise<void> {
  if (file.type === 'directory' && file.relativePath === '') return; // the data directory itself: the restore makes it
  checkMemberName(file.relativePath);
  const common = { mtime: file.mtime, ...ownerFields() };
  switch (file.type) {
    case 'directory':
      // tar-stream does not add the trailing `/` itself; Python's tarfile does.
      await writeEntry(pack, { ...common, name: `${file.relativePath}/`, type: 'directory', mode: 0o700 }, null);
      return;
    case 'symlink': {
      const linkname = file.linkTarget ?? (await readlink(file.absolutePath).catch((error) => Promise.reject(readError(file, error))));
      await writeEntry(pack, { ...common, name: file.relativePath, type: 'symlink', mode: 0o777, linkname }, null);
      return;
    }
    case 'file':
      await writeEntry(
        pack,
        { ...common, name: file.relativePath, type: 'file', mode: file.mode & 0o7777, ...sizeFields(file.size) },
        listedSizeChunks(file, options),
      );
      return;
    default:
      throw new WalrusError('INTERNAL', `cannot pack ${file.relativePath}: unknown entry type ${String((file as DataFile).type)}`);
  }
}

async function packInline(pack: Pack, inline: InlineFile): Promise<void> {
  checkMemberName(inline.name);
  async function* once() {
    if (inline.content.length > 0) yield inline.content;
  }
  await writeEntry(
    pack,
    { name: inline.name, type: 'file', mode: inline.mode ?? 0o600, mtime: inline.mtime ?? new Date(), size: inline.content.length, ...ownerFields() },
    once(),
  );
}

/** Writes one entry, waiting on back-pressure; resolves once tar-stream has taken the whole entry. */
async function writeEntry(pack: Pack, header: EntryHeader, body: AsyncIterable<Buffer> | null): Promise<void> {
  let sink!: EntrySink;
  const done = new Promise<void>((resolve, reject) => {
    sink = pack.entry(header, (error) => (error ? reject(error) : resolve()));
  });
  // Entry failures arrive through the callback above; without a listener streamx would throw them.
  sink.on('error', () => undefined);
  if (body === null) return done;
  // A failure inside tar-stream ends `done` first; surface that instead of hanging on 'drain'.
  const failed = done.then(() => new Error('tar entry ended early'), (error) => error);
  try {
    for await (const chunk of body) {
      if (!sink.write(chunk)) {
        const outcome = await Promise.race([new Promise<null>((resolve) => sink.once('drain', () => resolve(null))), failed]);
        if (outcome !== null) throw outcome;
      }
    }
  } catch (error) {
    sink.destroy(error as Error);
    await done.catch(() => undefined);
    throw error;
  }
  sink.end(undefined); // streamx types require an argument; undefined writes nothing
  await done;
}

/**
 * Exactly `file.size` bytes of the file: cut if it grew, zero-padded if it shrank, all zeros if
 * it vanished. The handle is closed however the consumer stops.
 */
async function* listedSizeChunks(file: DataFile, options: PackOptions): AsyncGenerator<Buffer> {
  const chunkSize = options.readChunkSize ?? DEFAULT_READ_CHUNK;
  let handle: FileHandle | null = null;
  try {
    handle = await open(file.absolutePath, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // ELOOP: it became a symlink since listing; do not follow it, treat it as gone.
    if (code !== 'ENOENT' && code !== 'ELOOP') throw readError(file, error);
    options.log?.debug(`file vanished since listing, padding with zeros: ${file.relativePath}`, {
      detail: `${file.size} bytes of zeros for "${file.absolutePath}"; WAL replay restores it.`,
    });
  }
  let position = 0;
  try {
    while (handle !== null && position < file.size) {
      const want = Math.min(chunkSize, file.size - position);
      if (options.throttle) await options.throttle(want);
      const buffer = Buffer.allocUnsafe(want);
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(buffer, 0, want, position));
      } catch (error) {
        throw readError(file, error);
      }
      if (bytesRead === 0) {
        options.log?.debug(`file shrank since listing, padding with zeros: ${file.relativePath}`, {
          detail: `read ${position} of ${file.size} listed bytes of "${file.absolutePath}"; WAL replay restores the rest.`,
        });
        break;
      }
      position += bytesRead;
      options.onBytes?.(bytesRead);
      yield bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
    }
  } finally {
    await handle?.close();
  }
  while (position < file.size) {
    const n = Math.min(chunkSize, file.size - position);
    position += n;
    options.onBytes?.(n);
    yield Buffer.alloc(n);
  }
}

function readError(file: DataFile, error: unknown): WalrusError {
  const code = (error as NodeJS.ErrnoException).code ?? String(error);
  return new WalrusError('LOCAL_IO', `cannot read ${file.relativePath} for the base backup: ${code}`, {
    detail: `path "${file.absolutePath}"`,
    hint: 'Run walrus as the operating-system user that owns the PostgreSQL data directory.',
    cause: error,
  });
}
