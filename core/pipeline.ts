/**
 * Stream composition: `source → codec → cipher → storage` on the way out and
 * `storage → cipher → codec → consumer` on the way back, with back-pressure throughout.
 * WAL-E's objects carry no marker saying whether they are encrypted: the first bytes tell
 * (an OpenPGP packet header versus the lzop magic).
 */
import { PassThrough, Readable, Transform, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { WalrusError, integrityError, keyError } from './errors.js';
import type { Cipher, Codec, Storage } from './types.js';

export interface ObjectTransforms {
  /** null: stored as is (compression none). */
  codec: Codec | null;
  /** null: not encrypted. */
  cipher: Cipher | null;
}

/** Counts the bytes that pass, unchanged (where nothing needs their hash). */
export class ByteCounter extends Transform {
  bytes = 0;
  /** `onBytes` sees each chunk's size as it passes. */
  constructor(private readonly onBytes?: (n: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null, c?: Buffer) => void) {
    this.bytes += chunk.length;
    this.onBytes?.(chunk.length);
    done(null, chunk);
  }
}

/** Counts and hashes the bytes that pass, unchanged. */
export class DigestTap extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha256');
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null, c?: Buffer) => void) {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    done(null, chunk);
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

export interface WrittenObject {
  key: string;
  /** Bytes and SHA-256 of the object as stored (after compression and encryption). */
  storedBytes: number;
  storedSha256: string;
  /** Bytes and SHA-256 of the content before compression. */
  contentBytes: number;
  contentSha256: string;
}

/** The transforms an object goes through on its way out: compress, then encrypt. */
function encodingStages(t: ObjectTransforms): Duplex[] {
  const stages: Duplex[] = [];
  if (t.codec) stages.push(t.codec.compress());
  if (t.cipher) stages.push(t.cipher.encrypt());
  return stages;
}

/** How many bytes `source` would take as stored, without storing it. */
export async function encodedSize(source: Readable, t: ObjectTransforms): Promise<number> {
  const stored = new ByteCounter();
  await pipeline([source, ...encodingStages(t), stored, new Writable({ write: (_c, _e, cb) => cb() })] as any);
  return stored.bytes;
}

/**
 * Write `source` through codec and cipher to `key`. Resolves only when the storage has the complete
 * object; on any failure nothing is visible under `key` (the storage contract) and this rejects.
 */
export async function writeObject(storage: Storage, key: string, source: Readable, t: ObjectTransforms): Promise<WrittenObject> {
  const content = new DigestTap();
  const stored = await storeThrough(storage, key, source, [content, ...encodingStages(t)], new DigestTap());
  return { key, storedBytes: stored.bytes, storedSha256: stored.digest(), contentBytes: content.bytes, contentSha256: content.digest() };
}

/**
 * writeObject without the SHA-256s, for wal-push: nothing reads them there, and the two of a
 * 16 MiB segment cost about as much CPU as compressing it (~10 ms each against 12-16 ms).
 */
export async function writeObjectCounted(storage: Storage, key: string, source: Readable, t: ObjectTransforms): Promise<{ key: string; storedBytes: number; contentBytes: number }> {
  const content = new ByteCounter();
  const stored = await storeThrough(storage, key, source, [content, ...encodingStages(t)], new ByteCounter());
  return { key, storedBytes: stored.bytes, contentBytes: content.bytes };
}

/**
 * Write bytes that are compressed already (a partition worker's output) to `key`, through the
 * cipher only; the same guarantees as writeObject. Returns the stored bytes' size and SHA-256.
 */
export async function writeCompressedObject(storage: Storage, key: string, compressed: Readable, cipher: Cipher | null): Promise<{ bytes: number; sha256: string }> {
  const stored = await storeThrough(storage, key, compressed, encodingStages({ codec: null, cipher }), new DigestTap());
  return { bytes: stored.bytes, sha256: stored.digest() };
}

/** Pipes `source` through `stages` and `stored` (which counts, or hashes, the bytes as stored) into the storage. */
async function storeThrough<Tap extends ByteCounter | DigestTap>(storage: Storage, key: string, source: Readable, stages: Duplex[], stored: Tap): Promise<Tap> {
  const body = new PassThrough({ highWaterMark: 1024 * 1024 });
  const piping = pipeline([source, ...stages, stored, body] as any);
  const putting = storage.put(key, body);
  try {
    await Promise.all([piping, putting]);
  } catch (e) {
    source.destroy();
    body.destroy();
    await Promise.allSettled([piping, putting]);
    throw e;
  }
  return stored;
}

/** Read the first `n` bytes (fewer at end of stream) and return them with a stream of everything. */
export async function peekHead(stream: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const iterator = stream[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let length = 0;
  let done = false;
  while (length < n) {
    const r = await iterator.next();
    if (r.done) {
      done = true;
      break;
    }
    chunks.push(r.value as Buffer);
    length += (r.value as Buffer).length;
  }
  const head = Buffer.concat(chunks);
  async function* all() {
    if (head.length) yield head;
    if (done) return;
    for (;;) {
      const r = await iterator.next();
      if (r.done) return;
      yield r.value as Buffer;
    }
  }
  const rest = Readable.from(all(), { objectMode: false, highWaterMark: 256 * 1024 });
  rest.once('close', () => {
    if (!rest.readableEnded) void iterator.return?.();
  });
  return { head: head.subarray(0, n), stream: rest };
}

/** Chain transforms after `input`; errors of any stage reach the returned stream. */
function chain(input: Readable, ...stages: Duplex[]): Readable {
  if (!stages.length) return input;
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  pipeline([input, ...stages, out] as any).catch(() => {
    /* the error was forwarded to `out` by pipeline's destroy */
  });
  return out;
}

const OPENPGP_HINT = 'set encryption for this server to a key whose secret key (and passphrase) can decrypt it';

export interface ReadOptions extends ObjectTransforms {
  /** The codec an object of this name must be in (by suffix); null: stored as is. */
  expectCodec?: Codec | null;
  /** Sees the object's bytes as stored (before decryption): counts and hashes them. */
  storedTap?: DigestTap;
  /** Called with the raw storage stream, e.g. to destroy it when a sibling transfer fails. */
  onRaw?: (raw: Readable) => void;
}

/**
 * Open `key` for reading, decrypted and decompressed. Resolves to null when the object does not
 * exist. Integrity problems surface as errors of the returned stream (or of this promise when the
 * first bytes already show them): the consumer commits only after the stream ended cleanly.
 */
export async function openObject(storage: Storage, key: string, t: ReadOptions): Promise<Readable | null> {
  let raw = await storage.get(key);
  if (!raw) return null;
  t.onRaw?.(raw);
  if (t.storedTap) {
    // an error of `raw` destroys the tap with it, so the reader sees it
    pipeline(raw, t.storedTap).catch(() => {});
    raw = t.storedTap;
  }
  let { head, stream } = await peekHead(raw, 16);
  const looksEncrypted = !!t.cipher?.recognizes(head) || isOpenPgpHead(head);
  if (looksEncrypted) {
    if (!t.cipher) {
      stream.destroy();
      throw keyError(`${storage.describe(key)} is encrypted (OpenPGP) and this server has no key configured`, { hint: OPENPGP_HINT });
    }
    stream = chain(stream, t.cipher.decrypt());
    ({ head, stream } = await peekHead(stream, 16));
  }
  const codec = t.expectCodec === undefined ? t.codec : t.expectCodec;
  if (codec) {
    if (!codec.recognizes(head)) {
      stream.destroy();
      throw integrityError(`${storage.describe(key)} is not a valid ${codec.name} stream (${head.length ? 'wrong magic bytes' : 'empty object'})`, {
        hint: 'the object is corrupt or was not written by walrus/WAL-E; restore it from another copy',
      });
    }
    stream = chain(stream, codec.decompress());
  }
  return stream;
}

/**
 * OpenPGP binary packet header of a public-key encrypted session key (tag 1) or a symmetric one
 * (tag 3), old or new format: what `gpg -e` and openpgp.js emit first.
 */
export function isOpenPgpHead(head: Buffer): boolean {
  if (!head.length) return false;
  const b = head[0];
  if ((b & 0x80) === 0) return false;
  const tag = b & 0x40 ? b & 0x3f : (b >> 2) & 0x0f;
  return tag === 1 || tag === 3;
}

/** Rethrow anything that is not a WalrusError as an integrity error about `what`. */
export function asIntegrityError(e: unknown, what: string): WalrusError {
  if (e instanceof WalrusError) return e;
  return integrityError(`${what}: ${(e as Error).message ?? String(e)}`, { cause: e });
}
