/**
 * One partition's encode chain before the cipher and the storage (both plugin instances of the
 * main thread): read the files → pack the tar → count the tar → compress.
 *
 * The tar is counted, not hashed. Every codec checksums what it compresses (lzop: each block's
 * crc32; zstd: the content's XXH64; LZ4 frames: the content's xxHash-32) and its decompressor
 * verifies it, and the main thread records the SHA-256 of the object as stored: together they
 * cover what a SHA-256 of the tar covered. That SHA-256 was the largest single cost of packing
 * one big relation file (0.8 s of the 3.2 s its worker took for 1 GiB); sentinels of earlier
 * walrus versions carry it (tarSha256) and `verify` still checks it there.
 *
 * core/partition-workers.ts runs it in a worker thread, so that poolSize partitions use poolSize
 * cores: packing and compression are CPU work, and on the main thread they held a whole
 * backup on one core. It is plain stream code and runs the same in any thread.
 */
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ByteCounter } from './pipeline.js';
import { packPartition, type InlineFile, type Partition } from './tar-partition.js';
import type { Logger } from './log.js';
import type { Codec } from './types.js';

export interface PartitionEncodeOptions {
  /** null: stored uncompressed (compression none). */
  codec: Codec | null;
  inlineFiles?: InlineFile[];
  log?: Logger;
  /** Member bytes read from disk (progress). */
  onBytes?: (n: number) => void;
  /** Awaited before each disk read (rate limit). */
  throttle?: (n: number) => Promise<void>;
}

export interface PartitionEncodeResult {
  /** Bytes of the partition's tar, before compression: the sentinel's tarBytes. */
  tarBytes: number;
}

export interface EncodedPartition {
  /** The compressed tar. Fails (and stops reading the files) when anything on the way fails. */
  output: Readable;
  /** Resolves once `output` was read to its end. */
  result: Promise<PartitionEncodeResult>;
}

export function encodePartition(partition: Partition, options: PartitionEncodeOptions): EncodedPartition {
  const tar = packPartition(partition, { log: options.log, onBytes: options.onBytes, throttle: options.throttle, inlineFiles: options.inlineFiles });
  const tarTap = new ByteCounter();
  const stages: Duplex[] = [tarTap];
  if (options.codec) stages.push(options.codec.compress());
  const output = new PassThrough({ highWaterMark: 1024 * 1024 });
  const result = pipeline([tar, ...stages, output] as any).then(() => ({ tarBytes: tarTap.bytes }));
  // The failure also reaches `output` (pipeline destroys it), where the reader sees it first.
  result.catch(() => undefined);
  return { output, result };
}
