/**
 * One partition's decode chain after storage (and after decryption, which stays with the cipher
 * plugin on the main thread): [hash the bytes as stored] → decompress → count the tar → extract.
 *
 * The tar is counted, not hashed: once the stored bytes' SHA-256 equals the sentinel's, they are
 * the bytes backup-push wrote, and decompression (which checks the codec's own checksums) can only
 * give back the tar it compressed. A second SHA-256 over the larger decompressed stream cost about
 * as much as the decompression's checksums on the one big file that bounds a restore. `verify`
 * still checks the tar's SHA-256. For the same reason, when the sentinel records the partition's
 * SHA-256 the codec is told so (storedBytesVerified) and lzo skips its per-block adler32 of the
 * decoded data, which was the largest cost of decoding one big relation file; a WAL-E backup
 * (no recorded SHA-256) keeps every lzop checksum.
 * core/partition-workers.ts runs it inside a worker thread, so that poolSize partitions use
 * poolSize cores; it is plain stream code and runs the same in any thread.
 */
import { PassThrough, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ByteCounter, DigestTap } from './pipeline.js';
import { extractPartition } from './tar-extract.js';
import type { Logger } from './log.js';
import type { Codec } from './types.js';

export interface PartitionDecodeOptions {
  /** null: the partition is stored uncompressed. */
  codec: Codec | null;
  /** Count and hash the input as the object's stored bytes (true when nothing decrypted it first). */
  hashInput: boolean;
  /** See DecompressOptions: the stored SHA-256 is checked against the sentinel after the decode. */
  storedBytesVerified?: boolean;
  dataRoot: string;
  tablespaces: Record<string, string>;
  fsync: boolean;
  log?: Logger;
  /** Sees each piece of decompressed tar as it passes. */
  onTarBytes?: (n: number) => void;
}

export interface Digested {
  bytes: number;
  sha256: string;
}

export interface PartitionDecodeResult {
  files: number;
  /** File data written. */
  bytes: number;
  /** The input as stored, when `hashInput`. */
  stored: Digested | null;
  /** Bytes of tar the partition decompressed to. */
  tar: { bytes: number };
}

export async function decodePartition(input: AsyncIterable<Buffer>, options: PartitionDecodeOptions): Promise<PartitionDecodeResult> {
  const storedTap = options.hashInput ? new DigestTap() : null;
  const tarTap = new ByteCounter(options.onTarBytes);
  const stages: Duplex[] = [];
  if (storedTap) stages.push(storedTap);
  if (options.codec) stages.push(options.codec.decompress({ storedBytesVerified: options.storedBytesVerified ?? false }));
  stages.push(tarTap);
  const tar = new PassThrough({ highWaterMark: 256 * 1024 });
  pipeline([input, ...stages, tar] as any).catch(() => {
    /* forwarded to `tar`, where the extraction sees it */
  });
  const result = await extractPartition(tar, options.dataRoot, { tablespaceMap: options.tablespaces, log: options.log, fsync: options.fsync });
  return {
    files: result.files,
    bytes: result.bytes,
    stored: storedTap ? { bytes: storedTap.bytes, sha256: storedTap.digest() } : null,
    tar: { bytes: tarTap.bytes },
  };
}
