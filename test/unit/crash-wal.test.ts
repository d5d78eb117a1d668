/**
 * Crashes in the middle of WAL archiving, through the real bin/walrus and a real S3 API server
 * (s3rver) behind test/helpers/fault-proxy.ts, which trickles bodies so that the kill lands
 * mid-transfer (the proxy's byte counters say when: no sleeps).
 * - SIGKILL during wal-push: no object under the key (head null, nothing listed); a rerun succeeds.
 * - SIGKILL during wal-fetch: DEST does not exist (a hidden `.DEST.walrus-partial-…` may remain);
 *   a rerun succeeds and writes the right bytes.
 * - Two wal-push of the same segment at once: both exit 0 and the object decodes to the segment.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startS3Server, S3RVER_CREDENTIALS, type S3TestServer } from '../helpers/s3-server.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { assertDistCurrent, makeTempDirectory, runWalrus, simpleFleet, WALRUS_BIN, writeFleetConfig } from '../helpers/walrus-cli.js';
import { manifest as s3Manifest } from '../../plugins/s3/index.js';
import { silentLogger } from '../../core/log.js';
import type { Storage, StorageObjectInfo } from '../../core/types.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const SEGMENT_SIZE = 16 * 1024 * 1024;
const FIXTURE_KEY = `${SHARED_FIXTURES}/wal-e-gpg`;
/** Field by field: S3RVER_CREDENTIALS itself gets a `$source` tag from the SDK (see storage-faults.test.ts). */
const CREDENTIALS = { accessKeyId: S3RVER_CREDENTIALS.accessKeyId, secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey };
/** 64 KiB every 50 ms per connection: a 16 MiB object takes seconds, the kill comes after 2 MiB. */
const TRICKLE = { bytesPerTick: 64 * 1024, tickMs: 50 };
const KILL_AFTER_BYTES = 2 * 1024 * 1024;

let temp: { path: string; cleanup: () => Promise<void> };
let s3: S3TestServer;
const proxies: FaultProxy[] = [];
const storages: Storage[] = [];

before(async () => {
  temp = await makeTempDirectory('crash-wal');
  s3 = await startS3Server();
});
after(async () => {
  for (const p of proxies) await p.stop();
  for (const s of storages) await s.close?.();
  await s3?.stop();
  await temp?.cleanup();
});

interface Site {
  /** This site's own proxy (tests run at the same time and set their own trickle). */
  proxy: FaultProxy;
  dataDirectory: string;
  pgWal: string;
  /** Through the proxy. */
  config: string;
  /** Straight to s3rver. */
  directConfig: string;
  bucket: string;
  storage: Storage;
}

