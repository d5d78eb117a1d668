/**
 * S3 storage: the AWS SDK v3 behind the Storage interface. Loaded only through the plugin's
 * create(), so nothing here slows down a command that does not talk to S3.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  S3Client,
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  UploadPartCommand,
  type CompletedPart,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3ClientConfig,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { storageError, WalrusError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { PluginContext, PutOptions, Storage, StorageObjectInfo } from '../../core/types.js';
import { S3_DEFAULTS, type S3StorageOptions } from './index.js';

const MiB = 1024 * 1024;
/** DeleteObjects takes at most this many keys per request. */
const DELETE_BATCH = 1000;
/** The SDK's own switch for its "Node version support ends" notice (@aws-sdk/core emitWarningIfUnsupportedVersion). */
const NODE_VERSION_WARNING_SWITCH = 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED';

type SdkError = Error & { code?: string; Code?: string; $metadata?: { httpStatusCode?: number; attempts?: number }; $fault?: string };

interface ResolvedOptions {
  bucket: string;
  partSize: number;
  uploadConcurrency: number;
  maxAttempts: number;
  storageClass?: string;
  serverSideEncryption?: 'AES256' | 'aws:kms';
  sseKmsKeyId?: string;
}

/**
 * The SDK prints a NodeVersionSupportWarning on Node < 22 when a client is created. walrus runs
 * once per archive_command, so it would land in PostgreSQL's log for every WAL segment, telling
 * the operator nothing they can act on in walrus. The SDK checks an env switch at construction
 * time; we set it only around our own construction (and leave a user's explicit setting alone),
 * so other warnings, and other code in the process, are unaffected.
 */
function createClientQuietly(config: S3ClientConfig): S3Client {
  const previous = process.env[NODE_VERSION_WARNING_SWITCH];
  if (previous !== undefined) return new S3Client(config);
  process.env[NODE_VERSION_WARNING_SWITCH] = 'true';
  try {
    return new S3Client(config);
  } finally {
    delete process.env[NODE_VERSION_WARNING_SWITCH];
  }
}

function isNotFound(e: unknown): boolean {
  const err = e as SdkError;
  if (err?.name === 'NoSuchBucket' || err?.Code === 'NoSuchBucket') return false;
  return err?.name === 'NoSuchKey' || err?.name === 'NotFound' || err?.$metadata?.httpStatusCode === 404;
}

/** One line naming the failure, without request details (signatures, headers) or credentials. */
function causeText(e: unknown): string {
  const err = e as SdkError;
  if (!(err instanceof Error)) return String(e);
  const parts: string[] = [];
  const code = err.code && err.code !== err.name ? ` ${err.code}` : '';
  const message = (err.message || '').split('\n')[0].trim();
  parts.push(`${err.name}${code}${message && message !== err.name ? `: ${message}` : ''}`);
  const status = err.$metadata?.httpStatusCode;
  if (status) parts.push(`HTTP ${status}`);
  return parts.join(', ');
}

const CREDENTIAL_ERRORS = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'CredentialsProviderError',
  'AllAccessDisabled',
]);
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

export class S3Storage implements Storage {
  private readonly client: S3Client;
  private readonly options: ResolvedOptions;
  private readonly log: Logger;
  /** Where the bucket lives, for hints: the endpoint or the region. */
  private readonly location: string;

  static create(options: S3StorageOptions, context: PluginContext): S3Storage {
    return new S3Storage(options, context);
  }

