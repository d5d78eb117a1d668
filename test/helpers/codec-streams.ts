/**
 * What the codec tests (lzo, lz4, zstd) share: running a real CLI on a buffer, running a codec's
 * stream over a buffer fed in chunks, asserting an INTEGRITY error, and object round trips.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Readable, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WalrusError } from '../../core/errors.js';
import { silentLogger } from '../../core/log.js';
import { openObject, writeObject } from '../../core/pipeline.js';
import type { Cipher, Codec, Storage } from '../../core/types.js';
import { manifest as fileStorageManifest } from '../../plugins/file/index.js';
import { manifest as gpgManifest } from '../../plugins/gpg/index.js';
import { SHARED_FIXTURES } from './shared-fixtures.js';

/** Runs `command` with `input` on stdin; its exit code, stdout and stderr. */
export function runTool(command: string, args: string[], input: Buffer): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }));
    child.stdin.on('error', () => {}); // the tool may exit before reading everything on bad input
    child.stdin.end(input);
  });
}

/** `command args` on `input`, which must succeed: its stdout. */
export async function toolOutput(command: string, args: string[], input: Buffer): Promise<Buffer> {
  const r = await runTool(command, args, input);
  assert.equal(r.code, 0, `${command} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

export function chunksOf(input: Buffer, chunkSize: number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let i = 0; i < input.length; i += chunkSize) chunks.push(input.subarray(i, i + chunkSize));
  return chunks;
}

/** Feeds `input` through `transform` (a Buffer in `chunkSize` pieces, as a file read stream would) and collects the output. */
export async function runStream(transform: Duplex, input: Buffer | Iterable<Buffer> | AsyncIterable<Buffer>, chunkSize = 65536): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(Buffer.isBuffer(input) ? chunksOf(input, chunkSize) : input),
    transform,
    new Writable({
      write(chunk: Buffer, _e, cb) {
        out.push(chunk);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

/** `promise` rejects with a one-line WalrusError of kind INTEGRITY (matching `message`, if given). */
export async function assertIntegrity(promise: Promise<unknown>, message?: RegExp): Promise<WalrusError> {
  const error = await promise.then(
    () => assert.fail('expected an INTEGRITY error, the stream finished'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof WalrusError, `expected WalrusError, got ${String(error)}`);
  assert.equal(error.kind, 'INTEGRITY', error.message);
  assert.ok(!error.message.includes('\n'), 'one-line message');
  if (message) assert.match(error.message, message);
  return error;
}

/** The fixture's GnuPG key (WAL-E's gpg fixture) as walrus's gpg cipher. */
export async function fixtureGpgCipher(): Promise<Cipher> {
  const fixture = `${SHARED_FIXTURES}/wal-e-gpg`;
  return (await gpgManifest.create(
    {
      publicKey: await readFile(join(fixture, 'public-key.asc'), 'utf8'),
      secretKey: await readFile(join(fixture, 'secret-key.asc'), 'utf8'),
      passphrase: (await readFile(join(fixture, 'passphrase.txt'), 'utf8')).replace(/\r?\n$/, ''),
    },
    { log: silentLogger, configDirectory: '/tmp', instanceName: 'ops' },
  )) as Cipher;
}

/**
 * writeObject/openObject round trips with `codec` on a file storage in a temp directory: each
 * checks the content comes back and resolves to the object as stored. close() removes it all.
 */
export function objectRoundTrips(codec: Codec) {
  let root = '';
  let storage: Storage | undefined;
  return {
    async roundTrip(key: string, content: Buffer, cipher: Cipher | null): Promise<Buffer> {
      root ||= await mkdtemp(join(tmpdir(), `walrus-${codec.name}-`));
      storage ??= (await fileStorageManifest.create({ path: root, fsync: false }, { log: silentLogger, configDirectory: '/tmp', instanceName: 'file' })) as Storage;
      const written = await writeObject(storage, key, Readable.from(chunksOf(content, 65536)), { codec, cipher });
      assert.equal(written.contentBytes, content.length);
      const stream = await openObject(storage, key, { codec, cipher, expectCodec: codec });
      assert.ok(stream);
      const back: Buffer[] = [];
      for await (const chunk of stream) back.push(chunk as Buffer);
      assert.ok(Buffer.concat(back).equals(content));
      return readFile(join(root, key));
    },
    async close(): Promise<void> {
      await storage?.close?.();
      if (root) await rm(root, { recursive: true, force: true });
    },
  };
}
