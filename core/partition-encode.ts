/**
 * One partition's encode chain before the cipher and the storage (both plugin instances of the
 * main thread): read the files → pack the tar → hash the tar → compress.
 *
 * core/partition-workers.ts runs it in a worker thread, so that poolSize partitions use poolSize
 * cores: packing, SHA-256 and compression are CPU work, and on the main thread they held a whole
 * backup on one core. It is plain stream code and runs the same in any thread.
 */
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DigestTap } from './pipeline.js';
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
  /** The partition's tar, before compression: the sentinel's tarBytes and tarSha256. */
  tarBytes: number;
  tarSha256: string;
}

export interface EncodedPartition {
  /** The compressed tar. Fails (and stops reading the files) when anything on the way fails. */
  output: Readable;
  /** Resolves once `output` was read to its end. */
  result: Promise<PartitionEncodeResult>;
}

export function encodePartition(partition: Partition, options: PartitionEncodeOptions): EncodedPartition {
  const tar = packPartition(partition, { log: options.log, onBytes: options.onBytes, throttle: options.throttle, inlineFiles: options.inlineFiles });
  const tarTap = new DigestTap();
  const stages: Duplex[] = [tarTap];
  if (options.codec) stages.push(options.codec.compress());
  const output = new PassThrough({ highWaterMark: 1024 * 1024 });
  const result = pipeline([tar, ...stages, output] as any).then(() => ({ tarBytes: tarTap.bytes, tarSha256: tarTap.digest() }));
  // The failure also reaches `output` (pipeline destroys it), where the reader sees it first.
  result.catch(() => undefined);
  return { output, result };
}
