/**
 * Messages between the main thread and a partition worker (core/partition-worker.ts), which
 * decodes partitions for backup-fetch and encodes them for backup-push, and how errors cross
 * the thread boundary: a WalrusError keeps its kind, message, detail and
 * hint (so exit codes and messages are those of a decode on the main thread); any other error
 * keeps its message and errno fields.
 */
import { WalrusError, type ErrorKind } from './errors.js';
import type { LogFields, LogLevel } from './log.js';
import type { PartitionDecodeResult } from './partition-decode.js';
import type { PartitionEncodeResult } from './partition-encode.js';
import type { Partition, InlineFile } from './tar-partition.js';

/** backup-fetch: decode one partition's bytes and extract them under dataRoot. */
export interface PartitionJob {
  /** A plugin spec (`lzo`, `./my-codec.js`) resolved like the server's compression, or `none`. */
  codecSpec: string;
  configDirectory: string;
  hashInput: boolean;
  /** The partition's stored SHA-256 is recorded and checked after it: the codec may skip per-block data checksums. */
  storedBytesVerified: boolean;
  dataRoot: string;
  tablespaces: Record<string, string>;
  fsync: boolean;
}

/** backup-push: read, pack, hash and compress one partition; the compressed bytes go back to the main thread. */
export interface PartitionEncodeJob {
  /** A plugin spec resolved like the server's compression, or `none`. */
  codecSpec: string;
  configDirectory: string;
  partition: Partition;
  inlineFiles: InlineFile[];
  /** Ask the main thread before each disk read (`--rate-limit`, shared by every partition). */
  throttled: boolean;
}

export type ToWorker =
  | { type: 'start'; job: PartitionJob }
  | { type: 'encode'; job: PartitionEncodeJob }
  /** Encoding: the main thread consumed this many output bytes (the worker keeps a few chunks in flight). */
  | { type: 'credit'; bytes: number }
  /** Encoding: the read asked for with `throttle` may go. */
  | { type: 'go' }
  /** Bytes of the object (decrypted when it was encrypted); the worker acknowledges each once consumed. */
  | { type: 'chunk'; data: Uint8Array }
  | { type: 'end' }
  /** The source failed, or another partition did: the worker fails with this error and cleans up. */
  | { type: 'abort'; error: SerializedError };

export type FromWorker =
  | { type: 'ack'; bytes: number }
  | { type: 'log'; level: LogLevel; message: string; fields?: LogFields }
  | { type: 'done'; result: PartitionDecodeResult }
  /** Encoding: compressed bytes, in order. */
  | { type: 'output'; data: Uint8Array }
  /** Encoding: bytes read from the data directory since the last report (progress). */
  | { type: 'read'; bytes: number }
  /** Encoding: asks to read this many bytes (rate limit); answered with `go`. */
  | { type: 'throttle'; bytes: number }
  | { type: 'encoded'; result: PartitionEncodeResult }
  | { type: 'failed'; error: SerializedError };

export interface SerializedError {
  kind?: ErrorKind;
  name: string;
  message: string;
  detail?: string;
  hint?: string;
  code?: string;
  syscall?: string;
  stack?: string;
}

export function serializeError(e: unknown): SerializedError {
  if (e instanceof WalrusError) return { kind: e.kind, name: e.name, message: e.message, detail: e.detail, hint: e.hint, stack: e.stack };
  if (e instanceof Error) {
    const errno = e as NodeJS.ErrnoException;
    return { name: e.name, message: e.message, code: errno.code, syscall: errno.syscall, stack: e.stack };
  }
  return { name: 'Error', message: String(e) };
}

export function deserializeError(s: SerializedError): Error {
  if (s.kind) {
    const e = new WalrusError(s.kind, s.message, { detail: s.detail, hint: s.hint });
    if (s.stack) e.stack = s.stack;
    return e;
  }
  const e = new Error(s.message) as NodeJS.ErrnoException;
  e.name = s.name;
  if (s.code !== undefined) e.code = s.code;
  if (s.syscall !== undefined) e.syscall = s.syscall;
  if (s.stack) e.stack = s.stack;
  return e;
}
