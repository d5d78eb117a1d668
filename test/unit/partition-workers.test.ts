/**
 * Partitions decoded in worker threads (core/partition-workers.ts): the same files, digests and
 * errors as the decode on this thread (core/partition-decode.ts), a failing source's own error,
 * and in fetchBackup the first failing partition stopping the others. Real lzop (the binary)
 * writes the partitions; the file storage plugin holds them.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { PartitionWorkerPool, partitionsAtOnce } from '../../core/partition-workers.js';
import { availableParallelism } from 'node:os';
import { decodePartition } from '../../core/partition-decode.js';
import type { PartitionJob } from '../../core/partition-worker-protocol.js';
import { fetchBackup, RESTORE_INCOMPLETE_MARKER } from '../../core/backup-restore.js';
import { ArchiveLayout } from '../../core/layout.js';
import { WalrusError, isWalrusError, storageError } from '../../core/errors.js';
import { silentLogger } from '../../core/log.js';
import { createLzoCodec } from '../../plugins/lzo/index.js';
import { manifest as fileStorageManifest } from '../../plugins/file/index.js';
import type { ServerRuntime } from '../../core/runtime.js';
import type { Storage } from '../../core/types.js';
import { buildTar as tarOf } from '../helpers/tar-build.js';


const lzop = (bytes: Buffer) => execFileSync('lzop', ['-c'], { input: bytes, maxBuffer: 256 * 1024 * 1024 });
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function streamOf(bytes: Buffer, chunkSize = 64 * 1024): Readable {
  return Readable.from((function* () {
    for (let i = 0; i < bytes.length; i += chunkSize) yield bytes.subarray(i, i + chunkSize);
  })(), { objectMode: false });
}

/** One byte flipped inside the first block's data (after lzop's ~40-byte header and the block header). */
function corruptFirstBlock(object: Buffer): Buffer {
  const damaged = Buffer.from(object);
  damaged[Math.min(200, damaged.length - 10)] ^= 0xff;
  return damaged;
}

async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(dir: string) {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(path.relative(root, p));
    }
  }
  await walk(root);
  return out.sort();
}

let work: string;
let pool: PartitionWorkerPool;
let targets = 0;

async function newTarget(): Promise<string> {
  const dir = path.join(work, `target-${++targets}`);
  await mkdir(dir, { mode: 0o700 });
  return dir;
}

const jobFor = (dataRoot: string): PartitionJob => ({ codecSpec: 'lzo', configDirectory: work, hashInput: true, storedBytesVerified: false, dataRoot, tablespaces: {}, fsync: true });

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'walrus-partition-workers-'));
  pool = new PartitionWorkerPool(silentLogger);
});

after(async () => {
  await pool.close();
  await rm(work, { recursive: true, force: true });
});

