/**
 * Base backups through a faulty network, and a damaged sentinel: a real PostgreSQL 15 cluster
 * (pgbench -i -s 2) archiving its WAL straight into s3rver, while backup-push and backup-fetch go
 * through test/helpers/fault-proxy.ts (500, 503, reset mid-body, stall) with lzo + gpg (the WAL-E
 * fixture key) and 5 MiB parts, so that each partition is a multipart upload.
 * - 15 % of the requests faulted: both verbs succeed, the log shows the retries, the tree restored
 *   through the faults is byte for byte the one restored without them, and it starts and holds
 *   pgbench's rows.
 * - Every request faulted once the upload is under way (each kind): backup-push fails with exit 3
 *   in bounded time and nothing new is listed; backup-fetch likewise, the target left empty when
 *   the faults start before it, marked incomplete when they start mid-way.
 * - One flipped byte in a stop sentinel: backup-list --detail, backup-fetch and verify exit 4 naming
 *   the sentinel, and backup-fetch writes nothing into the target.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { readdir, readlink, lstat, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { createCluster, destroyAllClusters, chownToPostgres, type PgCluster } from '../helpers/pg-cluster.js';
import { startS3Server, S3RVER_CREDENTIALS, type S3TestServer } from '../helpers/s3-server.js';
import { FAULT_KINDS, startFaultProxy, type FaultKind, type FaultProxy } from '../helpers/fault-proxy.js';
import { runWalrus, walrusArchiveCommand, writeFleetConfig, WALRUS_BIN, REPO_ROOT, type WalrusResult } from '../helpers/walrus-cli.js';
import { manifest as s3Manifest } from '../../plugins/s3/index.js';
import { silentLogger } from '../../core/log.js';
import type { Storage } from '../../core/types.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const FIXTURE_KEY = `${SHARED_FIXTURES}/wal-e-gpg`;
/** Field by field: the SDK tags the object it was given with a `$source` key. */
const CREDENTIALS = { accessKeyId: S3RVER_CREDENTIALS.accessKeyId, secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey };
/** Small timeouts: a stall costs one timeout, a failing command maxAttempts of them. */
const FAST_S3 = { requestTimeoutMs: 2000, connectTimeoutMs: 1000, maxAttempts: 6, partSizeMB: 5 };
/** A failing command must end by then: a bound against hanging, not a benchmark. */
const FAILURE_BOUND_MS = 90_000;
const PREFIX = 'db1';

let s3: S3TestServer;
let c: PgCluster;
let bucket: string;
let work: string;
let healthyConfig: string;
const proxies: FaultProxy[] = [];
let direct: Storage;
let goodBackup = '';
let accounts = '';

function fleet(endpoint: string, s3Options: Record<string, unknown> = {}) {
  return {
    version: 1,
    storages: { main: { plugin: 's3', bucket, endpoint, forcePathStyle: true, region: 'us-east-1', ...CREDENTIALS, ...s3Options } },
    keys: {
      ops: {
        plugin: 'gpg',
        publicKey: `\${file:${FIXTURE_KEY}/public-key.asc}`,
        secretKey: `\${file:${FIXTURE_KEY}/secret-key.asc}`,
        passphrase: `\${file:${FIXTURE_KEY}/passphrase.txt}`,
      },
    },
    defaults: { storage: 'main', compression: 'lzo', encryption: 'ops', poolSize: 2, prefetch: 0 },
    servers: { db: { dataDirectory: c.dataDirectory, prefix: PREFIX, connection: c.connection } },
  };
}

let configs = 0;
/** A fleet config whose storage goes through `proxy` (or straight to s3rver). */
async function configThrough(proxy: FaultProxy | CuttableLink | null): Promise<string> {
  const path = join(work, `fleet-${++configs}.yaml`);
  await writeFleetConfig(path, proxy ? fleet(proxy.endpoint, FAST_S3) : fleet(s3.endpoint));
  await chownToPostgres(path);
  return path;
}

async function proxy(options: Partial<Parameters<typeof startFaultProxy>[0]> = {}): Promise<FaultProxy> {
  const p = await startFaultProxy({ target: s3.endpoint, stallMs: 4000, ...options });
  proxies.push(p);
  return p;
}

/**
 * A TCP pass-through in front of a fault proxy whose open connections the test can cut: the proxy's
 * settings apply to requests arriving later, so a download already flowing needs this to break.
 */
interface CuttableLink {
  endpoint: string;
  cut(): void;
  stop(): Promise<void>;
}
const links: CuttableLink[] = [];
async function cuttableLink(to: FaultProxy): Promise<CuttableLink> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(to.port, '127.0.0.1');
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const link: CuttableLink = {
    endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    cut: () => {
      for (const s of [...sockets]) s.destroy();
    },
    stop: () =>
      new Promise<void>((resolve) => {
        link.cut();
        server.close(() => resolve());
      }),
  };
  links.push(link);
  return link;
}

