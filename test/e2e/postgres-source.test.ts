/**
 * The postgres source plugin against a real PostgreSQL 15 (test/helpers/pg-cluster.ts).
 * One cluster for the file, archiving with `cp` so pg_backup_stop really waits for the stop segment.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCluster, destroyAllClusters, freePort, chownToPostgres, type PgCluster } from '../helpers/pg-cluster.js';
import { connectSource, listDataFiles, offlineIdentity, stopSegmentOf, manifest } from '../../plugins/postgres/index.js';
import { isWalrusError } from '../../core/errors.js';
import { silentLogger } from '../../core/log.js';
import type { BackupSource, DataFile } from '../../core/types.js';

let c: PgCluster;
let archiveDirectory: string;

before(async () => {
  c = await createCluster();
  archiveDirectory = await c.createOwnedDirectory('archive');
  await c.writeConf({
    archive_mode: 'on',
    archive_command: `test ! -f ${archiveDirectory}/%f && cp %p ${archiveDirectory}/%f`,
    wal_level: 'replica',
  });
  await c.start();
  await c.pgbench(['-i', '-s', '1', '-q']);
});
after(destroyAllClusters);

async function collect(files: AsyncIterable<DataFile>): Promise<DataFile[]> {
  const out: DataFile[] = [];
  for await (const f of files) out.push(f);
  return out;
}

async function withSource<T>(fn: (s: BackupSource) => Promise<T>): Promise<T> {
  const source = await connectSource(c.connection, silentLogger);
  try {
    return await fn(source);
  } finally {
    await source.close();
  }
}

function expectDatabaseError(pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(isWalrusError(e), `expected a WalrusError, got ${e}`);
    assert.equal(e.kind, 'DATABASE');
    assert.equal(e.exitCode, 7);
    assert.match(e.message, pattern);
    return true;
  };
}

test('stop segment: the segment holding the last byte before the stop LSN', () => {
  const size = 16 * 1024 * 1024;
  assert.deepEqual(stopSegmentOf('0/3000028', 1, size), { segment: '000000010000000000000003', offset: 0x28 });
  assert.deepEqual(stopSegmentOf('0/3000000', 1, size), { segment: '000000010000000000000002', offset: size });
  assert.deepEqual(stopSegmentOf('2/0', 3, size), { segment: '0000000300000001000000FF', offset: size });
});

test('identify reports the server, its system identifier, timeline and data directory', async () => {
  const identity = await withSource((s) => s.identify());
  assert.match(identity.versionText, /^PostgreSQL 15\./);
  assert.ok(identity.versionNum >= 150000 && identity.versionNum < 160000);
  assert.equal(identity.systemIdentifier, await c.query('select system_identifier from pg_control_system()'));
  assert.equal(identity.timeline, 1);
  assert.equal(identity.dataDirectory, c.dataDirectory);
});

test('the manifest creates a connected source from options.connection', async () => {
  assert.equal(manifest.kind, 'source');
  const source = await manifest.create({ connection: c.connection }, { log: silentLogger, configDirectory: '/', instanceName: 'postgres' });
  try {
    assert.equal((await source.identify()).dataDirectory, c.dataDirectory);
  } finally {
    await source.close();
  }
});

let tablespaceOid = '';
let tablespaceDirectory = '';

test('a tablespace appears in tablespaces() and its files are listed under pg_tblspc/<oid>/', async () => {
  tablespaceDirectory = await c.createOwnedDirectory('tblspc1');
  await c.query(`create tablespace ts1 location '${tablespaceDirectory}'`);
  await c.query('create table in_ts1 tablespace ts1 as select g as id from generate_series(1, 1000) g');
  tablespaceOid = await c.query("select oid from pg_tablespace where spcname = 'ts1'");
  const relation = await c.query("select pg_relation_filepath('in_ts1')"); // pg_tblspc/<oid>/PG_15_.../<db>/<node>

  await withSource(async (s) => {
    assert.deepEqual(await s.tablespaces(c.dataDirectory), [{ name: tablespaceOid, loc: `${tablespaceDirectory}/`, link: `pg_tblspc/${tablespaceOid}` }]);
    const files = await collect(s.listDataFiles(c.dataDirectory));
    const link = files.find((f) => f.relativePath === `pg_tblspc/${tablespaceOid}`);
    assert.equal(link?.type, 'symlink');
    assert.equal(link?.linkTarget, tablespaceDirectory);
    const heap = files.find((f) => f.relativePath === relation);
    assert.ok(heap, `${relation} listed`);
    assert.equal(heap.type, 'file');
    assert.ok(heap.absolutePath.startsWith(`${tablespaceDirectory}/`), heap.absolutePath);
    assert.ok(heap.size > 0);
  });
});

test('start and stop a backup while pgbench writes; segments agree with PostgreSQL and the stop segment is archived', async () => {
  const load = c.pgbench(['-c', '2', '-T', '6', '-n']);
  try {
    await withSource(async (s) => {
      const start = await s.startBackup('walrus e2e', { fast: true });
      const [[startFile, startOffset]] = await c.queryRows(`select file_name, file_offset from pg_walfile_name_offset('${start.startLsn}')`);
      assert.equal(start.startSegment, startFile);
      assert.equal(start.startOffset, Number(startOffset));
      assert.equal(start.timeline, 1);
      await assert.rejects(s.startBackup('again', { fast: true }), expectDatabaseError(/already in progress/));

      const files = await collect(s.listDataFiles(c.dataDirectory));
      assert.ok(files.some((f) => f.relativePath.startsWith('base/')));

      const stop = await s.stopBackup();
      assert.match(stop.backupLabel, new RegExp(`^START WAL LOCATION: ${start.startLsn} \\(file ${start.startSegment}\\)$`, 'm'));
      assert.match(stop.backupLabel, /^LABEL: walrus e2e$/m);
      assert.match(stop.tablespaceMap ?? '', new RegExp(`^${tablespaceOid} ${tablespaceDirectory}$`, 'm'));
      const [[stopFile]] = await c.queryRows(`select file_name from pg_walfile_name_offset('${stop.stopLsn}')`);
      assert.equal(stop.stopSegment, stopFile);
      assert.ok(stop.stopSegment >= start.startSegment);
      assert.ok(stop.stopOffset > 0 && stop.stopOffset <= 16 * 1024 * 1024);
      // wait_for_archive: PostgreSQL returned only once the stop segment was archived
      assert.ok(existsSync(join(archiveDirectory, stop.stopSegment)), `${stop.stopSegment} archived`);
      await assert.rejects(s.stopBackup(), expectDatabaseError(/no backup was started/));
    });
  } finally {
    await load;
  }
  assert.ok(Number(await c.query('select count(*) from pgbench_history')) > 0, 'pgbench wrote during the test');
});

test('listDataFiles leaves out what WAL-E leaves out and keeps the rest, sorted, parents first', async () => {
  const d = c.dataDirectory;
  await writeFile(join(d, 'pg_stat_tmp', 'walrus-junk'), 'x');
  await mkdir(join(d, 'base', 'pgsql_tmp'), { recursive: true });
  await writeFile(join(d, 'base', 'pgsql_tmp', 'pgsql_tmp1.0'), 'x');
  await mkdir(join(d, '.walrus', 'prefetch'), { recursive: true });
  await mkdir(join(d, 'lost+found'));
  await writeFile(join(d, 'lost+found', '#123'), 'x');
  await writeFile(join(d, 'backup_label'), 'stale');
  await writeFile(join(d, 'tablespace_map'), 'stale');
  await mkdir(join(d, 'pg_replslot', 'slot1'), { recursive: true });
  await chownToPostgres(d);
  try {
    assert.ok(existsSync(join(d, 'postmaster.pid')), 'the server is running');
    const files = await collect(listDataFiles(d));
    const paths = files.map((f) => f.relativePath);
    const has = (p: string) => paths.includes(p);

    for (const p of ['PG_VERSION', 'base', 'global', 'global/pg_control', 'postgresql.auto.conf', 'pg_wal', 'pg_stat_tmp', 'pg_replslot', 'base/pgsql_tmp', '.walrus', 'pg_xact']) {
      assert.ok(has(p), `${p} is listed`);
    }
    for (const p of ['postmaster.pid', 'postmaster.opts', 'postgresql.conf', 'pg_hba.conf', 'pg_ident.conf', 'backup_label', 'tablespace_map', 'lost+found', 'lost+found/#123']) {
      assert.ok(!has(p), `${p} is left out`);
    }
    for (const dir of ['pg_wal', 'pg_stat_tmp', 'pg_replslot', 'base/pgsql_tmp', '.walrus']) {
      assert.deepEqual(paths.filter((p) => p.startsWith(`${dir}/`)), [], `nothing under ${dir}/`);
      assert.equal(files.find((f) => f.relativePath === dir)?.type, 'directory');
    }
    assert.ok(files.find((f) => f.relativePath === 'PG_VERSION')!.size > 0);
    assert.equal(files.find((f) => f.relativePath === 'base')!.size, 0);
    assert.equal(new Set(paths).size, paths.length, 'no duplicates');
    const seen = new Set<string>();
    for (const p of paths) {
      const parent = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '';
      assert.ok(parent === '' || seen.has(parent), `${parent} listed before ${p}`);
      seen.add(p);
    }
    const top = paths.filter((p) => !p.includes('/'));
    assert.deepEqual(top, [...top].sort());
  } finally {
    for (const p of ['pg_stat_tmp/walrus-junk', 'base/pgsql_tmp', '.walrus', 'lost+found', 'backup_label', 'tablespace_map', 'pg_replslot/slot1']) {
      await rm(join(d, p), { recursive: true, force: true });
    }
  }
});

test('an entry that vanishes during the walk is skipped without error', async () => {
  const doomed = join(c.dataDirectory, 'zz_vanishing');
  await mkdir(join(doomed, 'inner'), { recursive: true });
  await writeFile(join(doomed, 'inner', 'file'), 'x');
  const walk = listDataFiles(c.dataDirectory)[Symbol.asyncIterator]();
  const first = await walk.next(); // the top-level names are read now, zz_vanishing among them
  assert.equal(first.done, false);
  await rm(doomed, { recursive: true });
  const rest: string[] = [(first.value as DataFile).relativePath];
  for (let r = await walk.next(); !r.done; r = await walk.next()) rest.push(r.value.relativePath);
  assert.ok(rest.includes('PG_VERSION'));
  assert.deepEqual(rest.filter((p) => p.startsWith('zz_vanishing')), []);
});

test('connection failures and refused functions are DATABASE errors that name the place, never the password', async () => {
  const port = await freePort();
  const password = 'sekrit-walrus-pass';
  await assert.rejects(connectSource({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', password }, silentLogger), (e: unknown) => {
    expectDatabaseError(new RegExp(`127\\.0\\.0\\.1:${port}.*connection refused`))(e);
    assert.ok(!String((e as Error).message).includes(password));
    assert.ok(!String((e as { hint?: string }).hint).includes(password));
    return true;
  });
  await assert.rejects(connectSource({ ...c.connection, database: 'no_such_db' }, silentLogger), expectDatabaseError(/no_such_db/));

  await c.query('create role walrus_nobody login');
  const weak = await connectSource({ ...c.connection, user: 'walrus_nobody' }, silentLogger);
  try {
    await assert.rejects(weak.startBackup('x', { fast: true }), expectDatabaseError(/pg_backup_start failed .*permission denied/));
  } finally {
    await weak.close();
  }
});

test('offlineIdentity reads pg_controldata: in production while running, REDO segment when shut down', async () => {
  const running = await offlineIdentity(c.dataDirectory, c.binDirectory);
  assert.equal(running.clusterState, 'in production');
  assert.equal(running.cleanlyShutDown, false);

  const systemIdentifier = await c.query('select system_identifier from pg_control_system()');
  await c.stop();
  const identity = await offlineIdentity(c.dataDirectory); // bin directory found from PG_VERSION
  assert.equal(identity.cleanlyShutDown, true);
  assert.equal(identity.systemIdentifier, systemIdentifier);
  assert.equal(identity.timeline, 1);
  assert.equal(identity.majorVersion, '15');
  assert.match(identity.versionText, /^PostgreSQL 15\./);
  assert.match(identity.redoSegment, /^00000001[0-9A-F]{16}$/);
  assert.equal(identity.walEOffset, identity.redoSegment.slice(-8));
  assert.ok(identity.redoByteOffset > 0 && identity.redoByteOffset < identity.walSegmentSize);

  // listing a stopped cluster twice gives the same sequence
  const once = (await collect(listDataFiles(c.dataDirectory))).map((f) => `${f.type} ${f.relativePath} ${f.size}`);
  const twice = (await collect(listDataFiles(c.dataDirectory))).map((f) => `${f.type} ${f.relativePath} ${f.size}`);
  assert.deepEqual(once, twice);

  await assert.rejects(offlineIdentity(c.tmpRoot), expectDatabaseError(/not a PostgreSQL data directory/));
});

test('one backup at a time: a second session cannot take the backup lock until the first session ends', async () => {
  if (!(await c.isRunning())) await c.start(); // the offline test before this one stopped it
  const first = await connectSource(c.connection, silentLogger);
  const second = await connectSource(c.connection, silentLogger);
  try {
    assert.equal(await first.lockBackups(), true);
    assert.equal(await second.lockBackups(), false);
    await first.close(); // a crashed backup-push ends its session the same way
    assert.equal(await second.lockBackups(), true);
  } finally {
    await first.close().catch(() => {});
    await second.close();
  }
});