describe('PartitionWorkerPool', () => {
  it('partitions at once: poolSize, at most one per core, at least one', () => {
    const cores = availableParallelism();
    assert.equal(partitionsAtOnce(1), 1);
    assert.equal(partitionsAtOnce(0), 1);
    assert.equal(partitionsAtOnce(64), Math.min(64, cores));
    assert.equal(partitionsAtOnce(cores + 1), cores);
  });

  it('writes the files of a partition and reports the SHA-256 of the stored bytes and of the tar', async () => {
    const big = randomBytes(3 * 1024 * 1024 + 123);
    const text = Buffer.from('15\n');
    const tar = await tarOf([
      { header: { name: 'PG_VERSION', type: 'file', mode: 0o644 }, body: text },
      { header: { name: 'base/1', type: 'directory' } },
      { header: { name: 'base/1/16384', type: 'file', mode: 0o644 }, body: big },
    ]);
    const stored = lzop(tar);
    const target = await newTarget();
    const result = await pool.decode(jobFor(target), streamOf(stored, 100_000));
    assert.deepEqual(result.stored, { bytes: stored.length, sha256: sha256(stored) });
    assert.deepEqual(result.tar, { bytes: tar.length }, 'the tar is counted (its SHA-256 is implied by the stored one)');
    assert.equal(result.files, 2);
    assert.equal(result.bytes, big.length + text.length);
    assert.ok((await readFile(path.join(target, 'base/1/16384'))).equals(big));
    assert.equal((await stat(path.join(target, 'PG_VERSION'))).mode & 0o777, 0o600);
    assert.equal((await stat(path.join(target, 'base/1'))).mode & 0o777, 0o700);
  });

  for (const { what, object } of [
    {
      what: 'a corrupt lzop block',
      object: async () => corruptFirstBlock(lzop(await tarOf([{ header: { name: 'base/1/1', type: 'file' }, body: Buffer.alloc(300_000, 7) }]))),
    },
    {
      what: 'a hostile archive entry',
      object: async () => lzop(await tarOf([{ header: { name: 'pg_tblspc/1/x', type: 'symlink', linkname: '/etc' } }, { header: { name: 'a', type: 'file' }, body: Buffer.from('x') }])),
    },
    {
      what: 'a truncated partition',
      object: async () => {
        const whole = lzop(await tarOf([{ header: { name: 'base/1/1', type: 'file' }, body: randomBytes(600_000) }]));
        return whole.subarray(0, whole.length - 4000);
      },
    },
  ]) {
    it(`${what} found in a worker: the kind, message, hint and exit code of the same decode on this thread, nothing left`, async () => {
      const bytes = await object();
      const here = await newTarget();
      const expected = await decodePartition(streamOf(bytes), { codec: createLzoCodec(), hashInput: true, dataRoot: here, tablespaces: {}, fsync: false }).then(
        () => assert.fail('the decode on this thread succeeded'),
        (e: unknown) => e,
      );
      assert.ok(isWalrusError(expected), String(expected));
      assert.equal(expected.kind, 'INTEGRITY');
      const target = await newTarget();
      await assert.rejects(pool.decode(jobFor(target), streamOf(bytes)), (e: unknown) => {
        assert.ok(e instanceof WalrusError, `expected a WalrusError, got ${String(e)}`);
        assert.equal(e.kind, expected.kind);
        assert.equal(e.message, expected.message);
        assert.equal(e.hint, expected.hint);
        assert.equal(e.detail, expected.detail);
        assert.equal(e.exitCode, 4);
        return true;
      });
      assert.deepEqual(await filesUnder(target), await filesUnder(here));
      assert.ok(!(await filesUnder(target)).includes('base/1/1'), 'a partial file was left');
    });
  }

  it('a source that fails mid-partition: its own error rejects, the worker removed the partial file and takes the next partition', async () => {
    const tar = await tarOf([{ header: { name: 'base/1/2', type: 'file' }, body: randomBytes(2 * 1024 * 1024) }]);
    const stored = lzop(tar);
    const failure = storageError('reading the object failed: connection reset');
    const source = Readable.from((async function* () {
      yield stored.subarray(0, 1024 * 1024);
      throw failure;
    })(), { objectMode: false });
    const target = await newTarget();
    await assert.rejects(pool.decode(jobFor(target), source), (e: unknown) => e === failure);
    assert.deepEqual(await filesUnder(target), []);
    // the same workers go on with the next partition
    const result = await pool.decode(jobFor(target), streamOf(stored));
    assert.equal(result.files, 1);
    assert.deepEqual(await filesUnder(target), ['base/1/2']);
  });

  it('an object that is not lzop is refused before a byte reaches the worker, with openObject\'s message', async () => {
    const codec = createLzoCodec();
    const target = await newTarget();
    await assert.rejects(
      pool.decode(jobFor(target), streamOf(Buffer.from('plain text, not lzop')), {
        checkHead: (head) => {
          if (!codec.recognizes(head)) throw new WalrusError('INTEGRITY', 'not a valid lzo stream (wrong magic bytes)');
        },
      }),
      /not a valid lzo stream/,
    );
    assert.deepEqual(await filesUnder(target), []);
  });
});