const walrus = (config: string, args: string[], timeoutMs = FAILURE_BOUND_MS) => runWalrus(['--log-level', 'debug', ...args], { config, server: 'db', timeoutMs });

function ok(r: WalrusResult, what: string): WalrusResult {
  assert.equal(r.code, 0, `${what} exited ${r.code}:\n${r.stderr}`);
  return r;
}

async function listedBackups(): Promise<string[]> {
  const r = ok(await walrus(healthyConfig, ['backup-list', '--json']), 'backup-list');
  return JSON.parse(r.stdout).map((row: { name: string }) => row.name);
}

/** Every entry under `root`: `path type sha256|link-target|''`, sorted. */
async function treeManifest(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for (const name of await readdir(dir)) {
      const p = join(dir, name);
      const rel = p.slice(root.length + 1);
      const st = await lstat(p);
      if (st.isDirectory()) {
        out.push(`${rel} dir`);
        await walk(p);
      } else if (st.isSymbolicLink()) out.push(`${rel} link ${await readlink(p)}`);
      else {
        const hash = createHash('sha256');
        for await (const chunk of createReadStream(p)) hash.update(chunk as Buffer);
        out.push(`${rel} file ${hash.digest('hex')}`);
      }
    }
  };
  await walk(root);
  return out.sort();
}

/** A fresh postgres-owned directory path under the work dir (not created: backup-fetch creates it). */
let targets = 0;
const newTarget = () => join(work, `restore-${++targets}`);