  constructor(options: S3StorageOptions, context: PluginContext) {
    this.log = context.log;
    const secrets = [options.secretAccessKey, options.sessionToken].filter((s): s is string => !!s);
    if (secrets.length) this.log.addSecrets(secrets);
    this.options = {
      bucket: options.bucket,
      partSize: (options.partSizeMB ?? S3_DEFAULTS.partSizeMB) * MiB,
      uploadConcurrency: options.uploadConcurrency ?? S3_DEFAULTS.uploadConcurrency,
      maxAttempts: options.maxAttempts ?? S3_DEFAULTS.maxAttempts,
      storageClass: options.storageClass,
      serverSideEncryption: options.serverSideEncryption,
      sseKmsKeyId: options.sseKmsKeyId,
    };
    const requestTimeoutMs = options.requestTimeoutMs ?? S3_DEFAULTS.requestTimeoutMs;
    // An S3-compatible endpoint rarely cares about the region, but SigV4 needs one.
    const region = options.region ?? (options.endpoint ? 'us-east-1' : undefined);
    this.location = options.endpoint ?? (region ? `region ${region}` : 'the default region');
    this.client = createClientQuietly({
      region,
      endpoint: options.endpoint,
      forcePathStyle: options.forcePathStyle,
      credentials: options.accessKeyId
        ? { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey!, sessionToken: options.sessionToken }
        : undefined,
      maxAttempts: this.options.maxAttempts,
      retryMode: 'standard',
      requestHandler: {
        connectionTimeout: options.connectTimeoutMs ?? S3_DEFAULTS.connectTimeoutMs,
        // Inactivity, not total time: a large part on a slow link is fine as long as bytes move;
        // a stalled connection (request or response body) fails with TimeoutError and is retried.
        socketTimeout: requestTimeoutMs,
      },
      // Checksums only where S3 requires them (DeleteObjects): many S3-compatible servers reject
      // the SDK's default aws-chunked CRC uploads, and walrus's codecs and ciphers carry their own.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // The SDK logs nothing by default; keep it that way (its debug output includes request details).
    });
  }