describe('fetchBackup with partitions in workers', () => {
  const NAME = 'base_000000010000000000000002_00000028';

  /** Storage whose partition `stalledKey` delivers its first `limit` bytes, then nothing until destroyed. */
  function stallingStorage(real: Storage, stalledKey: string, limit: number) {
    const state = { stalledDestroyed: false };
    const storage: Storage = {
      put: (key, body, options) => real.put(key, body, options),
      head: (key) => real.head(key),
      delete: (keys) => real.delete(keys),
      get: async (key) => {
        if (key !== stalledKey) return real.get(key);
        const body = await real.get(key);
        const bytes = Buffer.concat(await body!.toArray());
        let sent = 0;
        const stalled = new Readable({
          read() {
            if (sent >= limit) return; // stalls: only destroy() ends it
            const chunk = bytes.subarray(sent, Math.min(sent + 64 * 1024, limit));
            sent += chunk.length;
            this.push(chunk);
          },
          destroy(error, done) {
            state.stalledDestroyed = true;
            done(error);
          },
        });
        return stalled;
      },
      list: (prefix) => real.list(prefix),
      describe: (key) => real.describe(key),
    };
    return { storage, state };
  }

  it('the first failing partition stops the others: its INTEGRITY error, the stalled one destroyed, no partial file, the target marked incomplete', { timeout: 60_000 }, async () => {
    const storePath = path.join(work, 'store');
    const layout = new ArchiveLayout('db1', '.lzo');
    const real = (await fileStorageManifest.create({ path: storePath, fsync: false }, { log: silentLogger, configDirectory: work, instanceName: 'file' })) as Storage;
    // partition 0: large (first in line), stalls after 256 KiB; partition 1: small and corrupt
    const large = lzop(await tarOf([{ header: { name: 'base/1/large', type: 'file' }, body: randomBytes(4 * 1024 * 1024) }]));
    const corrupt = corruptFirstBlock(lzop(await tarOf([{ header: { name: 'base/1/small', type: 'file' }, body: Buffer.alloc(200_000, 1) }])));
    await real.put(layout.partitionKey(NAME, 0), streamOf(large));
    await real.put(layout.partitionKey(NAME, 1), streamOf(corrupt));
    const sentinel = { wal_segment_backup_stop: '000000010000000000000002', wal_segment_offset_backup_stop: '00000028', expanded_size_bytes: 1, spec: { base_prefix: '/x/', tablespaces: [] } };
    await real.put(layout.sentinelKey(NAME), Readable.from([Buffer.from(JSON.stringify(sentinel))]));

    const { storage, state } = stallingStorage(real, layout.partitionKey(NAME, 0), 256 * 1024);
    const rt = {
      fleet: { directory: work },
      server: { compression: 'lzo', poolSize: 2 },
      log: silentLogger,
      storage,
      codec: createLzoCodec(),
      cipher: null,
      layout,
      close: async () => undefined,
    } as unknown as ServerRuntime;
    const target = path.join(await newTarget(), 'data');
    await assert.rejects(fetchBackup(rt, target, NAME), (e: unknown) => {
      assert.ok(e instanceof WalrusError, String(e));
      assert.equal(e.kind, 'INTEGRITY');
      assert.equal(e.exitCode, 4);
      assert.match(e.message, /part_00000001\.tar\.lzo/);
      assert.match(e.message, /lzop stream is corrupt/);
      return true;
    });
    assert.equal(state.stalledDestroyed, true, 'the stalled partition was not stopped');
    const left = await filesUnder(target);
    assert.deepEqual(left, [RESTORE_INCOMPLETE_MARKER]);
    assert.ok(existsSync(path.join(target, RESTORE_INCOMPLETE_MARKER)));
  });
});