before(async () => {
  s3 = await startS3Server();
  bucket = await s3.bucket();
  c = await createCluster();
  work = await c.createOwnedDirectory('work');
  healthyConfig = await configThrough(null);
  await c.writeConf({
    archive_mode: 'on',
    archive_command: walrusArchiveCommand(healthyConfig, 'db'),
    wal_level: 'replica',
  });
  await c.start();
  await c.pgbench(['-i', '-s', '2', '-q']);
  // one relation file that compresses poorly: its partition is larger than one multipart part (5 MiB)
  await c.query("create table noise as select md5(random()::text) || md5(random()::text) as t from generate_series(1, 150000)");
  accounts = await c.query('select count(*) || \':\' || sum(abalance) from pgbench_accounts');
  direct = await s3Manifest.create({ bucket, endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', ...CREDENTIALS }, { log: silentLogger, configDirectory: work, instanceName: 'direct' });
});
after(async () => {
  for (const l of links) await l.stop();
  for (const p of proxies) await p.stop();
  await direct?.close?.();
  await destroyAllClusters();
  await s3?.stop();
});

describe('backups through S3 with faults', { concurrency: false }, () => {
  test('15 % of requests faulted: backup-push, backup-fetch and verify succeed, the restored tree equals a fault-free fetch, and it starts with the rows', { timeout: 300_000 }, async () => {
    // One PRNG sequence for the push, the fetch and verify (about 30 requests): the seed is picked so
    // that each of the four kinds occurs (they are taken in rotation) and the push meets faults too.
    const faulty = await proxy({ faultFraction: 0.15, seed: 86 });
    const faultyConfig = await configThrough(faulty);
    const push = ok(await walrus(faultyConfig, ['backup-push', '--fast', '--json'], 240_000), 'backup-push through faults');
    const pushStats = { ...faulty.stats, byKind: { ...faulty.stats.byKind } };
    goodBackup = JSON.parse(push.stdout).name;
    assert.deepEqual(await listedBackups(), [goodBackup]);
    assert.ok(pushStats.faults >= 1, `the push met faults (${JSON.stringify(pushStats.byKind)})`);
    // the partition was a multipart upload: 5 MiB parts
    const partitions = [];
    for await (const o of direct.list(`${PREFIX}/basebackups_005/${goodBackup}/tar_partitions/`)) partitions.push(o);
    assert.ok(partitions.some((o) => o.size > 5 * 1024 * 1024), `a partition larger than one part: ${JSON.stringify(partitions.map((o) => o.size))}`);

    const throughFaults = newTarget();
    const fetched = ok(await walrus(faultyConfig, ['backup-fetch', throughFaults, goodBackup, '--json'], 240_000), 'backup-fetch through faults');
    assert.equal(JSON.parse(fetched.stdout).verification, 'sha256');
    const verified = ok(await walrus(faultyConfig, ['verify'], 240_000), 'verify through faults');
    const stats = faulty.stats;

    const clean = newTarget();
    ok(await walrus(healthyConfig, ['backup-fetch', clean, goodBackup]), 'backup-fetch without faults');
    const [a, b] = [await treeManifest(throughFaults), await treeManifest(clean)];
    assert.ok(a.length > 900, `a whole data directory was restored (${a.length} entries)`);
    assert.deepEqual(a, b, 'the tree restored through faults is the one restored without them');

    process.stderr.write(`# 15 %: ${stats.requests} requests, ${stats.faults} faulted ${JSON.stringify(stats.byKind)} (push: ${pushStats.requests} requests, ${JSON.stringify(pushStats.byKind)})\n`);
    assert.ok(stats.faults / stats.requests >= 0.1 && stats.faults / stats.requests <= 0.25, `10-20 % faulted: ${stats.faults} of ${stats.requests}`);
    for (const kind of FAULT_KINDS) assert.ok(stats.byKind[kind] >= 1, `a ${kind} fault happened (${JSON.stringify(stats.byKind)})`);
    assert.match(push.stderr, /succeeded after \d+ attempts|retries of its completion/, 'the push log mentions the retries');
    assert.match(push.stderr + fetched.stderr + verified.stderr, /succeeded after \d+ attempts|broke off, resuming/, 'the logs mention the retries');

    // the restored cluster recovers (WAL through the healthy config) and holds pgbench's rows
    const restored = await createCluster({ dataDirectory: throughFaults });
    await restored.writeConf({ restore_command: `env NODE_OPTIONS= ${process.execPath} ${WALRUS_BIN} --config ${healthyConfig} --server db wal-fetch %f %p` });
    await writeFile(join(throughFaults, 'recovery.signal'), '');
    await restored.start();
    await restored.waitForRecoveryEnd(120_000);
    assert.equal(await restored.query('select count(*) || \':\' || sum(abalance) from pgbench_accounts'), accounts);
    await restored.destroy();
    await rm(throughFaults, { recursive: true, force: true });
    await rm(clean, { recursive: true, force: true });
  });

  // the two failure tests share nothing but the complete backup: run at the same time (mostly waiting on retries)
  describe('every request faulted', { concurrency: true }, () => {
    test('every request faulted once the upload is under way (each kind): backup-push exits 3 in bounded time, nothing new listed', { timeout: 300_000 }, async () => {
      assert.ok(goodBackup, 'needs the backup of the first test');
      // one kind after the other: backup-push takes the server's backup lock, so a second
      // backup of the same server at the same time is refused (exit 5) before it uploads anything
      const runOne = async (kind: FaultKind) => {
        const p = await proxy();
        const config = await configThrough(p);
        const child = spawn(process.execPath, [WALRUS_BIN, '--config', config, '--server', 'db', 'backup-push', '--fast'], {
          cwd: REPO_ROOT,
          env: { ...process.env, NODE_OPTIONS: '' },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
        const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? 128)));
        const killer = setTimeout(() => child.kill('SIGKILL'), FAILURE_BOUND_MS * 2);
        try {
          // part uploads under way: from here on, every request fails
          await p.waitFor((s) => s.requestBodyBytes > 2 * 1024 * 1024, 120_000);
          p.configure({ faultFraction: 1, kinds: [kind] });
          const startedFaulting = Date.now();
          const code = await exited;
          const seconds = (Date.now() - startedFaulting) / 1000;
          assert.equal(code, 3, `${kind}: expected exit 3 (STORAGE), got ${code}:\n${stderr}`);
          assert.ok(seconds * 1000 < FAILURE_BOUND_MS, `${kind}: failed within the bound (${seconds} s)`);
          assert.match(stderr, /base backup failed; no sentinel was written/);
          assert.match(stderr, /walrus ERROR\s+MSG: .*s3:\/\//, `${kind}: the ERROR names the object`);
          const name = /(base_[0-9A-F]{24}_[0-9A-F]{8})/.exec(stderr)?.[1];
          assert.ok(name, `${kind}: the backup name is in the log`);
          assert.equal(await direct.head(`${PREFIX}/basebackups_005/${name}_backup_stop_sentinel.json`), null, `${kind}: no sentinel`);
          process.stderr.write(`# all ${kind}: backup-push exited 3 ${seconds} s after the faults began\n`);
        } finally {
          clearTimeout(killer);
          child.kill('SIGKILL');
          await exited;
        }
      };
      const results: PromiseSettledResult<void>[] = [];
      for (const kind of FAULT_KINDS) results.push(...(await Promise.allSettled([runOne(kind)])));
      const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
      assert.deepEqual(failed.map((f) => String(f.reason)), []);
      assert.deepEqual(await listedBackups(), [goodBackup], 'only the complete backup is listed');
    });

    test('every request faulted: backup-fetch exits 3 in bounded time; from the start the target stays empty, mid-way it stays marked incomplete', { timeout: 300_000 }, async () => {
      assert.ok(goodBackup, 'needs the backup of the first test');
      const runs = FAULT_KINDS.flatMap((kind: FaultKind) => [
        (async () => {
          const p = await proxy({ faultFraction: 1, kinds: [kind] });
          const target = newTarget();
          const r = await walrus(await configThrough(p), ['backup-fetch', target, goodBackup]);
          assert.equal(r.code, 3, `${kind} from the start: expected exit 3, got ${r.code}:\n${r.stderr}`);
          assert.match(r.stderr, /walrus ERROR\s+MSG: .*s3:\/\//);
          assert.ok(!existsSync(target) || (await readdir(target)).length === 0, `${kind}: nothing written into the target`);
        })(),
        (async () => {
          const p = await proxy({ trickle: { direction: 'response', bytesPerTick: 256 * 1024, tickMs: 50 } });
          const link = await cuttableLink(p);
          const target = newTarget();
          const fetch = walrus(await configThrough(link), ['backup-fetch', target, goodBackup]);
          await p.waitFor((s) => s.responseBodyBytes > 1024 * 1024, 60_000);
          // every request from now on fails, and the download under way breaks off (its resumption fails)
          p.configure({ faultFraction: 1, kinds: [kind], trickle: null });
          link.cut();
          const r = await fetch;
          assert.equal(r.code, 3, `${kind} mid-way: expected exit 3, got ${r.code}:\n${r.stderr}`);
          assert.ok(existsSync(join(target, '.walrus-restore-incomplete')), `${kind}: the target is marked incomplete`);
          const again = await walrus(healthyConfig, ['backup-fetch', target, goodBackup]);
          assert.equal(again.code, 5, `${kind}: a rerun is refused:\n${again.stderr}`);
          await rm(target, { recursive: true, force: true });
        })(),
      ]);
      const results = await Promise.allSettled(runs);
      const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
      assert.deepEqual(failed.map((f) => String(f.reason)), []);
    });
  });
});

// ------------------------------------------------------------------ a damaged sentinel

async function readObject(key: string): Promise<Buffer> {
  const body = await direct.get(key);
  assert.ok(body, `${key} exists`);
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

test('one flipped byte in a stop sentinel: backup-list --detail, backup-fetch and verify exit 4 naming the sentinel; nothing written into the target', { timeout: 300_000 }, async () => {
  assert.ok(goodBackup, 'needs the backup of the first test');
  const key = `${PREFIX}/basebackups_005/${goodBackup}_backup_stop_sentinel.json`;
  const original = await readObject(key);
  const text = original.toString('utf8');
  // Flip one bit at several places, one at a time: WAL-E's stop segment, walrus's record of a partition's checksum, the middle
  const offsets = [text.indexOf('"wal_segment_backup_stop":"') + 30, text.indexOf('"storedSha256":"') + 20, Math.floor(original.length / 2)];
  try {
    for (const offset of offsets) {
      const damaged = Buffer.from(original);
      damaged[offset] ^= 0x10;
      await direct.put(key, Readable.from([damaged]), { size: damaged.length });
      const where = `byte ${offset} ('${String.fromCharCode(original[offset])}' -> '${String.fromCharCode(damaged[offset])}')`;
      const sentinelNamed = new RegExp(`walrus ERROR\\s+MSG: .*${goodBackup}_backup_stop_sentinel\\.json`);

      const list = await walrus(healthyConfig, ['backup-list', '--detail']);
      assert.equal(list.code, 4, `backup-list --detail, ${where}:\n${list.stderr}`);
      assert.match(list.stderr, sentinelNamed, `backup-list names the sentinel (${where})`);

      const target = newTarget();
      const fetch = await walrus(healthyConfig, ['backup-fetch', target, goodBackup]);
      assert.equal(fetch.code, 4, `backup-fetch, ${where}:\n${fetch.stderr}`);
      assert.match(fetch.stderr, sentinelNamed, `backup-fetch names the sentinel (${where})`);
      assert.ok(!existsSync(target) || (await readdir(target)).length === 0, `backup-fetch wrote nothing (${where})`);

      const verify = await walrus(healthyConfig, ['verify'], 180_000);
      assert.equal(verify.code, 4, `verify, ${where}:\n${verify.stdout}\n${verify.stderr}`);
      assert.match(verify.stdout + verify.stderr, new RegExp(`${goodBackup}_backup_stop_sentinel\\.json`), `verify names the sentinel (${where})`);
    }
  } finally {
    await direct.put(key, Readable.from([original]), { size: original.length });
  }
  ok(await walrus(healthyConfig, ['backup-list', '--detail']), 'backup-list after the repair');
});