async function site(label: string): Promise<Site> {
  const dataDirectory = join(temp.path, label, 'data');
  const pgWal = join(dataDirectory, 'pg_wal');
  await mkdir(pgWal, { recursive: true });
  const bucket = await s3.bucket();
  const proxy = await startFaultProxy({ target: s3.endpoint });
  proxies.push(proxy);
  const fleet = (endpoint: string) =>
    simpleFleet({
      storage: { plugin: 's3', bucket, endpoint, forcePathStyle: true, ...CREDENTIALS },
      dataDirectory,
      prefix: 'db1',
      gpgKey: { publicKey: `\${file:${FIXTURE_KEY}/public-key.asc}`, secretKey: `\${file:${FIXTURE_KEY}/secret-key.asc}`, passphrase: `\${file:${FIXTURE_KEY}/passphrase.txt}` },
    });
  const config = await writeFleetConfig(join(temp.path, label, 'proxied.yaml'), fleet(proxy.endpoint));
  const directConfig = await writeFleetConfig(join(temp.path, label, 'direct.yaml'), fleet(s3.endpoint));
  const storage = await s3Manifest.create(
    { bucket, endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', ...CREDENTIALS },
    { log: silentLogger, configDirectory: temp.path, instanceName: 'direct' },
  );
  storages.push(storage);
  return { proxy, dataDirectory, pgWal, config, directConfig, bucket, storage };
}

async function listAll(storage: Storage, prefix: string): Promise<StorageObjectInfo[]> {
  const out: StorageObjectInfo[] = [];
  for await (const o of storage.list(prefix)) out.push(o);
  return out;
}

async function writeSegment(s: Site, name: string): Promise<string> {
  const content = randomBytes(SEGMENT_SIZE);
  await writeFile(join(s.pgWal, name), content);
  return createHash('sha256').update(content).digest('hex');
}

const sha256Of = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

/**
 * Starts bin/walrus, waits until `ready()` resolves (the proxy saw enough bytes), SIGKILLs it.
 * Resolves with the signal it died of (SIGKILL, unless it finished first: then the test fails).
 */
async function killMidway(args: string[], s: Site, ready: () => Promise<void>): Promise<{ signal: NodeJS.Signals | null; code: number | null; stderr: string }> {
  assertDistCurrent();
  const child = spawn(process.execPath, [WALRUS_BIN, '--config', s.config, '--server', 'db1', ...args], {
    cwd: s.dataDirectory,
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<{ signal: NodeJS.Signals | null; code: number | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  try {
    await Promise.race([ready(), exited.then((e) => Promise.reject(new Error(`walrus ${args.join(' ')} ended before the kill (${JSON.stringify(e)}): ${stderr}`)))]);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  return { ...(await exited), stderr };
}

describe('crashes during WAL archiving', { concurrency: true }, () => {
  test('SIGKILL during wal-push (upload trickled): nothing visible under the key; a rerun succeeds', async () => {
    const s = await site('kill-push');
    const name = '000000010000000000000011';
    const sha256 = await writeSegment(s, name);
    const key = `db1/wal_005/${name}.lzo`;

    const proxy = s.proxy;
    proxy.configure({ trickle: { direction: 'request', ...TRICKLE } });
    let killed;
    try {
      killed = await killMidway(['wal-push', `pg_wal/${name}`], s, () => proxy.waitFor((st) => st.requestBodyBytes >= KILL_AFTER_BYTES));
    } finally {
      proxy.configure({ trickle: null });
    }
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    assert.ok(proxy.stats.requestBodyBytes < SEGMENT_SIZE, 'killed well before the whole segment went up');

    assert.equal(await s.storage.head(key), null, 'no object under the key');
    assert.deepEqual(await listAll(s.storage, 'db1/'), [], 'nothing listed');

    const rerun = await runWalrus(['wal-push', `pg_wal/${name}`], { config: s.config, server: 'db1', cwd: s.dataDirectory });
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.match(rerun.stderr, /completed archiving to a file/);
    const fetched = await runWalrus(['wal-fetch', name, 'pg_wal/RESTORED'], { config: s.directConfig, server: 'db1', cwd: s.dataDirectory });
    assert.equal(fetched.code, 0, fetched.stderr);
    assert.equal(await sha256Of(join(s.pgWal, 'RESTORED')), sha256);
  });

  test('SIGKILL during wal-fetch (download trickled): DEST does not exist; a rerun succeeds', async () => {
    const s = await site('kill-fetch');
    const name = '000000010000000000000012';
    const sha256 = await writeSegment(s, name);
    const pushed = await runWalrus(['wal-push', `pg_wal/${name}`], { config: s.directConfig, server: 'db1', cwd: s.dataDirectory });
    assert.equal(pushed.code, 0, pushed.stderr);
    const dest = join(s.pgWal, 'RESTORED');

    const proxy = s.proxy;
    proxy.configure({ trickle: { direction: 'response', ...TRICKLE } });
    let killed;
    try {
      killed = await killMidway(['wal-fetch', name, 'pg_wal/RESTORED'], s, () => proxy.waitFor((st) => st.responseBodyBytes >= KILL_AFTER_BYTES));
    } finally {
      proxy.configure({ trickle: null });
    }
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    assert.equal(existsSync(dest), false, 'DEST does not exist after the kill');
    const partials = (await readdir(s.pgWal)).filter((f) => f !== name);
    for (const f of partials) assert.match(f, /^\.RESTORED\.walrus-partial-[0-9a-f]+$/, `only a hidden temp file beside DEST may remain, found ${f}`);

    const rerun = await runWalrus(['wal-fetch', name, 'pg_wal/RESTORED'], { config: s.config, server: 'db1', cwd: s.dataDirectory });
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.equal(await sha256Of(dest), sha256, 'the rerun wrote the whole segment');
    // the killed run's temp file (if any) is left alone, never mistaken for DEST
    const after = (await readdir(s.pgWal)).filter((f) => f !== name && f !== 'RESTORED');
    assert.deepEqual(after.sort(), partials.sort(), 'the rerun left no temp file of its own');
    process.stderr.write(`# kill during wal-fetch left ${partials.length} partial file(s)\n`);
  });

  for (const storageKind of ['s3', 'file'] as const) {
    test(`two wal-push of the same segment at once (${storageKind}): both exit 0, the object decodes to the segment`, async () => {
      const s = await site(`concurrent-${storageKind}`);
      const name = '000000010000000000000013';
      const sha256 = await writeSegment(s, name);
      const config =
        storageKind === 's3'
          ? s.directConfig
          : await writeFleetConfig(
              join(temp.path, `concurrent-${storageKind}`, 'file.yaml'),
              simpleFleet({ storage: join(temp.path, `concurrent-${storageKind}`, 'store'), dataDirectory: s.dataDirectory, prefix: 'db1', gpgKey: { publicKey: `\${file:${FIXTURE_KEY}/public-key.asc}`, secretKey: `\${file:${FIXTURE_KEY}/secret-key.asc}`, passphrase: `\${file:${FIXTURE_KEY}/passphrase.txt}` } }),
            );
      const runs = await Promise.all([0, 1].map(() => runWalrus(['wal-push', `pg_wal/${name}`], { config, server: 'db1', cwd: s.dataDirectory })));
      for (const r of runs) assert.equal(r.code, 0, r.stderr);
      const fetched = await runWalrus(['wal-fetch', name, 'pg_wal/RESTORED'], { config, server: 'db1', cwd: s.dataDirectory });
      assert.equal(fetched.code, 0, fetched.stderr);
      assert.equal(await sha256Of(join(s.pgWal, 'RESTORED')), sha256);
      const outcomes = runs.map((r) => (/already archived/.test(r.stderr) ? 'duplicate' : 'archived'));
      process.stderr.write(`# concurrent push (${storageKind}): ${outcomes.join(', ')}\n`);
    });
  }
});
