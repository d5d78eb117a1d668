/**
 * Partitions encoded in worker threads (PartitionWorkerPool.encode, core/partition-worker.ts):
 * the same tar as encodePartition on this thread (real files in a temp dir, real lzop to read
 * the output back), progress and rate-limit hooks, the same error as on this thread for a file
 * that cannot be read, an aborted worker not reused, and output back-pressure.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import { PartitionWorkerPool } from '../../core/partition-workers.js';
import { encodePartition } from '../../core/partition-encode.js';
import type { PartitionEncodeJob } from '../../core/partition-worker-protocol.js';
import type { InlineFile, Partition } from '../../core/tar-partition.js';
import type { Codec, DataFile } from '../../core/types.js';
import { WalrusError, isWalrusError } from '../../core/errors.js';
import { silentLogger } from '../../core/log.js';
import { createLzoCodec } from '../../plugins/lzo/index.js';

const MiB = 1024 * 1024;
const unlzop = (bytes: Buffer) => execFileSync('lzop', ['-dc'], { input: bytes, maxBuffer: 256 * MiB });
const tarMembers = (tar: Buffer) => execFileSync('tar', ['-tf', '-'], { input: tar, maxBuffer: 16 * MiB }).toString().split('\n').filter((l) => l !== '');
const tarMember = (tar: Buffer, name: string) => execFileSync('tar', ['-xOf', '-', name], { input: tar, maxBuffer: 64 * MiB });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Whole seconds: a tar header keeps no more. */
const MTIME = new Date('2024-05-06T07:08:09Z');

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The tar encodePartition makes on this thread (compressed by `codec`, or plain with null). */
async function encodedHere(partition: Partition, codec: Codec | null, inlineFiles: InlineFile[] = []) {
  const { output, result } = encodePartition(partition, { codec, inlineFiles });
  const bytes = await collect(output);
  return { bytes, result: await result };
}

/** The pool's workers (private fields), to tell whether an aborted worker was reused. */
const internals = (p: PartitionWorkerPool) => p as unknown as { idle: Worker[]; all: Set<Worker> };

let work: string;
let pool: PartitionWorkerPool;
let dirs = 0;

