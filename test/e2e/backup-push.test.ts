/**
 * backup-push and backup-list end to end: real PostgreSQL 15 clusters archiving through
 * `bin/walrus wal-push` (the same fleet config), the real `bin/walrus` for every verb, and the
 * objects checked with the real `lzop`, `tar` and `gpg`.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { createCluster, destroyAllClusters, chownToPostgres, type PgCluster } from '../helpers/pg-cluster.js';
import { runWalrus, writeFleetConfig, WALRUS_BIN, REPO_ROOT, type WalrusResult } from '../helpers/walrus-cli.js';
import { startS3Server, S3RVER_CREDENTIALS, type S3TestServer } from '../helpers/s3-server.js';
import { createGnupgHome, type GnupgHome } from '../helpers/gnupg.js';
import { manifest as s3Manifest } from '../../plugins/s3/index.js';
import { silentLogger } from '../../core/log.js';
import type { BackupSentinel } from '../../core/backup-sentinel.js';

const HEADER = 'name\tlast_modified\texpanded_size_bytes\twal_segment_backup_start\twal_segment_offset_backup_start\twal_segment_backup_stop\twal_segment_offset_backup_stop';

let c: PgCluster;
let store: string;
let config: string;
const PREFIX = 'db1';

function fleet(storeRoot: string, cluster: PgCluster, extra: Record<string, unknown> = {}) {
  return {
    version: 1,
    storages: { main: { plugin: 'file', path: storeRoot, fsync: false } },
    defaults: { storage: 'main', compression: 'lzo', encryption: 'none', poolSize: 2, prefetch: 0 },
    servers: {
      db: { dataDirectory: cluster.dataDirectory, prefix: PREFIX, connection: cluster.connection },
      ...extra,
    },
  };
}

const archiveCommand = (configPath: string, server = 'db') => `${WALRUS_BIN} --config ${configPath} --server ${server} wal-push %p`;

before(async () => {
  c = await createCluster();
  store = await c.createOwnedDirectory('store');
  // wal-push runs as postgres, backup-push here as root: give postgres its folder first
  await mkdir(join(store, PREFIX, 'wal_005'), { recursive: true });
  // a server whose backup folder cannot be created (a file stands in the way): fails after pg_backup_start
  await mkdir(join(store, 'broken'), { recursive: true });
  await writeFile(join(store, 'broken', 'basebackups_005'), 'not a folder');
  await chownToPostgres(store);
  config = await writeFleetConfig(
    join(c.tmpRoot, 'fleet.yaml'),
    fleet(store, c, { broken: { dataDirectory: c.dataDirectory, prefix: 'broken', connection: c.connection } }),
  );
  await chownToPostgres(config);
  await c.writeConf({ archive_mode: 'on', archive_command: archiveCommand(config), wal_level: 'replica' });
  await c.start();
  await c.pgbench(['-i', '-s', '2', '-q']);
});
after(destroyAllClusters);

const walrus = (args: string[], timeoutMs = 180_000) => runWalrus(args, { config, server: 'db', timeoutMs });

function ok(r: WalrusResult, what: string): WalrusResult {
  assert.equal(r.code, 0, `${what} exited ${r.code}:\n${r.stderr}`);
  return r;
}

async function sentinelOf(name: string, root = store, prefix = PREFIX): Promise<BackupSentinel> {
  return JSON.parse(await readFile(join(root, prefix, 'basebackups_005', `${name}_backup_stop_sentinel.json`), 'utf8'));
}

function tarList(partitionPath: string): string[] {
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', 'lzop -dc "$1" | tar -tf -', 'bash', partitionPath], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  assert.equal(r.status, 0, `lzop -d | tar -t of ${partitionPath}: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean);
}

function tarExtractOne(partitionPath: string, member: string): string {
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', 'lzop -dc "$1" | tar -xOf - "$2"', 'bash', partitionPath, member], { encoding: 'utf8' });
  assert.equal(r.status, 0, `extracting ${member}: ${r.stderr}`);
  return r.stdout;
}

async function walrusSessions(cluster: PgCluster): Promise<number> {
  return Number(await cluster.query("select count(*) from pg_stat_activity where application_name = 'walrus'"));
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const ABORT_LINE = /aborting backup due to backend exiting before pg_backup_stop was called/g;
const abortedBackups = async (cluster: PgCluster) => ((await readFile(cluster.logFile, 'utf8')).match(ABORT_LINE) ?? []).length;

let firstName = '';

test('backup-push while pgbench writes: one backup listed with WAL-E columns, sentinel, partitions lzop/tar readable', { timeout: 300_000 }, async () => {
  const historyBefore = Number(await c.query('select count(*) from pgbench_history'));
  const load = c.pgbench(['-c', '2', '-T', '10', '-n']);
  let push: WalrusResult;
  try {
    await new Promise((r) => setTimeout(r, 1000)); // the load is running before the backup starts
    push = ok(await walrus(['backup-push', '--json', '--fast']), 'backup-push');
  } finally {
    await load;
  }
  assert.ok(Number(await c.query('select count(*) from pgbench_history')) > historyBefore, 'pgbench wrote');
  const summary = JSON.parse(push.stdout);
  firstName = summary.name;
  assert.match(firstName, /^base_[0-9A-F]{24}_[0-9A-F]{8}$/);
  assert.equal(summary.mode, 'online');
  assert.match(push.stderr, /MSG: begin uploading a base backup volume/);
  assert.match(push.stderr, /STRUCTURED: .*action=push-backup/);

  // backup-list: WAL-E's header and exactly one row; --detail fills the stop columns
  const list = ok(await walrus(['backup-list']), 'backup-list');
  const lines = list.stdout.split('\r\n');
  assert.deepEqual([lines[0], lines.length], [HEADER, 3]);
  const row = lines[1].split('\t');
  assert.equal(row[0], firstName);
  assert.deepEqual(row.slice(2), ['', summary.startSegment, summary.startOffset, '', '']);
  const detail = ok(await walrus(['backup-list', '--detail']), 'backup-list --detail').stdout.split('\r\n')[1].split('\t');
  assert.deepEqual(detail.slice(2), [String(summary.expandedSizeBytes), summary.startSegment, summary.startOffset, summary.stopSegment, summary.stopOffset]);

  // the sentinel: WAL-E's fields, then walrus's block
  const s = await sentinelOf(firstName);
  assert.deepEqual(Object.keys(s).slice(0, 4), ['wal_segment_backup_stop', 'wal_segment_offset_backup_stop', 'expanded_size_bytes', 'spec']);
  assert.equal(s.wal_segment_backup_stop, summary.stopSegment);
  assert.match(s.wal_segment_offset_backup_stop, /^[0-9A-F]{8}$/);
  assert.ok(s.wal_segment_backup_stop >= firstName.slice(5, 29), 'stop segment at or after the start segment');
  assert.deepEqual(s.spec, { base_prefix: `${c.dataDirectory}/`, tablespaces: [] });
  const w = s.walrus!;
  assert.equal(w.mode, 'online');
  assert.equal(w.timeline, 1);
  assert.equal(w.systemIdentifier, await c.query('select system_identifier from pg_control_system()'));
  assert.match(w.serverVersion, /^PostgreSQL 15\./);
  assert.equal(w.compression, 'lzo');
  assert.equal(w.encrypted, false);
  assert.match(w.backupLabel ?? '', new RegExp(`^START WAL LOCATION: ${w.startLsn} \\(file ${summary.startSegment}\\)$`, 'm'));
  assert.ok(existsSync(join(store, PREFIX, 'wal_005', `${s.wal_segment_backup_stop}.lzo`)), 'the stop segment is archived');
  assert.equal(
    await readFile(join(store, PREFIX, 'basebackups_005', firstName, 'extended_version.txt'), 'utf8'),
    await c.query('select version()'),
  );

  // partitions: every stored object matches its record, and lzop -d | tar -t reads them
  const partDir = join(store, PREFIX, 'basebackups_005', firstName, 'tar_partitions');
  const objects = (await readdir(partDir)).sort();
  assert.deepEqual(objects, w.partitions.map((p) => `part_${String(p.number).padStart(8, '0')}.tar.lzo`));
  const members: string[] = [];
  let sizeSum = 0;
  for (const p of w.partitions) {
    const path = join(partDir, objects[p.number]);
    const bytes = await readFile(path);
    assert.equal(bytes.length, p.storedBytes);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), p.storedSha256);
    const names = tarList(path);
    assert.equal(names.length, p.members);
    members.push(...names);
    sizeSum += p.tarBytes;
  }
  assert.ok(sizeSum > s.expanded_size_bytes!, 'tar bytes include headers and padding');
  for (const m of ['PG_VERSION', 'global/pg_control', 'backup_label', 'base/', 'pg_wal/']) assert.ok(members.includes(m), `${m} in the backup`);
  for (const m of ['postmaster.pid', 'postgresql.conf', 'pg_hba.conf']) assert.ok(!members.includes(m), `${m} left out`);
  assert.ok(!members.some((m) => m.startsWith('pg_wal/') && m !== 'pg_wal/'), 'no WAL in the backup');
  // backup_label sits alone in the last partition, exactly what pg_backup_stop returned
  const last = w.partitions[w.partitions.length - 1];
  assert.deepEqual(tarList(join(partDir, objects[last.number])), ['backup_label']);
  assert.equal(tarExtractOne(join(partDir, objects[last.number]), 'backup_label'), w.backupLabel);
  assert.ok(w.partitions.length >= 2);
  assert.equal(await walrusSessions(c), 0, 'the backup connection is closed');
});

test('a backup-push killed (SIGKILL) mid-way leaves no sentinel, is not listed, and the server leaves backup mode', { timeout: 300_000 }, async () => {
  const abortsBefore = await abortedBackups(c);
  // read slowly so that the kill lands during the upload
  const child = spawn(process.execPath, [WALRUS_BIN, '--config', config, '--server', 'db', 'backup-push', '--fast', '--rate-limit', '2M'], {
    cwd: REPO_ROOT,
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no upload started:\n${stderr}`)), 60_000);
      child.stderr!.on('data', (b: Buffer) => {
        stderr += b.toString();
        if (/MSG: begin uploading a base backup volume/.test(stderr)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on('close', () => reject(new Error(`backup-push ended before the kill:\n${stderr}`)));
    });
    await new Promise((r) => setTimeout(r, 1500));
  } finally {
    child.kill('SIGKILL');
    await closed;
  }
  const name = /backup started\n\s+DETAIL: (base_[0-9A-F]{24}_[0-9A-F]{8}):/.exec(stderr)?.[1];
  assert.ok(name, `backup name in the log:\n${stderr}`);
  assert.ok(existsSync(join(store, PREFIX, 'basebackups_005', name, 'extended_version.txt')), 'it was killed mid-way: objects were uploaded');
  assert.ok(!existsSync(join(store, PREFIX, 'basebackups_005', `${name}_backup_stop_sentinel.json`)), 'no sentinel');
  const list = ok(await walrus(['backup-list']), 'backup-list').stdout.split('\r\n').filter(Boolean);
  assert.deepEqual(list.slice(1).map((l) => l.split('\t')[0]), [firstName], 'the killed backup is not listed');

  // PostgreSQL noticed the session end and aborted the backup
  await waitFor('the killed session to end', async () => (await walrusSessions(c)) === 0);
  await waitFor('the server to abort the backup', async () => (await abortedBackups(c)) === abortsBefore + 1);

  const again = ok(await walrus(['backup-push', '--fast', '--json']), 'backup-push after the kill');
  const second = JSON.parse(again.stdout).name;
  const names = ok(await walrus(['backup-list']), 'backup-list').stdout.split('\r\n').filter(Boolean).slice(1).map((l) => l.split('\t')[0]);
  assert.deepEqual(names, [firstName, second]);
  assert.equal((await walrus(['backup-list', 'LATEST'])).stdout.split('\r\n')[1].split('\t')[0], second);
});

test('a storage failure after pg_backup_start: exit 3, no sentinel, pg_backup_stop called (no abort in the server log)', { timeout: 120_000 }, async () => {
  const abortsBefore = await abortedBackups(c);
  const r = await runWalrus(['backup-push', '--fast'], { config, server: 'broken', timeoutMs: 120_000 });
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /base backup failed; no sentinel was written/);
  assert.equal(await walrusSessions(c), 0);
  assert.equal(await abortedBackups(c), abortsBefore, 'walrus stopped the backup itself');
});

test('backup-push refuses a DATADIR that is not the server\'s, and --while-offline on a running cluster', async () => {
  const other = await c.createOwnedDirectory('not-pgdata');
  const wrong = await walrus(['backup-push', other]);
  assert.equal(wrong.code, 5, wrong.stderr);
  assert.match(wrong.stderr, /is not the data directory of the PostgreSQL server/);
  const running = await walrus(['backup-push', '--while-offline']);
  assert.equal(running.code, 5, running.stderr);
  assert.match(running.stderr, /is running \(postmaster\.pid exists\)/);
  const bad = await walrus(['backup-push', '--rate-limit', 'fast']);
  assert.equal(bad.code, 2);
});

test('--while-offline on a cleanly stopped cluster: named after the REDO segment, start = stop, listed LATEST', { timeout: 180_000 }, async () => {
  await c.stop('fast');
  try {
    const r = ok(await walrus(['backup-push', '--while-offline', '--json']), 'offline backup-push');
    const summary = JSON.parse(r.stdout);
    const redo = spawnSync('runuser', ['-u', 'postgres', '--', join(c.binDirectory, 'pg_controldata'), '-D', c.dataDirectory], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
    const redoFile = /Latest checkpoint's REDO WAL file:\s+(\S+)/.exec(redo.stdout)![1];
    assert.equal(summary.name, `base_${redoFile}_${redoFile.slice(-8)}`);
    const s = await sentinelOf(summary.name);
    assert.equal(s.wal_segment_backup_stop, redoFile);
    assert.equal(s.wal_segment_offset_backup_stop, redoFile.slice(-8));
    assert.equal(s.walrus!.mode, 'offline');
    assert.equal(s.walrus!.backupLabel, undefined);
    const partDir = join(store, PREFIX, 'basebackups_005', summary.name, 'tar_partitions');
    const members = (await readdir(partDir)).flatMap((f) => tarList(join(partDir, f)));
    assert.ok(members.includes('global/pg_control') && !members.includes('backup_label'));
    const latest = ok(await walrus(['backup-list', 'LATEST', '--json']), 'backup-list LATEST');
    assert.equal(JSON.parse(latest.stdout)[0].name, summary.name);
    const twice = await walrus(['backup-push', '--while-offline']);
    assert.equal(twice.code, 5, 'the same offline backup again is refused');
  } finally {
    await c.start();
  }
});

// ------------------------------------------------------------------ encrypted, on S3

let s3: S3TestServer | undefined;
let gnupg: GnupgHome | undefined;
after(async () => {
  await s3?.stop();
  await gnupg?.cleanup();
});

test('with gpg on S3: every partition decrypts with gpg -d, then lzop -d | tar t', { timeout: 300_000 }, async () => {
  s3 = await startS3Server();
  gnupg = await createGnupgHome();
  const key = await gnupg.generateKey({ name: 'walrus backup test', passphrase: 'backup-test-passphrase' });
  const c2 = await createCluster();
  const publicKeyPath = join(c2.tmpRoot, 'backup.pub.asc');
  await writeFile(publicKeyPath, key.publicKeyArmored);
  const bucket = await s3.bucket();
  const storage = { plugin: 's3', bucket, endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1',
    // copied field by field: the AWS SDK adds its own bookkeeping key to a credentials object it used
    accessKeyId: S3RVER_CREDENTIALS.accessKeyId, secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey };
  const config2 = await writeFleetConfig(join(c2.tmpRoot, 'fleet.yaml'), {
    version: 1,
    storages: { s3: storage },
    keys: { ops: { plugin: 'gpg', publicKey: `\${file:${publicKeyPath}}` } },
    defaults: { storage: 's3', compression: 'lzo', encryption: 'ops', poolSize: 2, prefetch: 0 },
    servers: { db: { dataDirectory: c2.dataDirectory, prefix: 'enc', connection: c2.connection } },
  });
  await chownToPostgres(c2.tmpRoot);
  await c2.writeConf({ archive_mode: 'on', archive_command: archiveCommand(config2), wal_level: 'replica' });
  await c2.start();
  await c2.pgbench(['-i', '-s', '1', '-q']);

  const push = await runWalrus(['backup-push', '--fast', '--json'], { config: config2, server: 'db', timeoutMs: 240_000 });
  assert.equal(push.code, 0, push.stderr);
  const name = JSON.parse(push.stdout).name;
  const listed = await runWalrus(['backup-list', '--detail', '--json'], { config: config2, server: 'db' });
  assert.equal(listed.code, 0, listed.stderr);
  assert.deepEqual(JSON.parse(listed.stdout).map((r: any) => r.name), [name]);

  const s3Storage = await s3Manifest.create({ ...storage, plugin: undefined } as any, { log: silentLogger, configDirectory: '/', instanceName: 's3' });
  try {
    const sentinelStream = await s3Storage.get(`enc/basebackups_005/${name}_backup_stop_sentinel.json`);
    const chunks: Buffer[] = [];
    for await (const chunk of sentinelStream!) chunks.push(chunk as Buffer);
    const sentinel: BackupSentinel = JSON.parse(Buffer.concat(chunks).toString('utf8')); // plain JSON, as WAL-E writes it
    assert.equal(sentinel.walrus!.encrypted, true);
    const members: string[] = [];
    for (const p of sentinel.walrus!.partitions) {
      const encrypted = join(gnupg.scratch, `part_${p.number}.gpg`);
      await pipeline((await s3Storage.get(p.key))!, createWriteStream(encrypted));
      const head = (await readFile(encrypted)).subarray(0, 4);
      assert.notDeepEqual([...head.subarray(0, 4)], [0x89, 0x4c, 0x5a, 0x4f], 'not plain lzop');
      const decrypted = join(gnupg.scratch, `part_${p.number}.tar.lzo`);
      await gnupg.decryptFile(encrypted, decrypted, key.passphrase);
      members.push(...tarList(decrypted));
    }
    for (const m of ['PG_VERSION', 'global/pg_control', 'backup_label']) assert.ok(members.includes(m), `${m} in the encrypted backup`);
  } finally {
    await s3Storage.close?.();
    await c2.destroy();
  }
});
