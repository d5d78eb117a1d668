/**
 * One partition's decode chain after storage (and after decryption, which stays with the cipher
 * plugin on the main thread): [hash the bytes as stored] → decompress → hash the tar → extract.
 * core/partition-workers.ts runs it inside a worker thread, so that poolSize partitions use
 * poolSize cores; it is plain stream code and runs the same in any thread.
 */
import { PassThrough, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DigestTap } from './pipeline.js';
import { extractPartition } from './tar-extract.js';
import type { Logger } from './log.js';
import type { Codec } from './types.js';

export interface PartitionDecodeOptions {
  /** null: the partition is stored uncompressed. */
  codec: Codec | null;
  /** Count and hash the input as the object's stored bytes (true when nothing decrypted it first). */
  hashInput: boolean;
  dataRoot: string;
  tablespaces: Record<string, string>;
  fsync: boolean;
  log?: Logger;
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
  tar: Digested;
}

export async function decodePartition(input: AsyncIterable<Buffer>, options: PartitionDecodeOptions): Promise<PartitionDecodeResult> {
  const storedTap = options.hashInput ? new DigestTap() : null;
  const tarTap = new DigestTap();
  const stages: Duplex[] = [];
  if (storedTap) stages.push(storedTap);
  if (options.codec) stages.push(options.codec.decompress());
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
    tar: { bytes: tarTap.bytes, sha256: tarTap.digest() },
  };
}