async function newDataDir(): Promise<string> {
  const dir = path.join(work, `data-${++dirs}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

async function fileOf(root: string, relativePath: string, content: Buffer): Promise<DataFile> {
  const absolutePath = path.join(root, relativePath);
  await mkdir(path.dirname(absolutePath), { recursive: true });
  await writeFile(absolutePath, content, { mode: 0o600 });
  return { relativePath, absolutePath, type: 'file', size: content.length, mode: 0o100600, mtime: MTIME };
}

function dirOf(root: string, relativePath: string): DataFile {
  return { relativePath, absolutePath: path.join(root, relativePath), type: 'directory', size: 0, mode: 0o40700, mtime: MTIME };
}

function partitionOf(files: DataFile[], number = 0): Partition {
  return { number, files, bytes: files.reduce((s, f) => s + (f.type === 'file' ? f.size : 0), 0) };
}

const jobFor = (partition: Partition, o: Partial<PartitionEncodeJob> = {}): PartitionEncodeJob => ({
  codecSpec: 'lzo',
  configDirectory: work,
  partition,
  inlineFiles: [],
  throttled: false,
  ...o,
});

/** A directory, a small file, a file of a few MiB (several of the worker's 512 KiB batches). */
async function mixedPartition() {
  const root = await newDataDir();
  const small = Buffer.from('15\n');
  const big = randomBytes(3 * MiB + 12_345);
  const files = [dirOf(root, 'base'), dirOf(root, 'base/1'), await fileOf(root, 'PG_VERSION', small), await fileOf(root, 'base/1/16384', big)];
  return { root, small, big, partition: partitionOf(files) };
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'walrus-partition-encode-workers-'));
  pool = new PartitionWorkerPool(silentLogger);
});

after(async () => {
  await pool.close();
  await rm(work, { recursive: true, force: true });
});

describe('PartitionWorkerPool.encode', () => {
  it('lzo: lzop reads back the tar whose size is reported, the same tar as encodePartition on this thread', async () => {
    const { big, small, partition } = await mixedPartition();
    const label = Buffer.from('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n');
    const inlineFiles: InlineFile[] = [{ name: 'backup_label', content: label, mtime: MTIME }];

    const { output, result } = pool.encode(jobFor(partition, { inlineFiles }));
    const compressed = await collect(output);
    const r = await result;
    const tar = unlzop(compressed);
    assert.equal(r.tarBytes, tar.length);

    const here = await encodedHere(partition, createLzoCodec(), inlineFiles);
    const tarHere = unlzop(here.bytes);
    assert.ok(tar.equals(tarHere), 'the worker packed another tar than encodePartition on this thread');
    assert.deepEqual(r, here.result);

    assert.deepEqual(tarMembers(tar), ['base/', 'base/1/', 'PG_VERSION', 'base/1/16384', 'backup_label']);
    assert.ok(tarMember(tar, 'base/1/16384').equals(big));
    assert.ok(tarMember(tar, 'PG_VERSION').equals(small));
    assert.ok(tarMember(tar, 'backup_label').equals(label));
  });

  it('none: the output is the tar itself', async () => {
    const { partition } = await mixedPartition();
    const { output, result } = pool.encode(jobFor(partition, { codecSpec: 'none' }));
    const bytes = await collect(output);
    const r = await result;
    const here = await encodedHere(partition, null);
    assert.ok(bytes.equals(here.bytes), 'not the tar encodePartition packs uncompressed');
    assert.equal(r.tarBytes, bytes.length);
    assert.deepEqual(tarMembers(bytes), ['base/', 'base/1/', 'PG_VERSION', 'base/1/16384']);
  });

  it('onBytesRead counts every listed byte read; with throttled, each read waits for the throttle, which is asked for the same bytes', async () => {
    const root = await newDataDir();
    const files = [
      await fileOf(root, 'base/1/1', randomBytes(2 * MiB + 1)),
      await fileOf(root, 'base/1/2', Buffer.from('tiny')),
      await fileOf(root, 'base/1/3', randomBytes(700_000)),
    ];
    const partition = partitionOf(files);
    const listed = files.reduce((s, f) => s + f.size, 0);
    assert.equal(partition.bytes, listed);

    // not throttled: progress only
    let read = 0;
    const plain = pool.encode(jobFor(partition), { onBytesRead: (n) => (read += n) });
    await collect(plain.output);
    await plain.result;
    assert.equal(read, listed);

    // throttled: the first read is held until released; nothing may be read meanwhile
    let readThrottled = 0;
    const asked: number[] = [];
    let done = 0;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const throttled = pool.encode(jobFor(partition, { throttled: true }), {
      onBytesRead: (n) => (readThrottled += n),
      throttle: async (n) => {
        asked.push(n);
        if (asked.length === 1) await held;
        else await sleep(5);
        done++;
      },
    });
    const outputRead = collect(throttled.output);
    for (const deadline = Date.now() + 10_000; asked.length === 0; await sleep(10)) if (Date.now() > deadline) assert.fail('the worker never asked the throttle');
    await sleep(150);
    assert.equal(asked.length, 1, 'the worker asked again before the first throttle let it go');
    assert.equal(readThrottled, 0, 'the worker read before the throttle let it go');
    release();
    const tar = unlzop(await outputRead);
    const r = await throttled.result;
    assert.equal(r.tarBytes, tar.length);
    assert.ok(asked.length > 1, `asked ${asked.length} times`);
    assert.equal(done, asked.length, 'a throttle call was not awaited to its end');
    assert.equal(asked.reduce((s, n) => s + n, 0), listed);
    assert.equal(readThrottled, listed);
  });

  it('a listed file that cannot be read: output fails and result rejects with the LOCAL_IO error of encodePartition on this thread', async () => {
    const root = await newDataDir();
    const good = await fileOf(root, 'base/1/1', randomBytes(600_000));
    await mkdir(path.join(root, 'base/1/2'));
    // listed as a file, is a directory: open succeeds, read fails with EISDIR
    const unreadable: DataFile = { relativePath: 'base/1/2', absolutePath: path.join(root, 'base/1/2'), type: 'file', size: 8192, mode: 0o100600, mtime: MTIME };
    const partition = partitionOf([good, unreadable]);

    const expected = await encodedHere(partition, createLzoCodec()).then(
      () => assert.fail('encodePartition on this thread succeeded'),
      (e: unknown) => e,
    );
    assert.ok(isWalrusError(expected), String(expected));
    assert.equal(expected.kind, 'LOCAL_IO');
    assert.match(expected.message, /EISDIR/);

    const { output, result } = pool.encode(jobFor(partition));
    const sameError = (e: unknown) => {
      assert.ok(e instanceof WalrusError, `expected a WalrusError, got ${String(e)}`);
      assert.equal(e.kind, 'LOCAL_IO');
      assert.equal(e.message, expected.message);
      assert.equal(e.detail, expected.detail);
      assert.equal(e.hint, expected.hint);
      return true;
    };
    await assert.rejects(collect(output), sameError);
    await assert.rejects(result, sameError);
  });

  it('a listed file that vanished is packed as zeros of its listed size, not an error', async () => {
    const root = await newDataDir();
    const kept = await fileOf(root, 'base/1/1', randomBytes(100_000));
    const gone: DataFile = { relativePath: 'base/1/2', absolutePath: path.join(root, 'base/1/2'), type: 'file', size: 300_000, mode: 0o100600, mtime: MTIME };
    const partition = partitionOf([kept, gone]);
    let read = 0;
    const { output, result } = pool.encode(jobFor(partition), { onBytesRead: (n) => (read += n) });
    const tar = unlzop(await collect(output));
    const r = await result;
    assert.equal(r.tarBytes, tar.length);
    const here = unlzop((await encodedHere(partition, createLzoCodec())).bytes);
    assert.ok(tar.equals(here), 'not the tar encodePartition packs on this thread');
    const zeros = tarMember(tar, 'base/1/2');
    assert.equal(zeros.length, gone.size);
    assert.ok(zeros.equals(Buffer.alloc(gone.size)), 'the vanished file is not all zeros');
    assert.equal(read, kept.size + gone.size, 'the padding counts as read (progress reaches the partition size)');
  });

  it('destroying output after the first chunk rejects result; the worker is not reused and the pool encodes the next partition', async () => {
    const root = await newDataDir();
    const partition = partitionOf([await fileOf(root, 'base/1/1', randomBytes(12 * MiB))]);
    pool.prewarm(2);
    const { idle, all } = internals(pool);
    assert.ok(idle.length >= 2, `${idle.length} idle workers`);
    const taken = idle[idle.length - 1]; // encode takes the last idle worker
    const exited = new Promise<void>((resolve) => taken.once('exit', () => resolve()));

    const { output, result } = pool.encode(jobFor(partition));
    assert.ok(!idle.includes(taken), 'encode did not take the last idle worker');
    let chunks = 0;
    for await (const chunk of output) {
      assert.ok((chunk as Buffer).length > 0);
      chunks++;
      output.destroy();
      break;
    }
    assert.equal(chunks, 1);
    await assert.rejects(result, (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /the partition upload stopped/);
      return true;
    });
    await Promise.race([exited, sleep(5000).then(() => assert.fail('the aborted worker was not terminated'))]);
    assert.ok(!idle.includes(taken), 'the aborted worker went back to the pool');
    assert.ok(!all.has(taken));

    // the next partition: a fresh worker if none is idle, the right bytes either way
    idle.splice(0).forEach((w) => void w.terminate());
    const { partition: next, big } = await mixedPartition();
    const second = pool.encode(jobFor(next));
    const tar = unlzop(await collect(second.output));
    const r = await second.result;
    assert.equal(r.tarBytes, tar.length);
    assert.ok(tarMember(tar, 'base/1/16384').equals(big));
    assert.equal(idle.length, 1, 'the worker that encoded the next partition went back to the pool');
    assert.notEqual(idle[0], taken);
  });

  it('output not read: the worker stops reading after a few MiB, then finishes when read', async () => {
    const root = await newDataDir();
    const size = 64 * MiB;
    const absolutePath = path.join(root, 'base/1/big');
    await mkdir(path.dirname(absolutePath), { recursive: true });
    const handle = await open(absolutePath, 'w', 0o600);
    try {
      for (let written = 0; written < size; written += 4 * MiB) await handle.write(randomBytes(4 * MiB));
    } finally {
      await handle.close();
    }
    const partition = partitionOf([{ relativePath: 'base/1/big', absolutePath, type: 'file', size, mode: 0o100600, mtime: MTIME }]);

    let read = 0;
    const { output, result } = pool.encode(jobFor(partition), { onBytesRead: (n) => (read += n) });
    // from its first read on (a worker may still be starting), nobody reads the output for 400 ms
    for (const deadline = Date.now() + 10_000; read === 0; await sleep(10)) if (Date.now() > deadline) assert.fail('the worker read nothing at all');
    await sleep(400);
    assert.ok(read < 16 * MiB, `the worker read ${(read / MiB).toFixed(1)} MiB of ${size / MiB} while nobody read its output`);

    let outputBytes = 0;
    for await (const chunk of output) outputBytes += (chunk as Buffer).length;
    const r = await result;
    assert.equal(read, size);
    // a tar of one member: its 512-byte header, the data (a multiple of 512 bytes), the two zero blocks that end the tar
    assert.equal(r.tarBytes, 512 + size + 1024);
    assert.ok(outputBytes > size, `${outputBytes} compressed bytes for ${size} random bytes`);
  });
});