  describe(key?: string): string {
    return `s3://${this.options.bucket}/${key ?? ''}`;
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  // ------------------------------------------------------------------ put

  async put(key: string, body: Readable, _options?: PutOptions): Promise<void> {
    let bodyError: unknown;
    const noteBodyError = (e: unknown) => (bodyError ??= e);
    body.once('error', noteBodyError);
    try {
      // Look at up to one part first: an object that fits is one PutObject from a buffer (which
      // the SDK can retry); anything larger goes multipart, each part a retryable buffer too.
      // The size hint is not trusted for this: the bytes decide.
      const head = await readUpTo(body, this.options.partSize);
      if (head.ended) {
        const data = Buffer.concat(head.chunks);
        const out = await this.client.send(new PutObjectCommand({ ...this.writeParams(key), Body: data, ContentLength: data.length }));
        this.noteRetries('put', key, out.$metadata.attempts);
      } else {
        await this.multipartUpload(key, head.chunks, head.rest);
      }
    } catch (e) {
      // The source failed (a read error, a codec's INTEGRITY error): that is the caller's error,
      // not a storage failure. Nothing became visible either way.
      if (bodyError !== undefined && (e === bodyError || (e as Error)?.cause === bodyError)) throw bodyError;
      body.destroy();
      throw this.failure('upload', key, e);
    } finally {
      body.removeListener('error', noteBodyError);
    }
  }

  /**
   * Multipart upload from a fixed pool of part buffers (uploadConcurrency being sent + 1 filling),
   * reused from part to part: memory stays at partSize x (uploadConcurrency + 1) whatever the
   * object size. (lib-storage's Upload concatenates a fresh buffer per part and keeps reading the
   * body after a part failed; a 50 MB put with 5 MB x 2 grew heap+arrayBuffers by 41 MB with it in
   * three runs, by 0-25 MB with this, which is what the contract suite's 40 MB bound needs.) Each part is a Buffer, so the SDK retries it as is.
   * Any failure aborts the upload: its parts never become a visible object.
   */
  private async multipartUpload(key: string, firstChunks: Buffer[], rest: AsyncIterator<unknown>): Promise<void> {
    const { partSize, uploadConcurrency } = this.options;
    const created = await this.client.send(new CreateMultipartUploadCommand(this.writeParams(key)));
    const uploadId = created.UploadId!;
    const parts: CompletedPart[] = [];
    const inFlight = new Set<Promise<void>>();
    const free: Buffer[] = [];
    let allocated = 0;
    let failed: { error: unknown } | undefined;
    // retries of any request of this upload, CreateMultipartUpload included, are reported once at the end
    let retries = (created.$metadata.attempts ?? 1) - 1;

    let pending = firstChunks;
    let ended = false;
    // MD5 of the whole object, parts in order: recognises our own object if a retried Complete fails
    const objectMd5 = createHash('md5');
    let totalBytes = 0;
    /** Copies the next bytes of the body into `target`; returns how many (less than full only at the end). */
    const fill = async (target: Buffer): Promise<number> => {
      let filled = 0;
      while (filled < target.length) {
        if (!pending.length) {
          if (ended) break;
          const next = await rest.next();
          if (next.done) {
            ended = true;
            break;
          }
          pending = [Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array)];
        }
        const chunk = pending[0];
        const n = chunk.copy(target, filled);
        filled += n;
        if (n === chunk.length) pending.shift();
        else pending[0] = chunk.subarray(n);
      }
      return filled;
    };

    try {
      for (let partNumber = 1; !failed; partNumber++) {
        // every buffer is free or in flight here, so the race has something to wait for
        while (!free.length && allocated > uploadConcurrency && !failed) await Promise.race(inFlight);
        if (failed) break;
        const buffer = free.pop() ?? (allocated++, Buffer.allocUnsafe(partSize));
        const filled = await fill(buffer);
        objectMd5.update(buffer.subarray(0, filled));
        totalBytes += filled;
        if (filled === 0) {
          free.push(buffer);
          break;
        }
        const sending = this.client
          .send(new UploadPartCommand({ Bucket: this.options.bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: buffer.subarray(0, filled), ContentLength: filled }))
          .then(
            (out) => {
              parts.push({ PartNumber: partNumber, ETag: out.ETag });
              retries += (out.$metadata.attempts ?? 1) - 1;
              free.push(buffer);
            },
            (error) => void (failed ??= { error }),
          )
          .finally(() => inFlight.delete(sending));
        inFlight.add(sending);
        if (filled < partSize) break;
      }
      await Promise.all(inFlight);
      if (failed) throw failed.error;
      parts.sort((a, b) => a.PartNumber! - b.PartNumber!);
      let done;
      try {
        done = await this.client.send(
          new CompleteMultipartUploadCommand({ Bucket: this.options.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
        );
      } catch (e) {
        // A Complete whose response was lost (connection reset) may have succeeded: its retries then
        // fail (NoSuchUpload, or a 500 from some servers) although the object is whole. Accept it
        // only when the stored object is ours: same size and an ETag of exactly these bytes.
        if ((e as SdkError)?.$metadata?.attempts! > 1 && (await this.isCompletedUpload(key, parts, totalBytes, objectMd5.digest('hex')))) {
          this.log.warn(`upload of ${this.describe(key)} completed although the retries of its completion failed`, { detail: causeText(e), structured: { action: 's3-upload', key, state: 'retried' } });
          return;
        }
        throw e;
      }
      this.noteRetries('upload', key, retries + (done.$metadata.attempts ?? 1));
    } catch (e) {
      await Promise.allSettled(inFlight);
      try {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: key, UploadId: uploadId }));
      } catch (abortError) {
        this.log.warn(`could not abort the multipart upload to ${this.describe(key)}; its parts stay stored (invisible) until a bucket lifecycle rule removes them`, {
          detail: causeText(abortError),
          hint: 'add an AbortIncompleteMultipartUpload lifecycle rule to the bucket',
        });
      }
      throw e;
    }
  }

  /** True when `key` holds the object these parts make: its size, and an ETag of S3's multipart form or a plain MD5. */
  private async isCompletedUpload(key: string, parts: CompletedPart[], size: number, md5: string): Promise<boolean> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: key }));
      const etag = (out.ETag ?? '').replace(/"/g, '');
      const partDigests = parts.map((p) => Buffer.from((p.ETag ?? '').replace(/"/g, ''), 'hex'));
      const multipartEtag = `${createHash('md5').update(Buffer.concat(partDigests)).digest('hex')}-${parts.length}`;
      return out.ContentLength === size && (etag === multipartEtag || etag === md5);
    } catch {
      return false;
    }
  }

  private writeParams(key: string) {
    const o = this.options;
    return {
      Bucket: o.bucket,
      Key: key,
      ...(o.storageClass && { StorageClass: o.storageClass as any }),
      ...(o.serverSideEncryption && { ServerSideEncryption: o.serverSideEncryption }),
      ...(o.sseKmsKeyId && { SSEKMSKeyId: o.sseKmsKeyId }),
    };
  }

  // ------------------------------------------------------------------ get / head

  async get(key: string): Promise<Readable | null> {
    let first: GetObjectCommandOutput;
    try {
      first = await this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key }));
    } catch (e) {
      if (isNotFound(e)) return null;
      throw this.failure('download', key, e);
    }
    this.noteRetries('download', key, first.$metadata.attempts);
    return Readable.from(this.objectBytes(key, first), { objectMode: false });
  }

  /**
   * The object's bytes. A body that breaks off mid-way (reset, stalled past the timeout, or ended
   * short of Content-Length) is resumed with a Range request pinned to the same ETag, up to
   * maxAttempts; after that it errors with STORAGE. It never ends early as if complete.
   */
  private async *objectBytes(key: string, first: GetObjectCommandOutput): AsyncGenerator<Buffer> {
    const expected = first.ContentLength;
    const etag = first.ETag;
    let source = first.Body as Readable;
    let received = 0;
    let attempt = 1;
    try {
      for (;;) {
        try {
          for await (const chunk of source) {
            received += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
          if (expected === undefined || received === expected) return;
          throw Object.assign(new Error(`body ended after ${received} of ${expected} bytes`), { name: 'TruncatedBody' });
        } catch (e) {
          source.destroy();
          if (e instanceof WalrusError) throw e;
          if (attempt >= this.options.maxAttempts || expected === undefined || !etag)
            throw this.failure('download', key, e, { attempts: attempt, detail: `the body broke off after ${received} of ${expected ?? '?'} bytes` });
          attempt++;
          this.log.warn(`download of ${this.describe(key)} broke off, resuming`, {
            detail: `${causeText(e)}; resuming at byte ${received} of ${expected} (attempt ${attempt} of ${this.options.maxAttempts})`,
            structured: { action: 'get', key, state: 'retry', attempt },
          });
          await sleep(Math.min(100 * 2 ** (attempt - 2), 5000) * (0.5 + Math.random()));
          source = await this.resume(key, received, expected, etag);
        }
      }
    } finally {
      source.destroy();
    }
  }

  private async resume(key: string, offset: number, expected: number, etag: string): Promise<Readable> {
    let out: GetObjectCommandOutput;
    try {
      out = await this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key, Range: `bytes=${offset}-`, IfMatch: etag }));
    } catch (e) {
      const err = e as SdkError;
      if (err?.name === 'PreconditionFailed' || err?.$metadata?.httpStatusCode === 412)
        throw storageError(`download of ${this.describe(key)} broke off and the object changed before it could be resumed`, {
          hint: 'another writer replaced the object; retry the command',
          cause: e,
        });
      throw this.failure('download', key, e, { detail: `the body broke off; resuming at byte ${offset} failed` });
    }
    if (out.$metadata.httpStatusCode !== 206 || out.ContentLength !== expected - offset) {
      (out.Body as Readable | undefined)?.destroy();
      throw storageError(`download of ${this.describe(key)} broke off and the server did not honour a range request to resume it`, {
        detail: `asked for bytes ${offset}-, got HTTP ${out.$metadata.httpStatusCode} with ${out.ContentLength} bytes`,
      });
    }
    return out.Body as Readable;
  }

  async head(key: string): Promise<StorageObjectInfo | null> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: key }));
      this.noteRetries('head', key, out.$metadata.attempts);
      return { key, size: out.ContentLength ?? 0, lastModified: out.LastModified ?? new Date(0) };
    } catch (e) {
      // HEAD responses have no body, so a missing bucket also reads as 404 here: callers that
      // go on to put/get/list get the NoSuchBucket error from those.
      if (isNotFound(e)) return null;
      throw this.failure('head', key, e);
    }
  }

  // ------------------------------------------------------------------ list / delete

  async *list(prefix: string): AsyncIterable<StorageObjectInfo> {
    let token: string | undefined;
    do {
      let out;
      try {
        out = await this.client.send(new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: prefix, ContinuationToken: token }));
      } catch (e) {
        throw this.failure('list', `${prefix}*`, e);
      }
      this.noteRetries('list', `${prefix}*`, out.$metadata.attempts);
      for (const o of out.Contents ?? []) {
        if (o.Key === undefined) continue;
        yield { key: o.Key, size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) };
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const what = batch.length === 1 ? batch[0] : `${batch[0]} (and ${batch.length - 1} more)`;
      let out;
      try {
        out = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.options.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
        );
      } catch (e) {
        throw this.failure('delete', what, e);
      }
      this.noteRetries('delete', what, out.$metadata.attempts);
      const errors = out.Errors ?? [];
      if (errors.length) {
        const shown = errors
          .slice(0, 3)
          .map((err) => `${err.Key}: ${err.Code}${err.Message ? ` (${err.Message})` : ''}`)
          .join('; ');
        throw storageError(`delete of ${errors.length} of ${batch.length} key(s) in s3://${this.options.bucket}/ failed`, {
          detail: `${shown}${errors.length > 3 ? `; and ${errors.length - 3} more` : ''}`,
          hint: errors.some((err) => err.Code === 'AccessDenied') ? 'the credentials may not be allowed s3:DeleteObject on this bucket' : 'run the command again',
        });
      }
    }
  }

  // ------------------------------------------------------------------ errors & retries

  private noteRetries(action: string, key: string, attempts: number | undefined): void {
    if (attempts && attempts > 1)
      this.log.warn(`${action} of ${this.describe(key)} succeeded after ${attempts} attempts`, {
        structured: { action: `s3-${action}`, key, attempts, state: 'retried' },
      });
  }

  private failure(action: string, key: string, e: unknown, o: { attempts?: number; detail?: string } = {}): WalrusError {
    if (e instanceof WalrusError) return e;
    const err = e as SdkError;
    const attempts = o.attempts ?? err?.$metadata?.attempts;
    const tried = attempts ? `after ${attempts} attempt(s)` : undefined;
    const target = this.describe(key);
    let hint: string;
    if (err?.name === 'NoSuchBucket' || err?.Code === 'NoSuchBucket')
      return storageError(`${action} of ${target} failed: bucket '${this.options.bucket}' does not exist at ${this.location}`, {
        detail: causeText(e),
        hint: 'check the bucket name and region/endpoint in the storage config, or create the bucket',
        cause: e,
      });
    if (CREDENTIAL_ERRORS.has(err?.name))
      hint = 'check the credentials (accessKeyId/secretAccessKey, or the AWS credential chain: env, profile, instance role) and the bucket policy';
    else if (NETWORK_CODES.has(err?.code ?? '') || err?.name === 'TimeoutError')
      hint = `check that ${this.location} is reachable (endpoint, DNS, firewall, proxy); raise maxAttempts or requestTimeoutMs for a flaky link`;
    else if (err?.$fault === 'server' || (err?.$metadata?.httpStatusCode ?? 0) >= 500) hint = 'the S3 service failed; run the command again later';
    else hint = 'check the storage config; run with --debug for the stack';
    return storageError(`${action} of ${target} failed${tried ? ` ${tried}` : ''}: ${causeText(e)}`, { detail: o.detail, hint, cause: e });
  }
}

/** Reads until more than `limit` bytes arrived or the stream ended; never more than one chunk past. */
async function readUpTo(stream: Readable, limit: number): Promise<{ chunks: Buffer[]; ended: boolean; rest: AsyncIterator<unknown> }> {
  const chunks: Buffer[] = [];
  let length = 0;
  const rest = stream[Symbol.asyncIterator]();
  for (;;) {
    const next = await rest.next();
    if (next.done) return { chunks, ended: true, rest };
    const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array);
    chunks.push(chunk);
    length += chunk.length;
    if (length > limit) return { chunks, ended: false, rest };
  }
}

