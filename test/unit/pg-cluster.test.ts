import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';
import {
  createCluster,
  destroyAllClusters,
  freePort,
  createMarkerTable,
  insertMarkers,
  markerSummary,
  readExpected,
} from '../helpers/pg-cluster.js';

after(destroyAllClusters);

test('freePort returns a bindable port on 127.0.0.1', async () => {
  const port = await freePort();
  assert.ok(port > 0 && port < 65536);
});

test('a cluster: create, start, query, pgbench, stop, destroy leaves nothing behind', async () => {
  const c = await createCluster({ settings: { work_mem: '8MB' } });
  try {
    assert.ok(existsSync(join(c.dataDirectory, 'PG_VERSION')));
    assert.equal((await stat(c.tmpRoot)).uid, (await stat(c.dataDirectory)).uid);
    assert.equal(await c.isRunning(), false);
    await c.start();
    assert.equal(await c.isRunning(), true);
    assert.equal(await c.query('select 1 + 1'), '2');
    assert.equal(await c.query('show work_mem'), '8MB');
    assert.equal(await c.query("select current_setting('listen_addresses')"), '127.0.0.1');
    assert.deepEqual(await c.queryRows("select 'a', 'b|c' union all select 'd', 'e' order by 1"), [
      ['a', 'b|c'],
      ['d', 'e'],
    ]);
    await assert.rejects(c.query('select * from no_such_table'), /no_such_table/);

    await c.pgbench(['-i', '-s', '1', '-q']);
    assert.equal(await c.query('select count(*) from pgbench_accounts'), '100000');

    await c.writeConf({ work_mem: '16MB' });
    await c.restart();
    assert.equal(await c.query('show work_mem'), '16MB');

    await c.stop();
    assert.equal(await c.isRunning(), false);
    assert.match(await c.logTail(), /database system is shut down/);
    await c.start();
    await c.waitForRecoveryEnd(30_000);
  } finally {
    await c.destroy();
  }
  assert.equal(existsSync(c.tmpRoot), false);
  const processes = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
  assert.ok(processes.includes('ps -eo args'), 'ps lists processes');
  assert.equal(processes.includes(c.dataDirectory), false, 'no process still runs on the data directory');
});

test('marker helpers reproduce the fixture summary format (note = md5(seed || id))', async () => {
  const expected = await readExpected(`${SHARED_FIXTURES}/wal-e-plain/EXPECTED.txt`);
  assert.equal(expected.values.seed, 'dev-plain');
  const c = await createCluster();
  try {
    await c.start();
    await createMarkerTable(c);
    assert.deepEqual(await markerSummary(c), []);
    await insertMarkers(c, 'before-backup', 1000, expected.values.seed);
    await insertMarkers(c, 'after-backup-1', 500, expected.values.seed);
    await insertMarkers(c, 'after-backup-2', 200, expected.values.seed);
    assert.deepEqual(await markerSummary(c), expected.summary);
    assert.equal(expected.summary.length, 3);
  } finally {
    await c.destroy();
  }
});

test('skipInitdb gives an empty postgres-owned data directory that start() refuses without a cluster', async () => {
  const c = await createCluster({ skipInitdb: true });
  try {
    assert.equal(existsSync(join(c.dataDirectory, 'PG_VERSION')), false);
    await assert.rejects(c.start({ timeoutSeconds: 10 }), /pg_ctl start failed/);
  } finally {
    await c.destroy();
  }
});

test('a process that dies with a running cluster still stops and removes it at exit', async () => {
  const script = [
    `const { createCluster } = await import(${JSON.stringify(new URL('../helpers/pg-cluster.ts', import.meta.url).pathname)});`,
    'const c = await createCluster(); await c.start();',
    'console.log(c.tmpRoot);',
    "throw new Error('a failing test');",
  ].join('\n');
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', cwd: process.cwd() });
  assert.notEqual(child.status, 0);
  const tmpRoot = child.stdout.trim();
  assert.match(tmpRoot, /walrus-pg-/, child.stderr);
  assert.equal(existsSync(tmpRoot), false, 'temp dir removed');
  const processes = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
  assert.equal(processes.includes(tmpRoot), false, 'no postgres left running');
});

test('a copied data directory without its configuration files starts as its own cluster', async () => {
  const source = await createCluster();
  let copy: Awaited<ReturnType<typeof createCluster>> | undefined;
  const target = await mkdtemp(join(tmpdir(), 'walrus-restored-'));
  try {
    await source.start();
    await source.query('create table t (x int); insert into t values (42)');
    await source.stop();
    // what a restore leaves: files owned by root, no postgresql.conf / pg_hba.conf / pg_ident.conf
    spawnSync('cp', ['-a', `${source.dataDirectory}/.`, target]);
    for (const f of ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf']) await rm(join(target, f));
    spawnSync('chown', ['-R', 'root:root', target]);
    copy = await createCluster({ dataDirectory: target });
    assert.notEqual(copy.port, source.port);
    await copy.start();
    assert.equal(await copy.query('select x from t'), '42');
    await copy.destroy();
    assert.ok(existsSync(join(target, 'PG_VERSION')), 'destroy leaves a caller-owned data directory in place');
  } finally {
    await copy?.destroy();
    await source.destroy();
    await rm(target, { recursive: true, force: true });
  }
});
