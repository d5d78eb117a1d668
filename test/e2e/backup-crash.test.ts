/**
 * Base-backup verbs killed (SIGKILL) half-way: a real PostgreSQL 15 cluster archiving its WAL into
 * s3rver, the backup verbs slowed down by test/helpers/fault-proxy.ts's trickle so that the kill
 * lands mid-transfer.
 * - backup-fetch killed: the target keeps its incomplete-restore marker; a rerun exits 5 and its hint
 *   names the directory to remove; after removing it a rerun restores the backup.
 * - backup-push killed: the leftover folder is not listed; `delete --confirm retain 1` keeps it while
 *   it may still be running (it started after the newest complete backup), removes it (every object)
 *   once a newer complete backup exists, and that backup restores and recovers with the rows.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCluster, destroyAllClusters, chownToPostgres, type PgCluster } from '../helpers/pg-cluster.js';
import { startS3Server, S3RVER_CREDENTIALS, type S3TestServer } from '../helpers/s3-server.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { runWalrus, walrusArchiveCommand, writeFleetConfig, WALRUS_BIN, REPO_ROOT, type WalrusResult } from '../helpers/walrus-cli.js';
import { manifest as s3Manifest } from '../../plugins/s3/index.js';
import { silentLogger } from '../../core/log.js';
import type { Storage } from '../../core/types.js';

const CREDENTIALS = { accessKeyId: S3RVER_CREDENTIALS.accessKeyId, secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey };
const PREFIX = 'db1';

let s3: S3TestServer;
let proxy: FaultProxy;
let c: PgCluster;
let bucket: string;
let work: string;
let healthyConfig: string;
let slowConfig: string;
let direct: Storage;
let firstBackup = '';
let accounts = '';

async function config(name: string, endpoint: string): Promise<string> {
  const path = join(work, name);
  await writeFleetConfig(path, {
    version: 1,
    storages: { main: { plugin: 's3', bucket, endpoint, forcePathStyle: true, region: 'us-east-1', ...CREDENTIALS, partSizeMB: 5 } },
    defaults: { storage: 'main', compression: 'lzo', encryption: 'none', poolSize: 2, prefetch: 0 },
    servers: { db: { dataDirectory: c.dataDirectory, prefix: PREFIX, connection: c.connection } },
  });
  await chownToPostgres(path);
  return path;
}

const walrus = (configPath: string, args: string[], timeoutMs = 180_000) => runWalrus(args, { config: configPath, server: 'db', timeoutMs });

function ok(r: WalrusResult, what: string): WalrusResult {
  assert.equal(r.code, 0, `${what} exited ${r.code}:\n${r.stderr}`);
  return r;
}

async function listedBackups(): Promise<string[]> {
  return JSON.parse(ok(await walrus(healthyConfig, ['backup-list', '--json']), 'backup-list').stdout).map((r: { name: string }) => r.name);
}

async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of direct.list(prefix)) keys.push(o.key);
  return keys.sort();
}

/** Starts `bin/walrus ...args` (through the slow config), resolves once `ready` holds, then SIGKILLs it. Returns its stderr. */
async function killMidway(args: string[], ready: () => Promise<void>): Promise<string> {
  const child = spawn(process.execPath, [WALRUS_BIN, '--config', slowConfig, '--server', 'db', ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  let exitedEarly = false;
  const closed = new Promise<void>((resolve) =>
    child.on('close', () => {
      exitedEarly = true;
      resolve();
    }),
  );
  try {
    await Promise.race([ready(), closed.then(() => Promise.reject(new Error(`walrus ${args.join(' ')} ended before the kill:\n${stderr}`)))]);
  } finally {
    child.kill('SIGKILL');
    await closed;
  }
  assert.ok(exitedEarly);
  return stderr;
}

/** Restores `name` into a new directory, recovers it through wal-fetch, returns pgbench_accounts' count:sum. */
async function restoreAndCount(name: string): Promise<string> {
  const target = join(work, `check-${name}`);
  ok(await walrus(healthyConfig, ['backup-fetch', target, name]), `backup-fetch ${name}`);
  const restored = await createCluster({ dataDirectory: target });
  try {
    await restored.writeConf({ restore_command: `env NODE_OPTIONS= ${process.execPath} ${WALRUS_BIN} --config ${healthyConfig} --server db wal-fetch %f %p` });
    await writeFile(join(target, 'recovery.signal'), '');
    await restored.start();
    await restored.waitForRecoveryEnd(120_000);
    return await restored.query("select count(*) || ':' || sum(abalance) from pgbench_accounts");
  } finally {
    await restored.destroy();
    await rm(target, { recursive: true, force: true });
  }
}

before(async () => {
  s3 = await startS3Server();
  bucket = await s3.bucket();
  proxy = await startFaultProxy({ target: s3.endpoint });
  c = await createCluster();
  work = await c.createOwnedDirectory('work');
  healthyConfig = await config('healthy.yaml', s3.endpoint);
  slowConfig = await config('slow.yaml', proxy.endpoint);
  await c.writeConf({
    archive_mode: 'on',
    archive_command: walrusArchiveCommand(healthyConfig, 'db'),
    wal_level: 'replica',
  });
  await c.start();
  await c.pgbench(['-i', '-s', '2', '-q']);
  accounts = await c.query("select count(*) || ':' || sum(abalance) from pgbench_accounts");
  direct = await s3Manifest.create({ bucket, endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', ...CREDENTIALS }, { log: silentLogger, configDirectory: work, instanceName: 'direct' });
  firstBackup = JSON.parse(ok(await walrus(healthyConfig, ['backup-push', '--fast', '--json']), 'first backup-push').stdout).name;
});
after(async () => {
  await proxy?.stop();
  await direct?.close?.();
  await destroyAllClusters();
  await s3?.stop();
});

test('backup-fetch killed mid-transfer: a rerun exits 5 with a hint naming the directory; after removing it a rerun restores', { timeout: 180_000 }, async () => {
  const target = join(work, 'restore-killed');
  proxy.configure({ trickle: { direction: 'response', bytesPerTick: 64 * 1024, tickMs: 50 } });
  proxy.resetStats();
  try {
    await killMidway(['backup-fetch', target, firstBackup], async () => {
      await proxy.waitFor((s) => s.responseBodyBytes > 1024 * 1024, 60_000);
      // the partition workers write once their first bytes are decoded, which lags the transfer on a loaded machine
      for (const deadline = Date.now() + 60_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
        if ((await readdir(target).catch(() => [] as string[])).length > 1) return;
      }
    });
  } finally {
    proxy.configure({ trickle: null });
  }
  assert.ok(existsSync(join(target, '.walrus-restore-incomplete')), 'the killed restore is marked incomplete');
  assert.ok((await readdir(target)).length > 1, 'it was killed mid-way: files were written');

  const again = await walrus(healthyConfig, ['backup-fetch', target, firstBackup]);
  assert.equal(again.code, 5, again.stderr);
  assert.match(again.stderr, new RegExp(`MSG: ${target} holds an unfinished restore \\(backup ${firstBackup}`));
  assert.match(again.stderr, new RegExp(`HINT: remove it \\(rm -rf ${target}`), 'the hint names the directory to remove');
  assert.ok(existsSync(join(target, '.walrus-restore-incomplete')), 'the refused rerun changed nothing');

  await rm(target, { recursive: true, force: true });
  const fetched = JSON.parse(ok(await walrus(healthyConfig, ['backup-fetch', target, firstBackup, '--json']), 'backup-fetch after removing the directory').stdout);
  assert.equal(fetched.verification, 'sha256');
  assert.ok(!existsSync(join(target, '.walrus-restore-incomplete')));
  assert.ok(existsSync(join(target, 'PG_VERSION')) && existsSync(join(target, 'backup_label')));
  await rm(target, { recursive: true, force: true });
});

test('backup-push killed mid-upload: not listed; delete retain 1 keeps the leftover while it may be running, removes every object of it after a newer backup; that backup restores', { timeout: 300_000 }, async () => {
  // slow uploads, so that the kill lands while a partition is being sent
  proxy.configure({ trickle: { direction: 'request', bytesPerTick: 64 * 1024, tickMs: 50 } });
  proxy.resetStats();
  let stderr: string;
  try {
    stderr = await killMidway(['backup-push', '--fast'], () => proxy.waitFor((s) => s.requestBodyBytes > 1024 * 1024, 60_000));
  } finally {
    proxy.configure({ trickle: null });
  }
  const killed = /backup started\n\s+DETAIL: (base_[0-9A-F]{24}_[0-9A-F]{8}):/.exec(stderr)?.[1];
  assert.ok(killed, `the killed backup's name is in its log:\n${stderr}`);
  const folder = `${PREFIX}/basebackups_005/${killed}/`;
  const leftovers = await keysUnder(folder);
  assert.ok(leftovers.length >= 1, 'the killed backup left objects behind (extended_version.txt at least)');
  assert.equal(await direct.head(`${PREFIX}/basebackups_005/${killed}_backup_stop_sentinel.json`), null, 'no sentinel');
  assert.deepEqual(await listedBackups(), [firstBackup], 'the killed backup is not listed');

  // it started after the newest complete backup: it could be a backup still running, so it stays
  const keep = JSON.parse(ok(await walrus(healthyConfig, ['delete', '--confirm', 'retain', '1', '--json']), 'delete --confirm retain 1').stdout);
  assert.deepEqual(keep.incompleteKept, [killed]);
  assert.deepEqual(keep.incomplete, []);
  assert.deepEqual(await keysUnder(folder), leftovers, 'nothing of it was removed');

  // a newer complete backup: the leftover now starts before it and goes with the older backup
  const second = JSON.parse(ok(await walrus(healthyConfig, ['backup-push', '--fast', '--json']), 'backup-push after the kill').stdout).name;
  assert.deepEqual(await listedBackups(), [firstBackup, second]);
  const removed = ok(await walrus(healthyConfig, ['delete', '--confirm', 'retain', '1']), 'delete --confirm retain 1');
  assert.match(removed.stdout, new RegExp(`deleted interrupted backup ${killed}`));
  assert.match(removed.stdout, new RegExp(`deleted backup ${firstBackup}`));
  assert.deepEqual(await keysUnder(folder), [], 'every object of the killed backup is gone');
  assert.deepEqual(await listedBackups(), [second]);

  assert.equal(await restoreAndCount(second), accounts, 'the remaining backup restores and recovers with every row');
});
