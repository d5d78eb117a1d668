/**
 * `walrus restore` end to end: a real PostgreSQL 15 archiving through `bin/walrus wal-push`
 * (file storage, lzo), marker rows in three phases around an online backup taken while pgbench
 * writes and a recorded target time, then `restore --target-time` into a new directory started as
 * its own cluster: exactly the rows before the target, and pgbench's books balance. Then
 * --target-immediate (just the backup), --standby (standby.signal, no target), --json fields,
 * and the refusals: a non-empty directory, a target older than every backup (exit 5 each).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCluster, createMarkerTable, destroyAllClusters, insertMarkers, markerSummary, type PgCluster } from '../helpers/pg-cluster.js';
import { createArchivingCluster, serverClockTime, sleep, type ArchivingCluster } from '../helpers/archiving-cluster.js';
import type { WalrusResult } from '../helpers/walrus-cli.js';

let ac: ArchivingCluster;
let c: PgCluster;
let backup = '';
/** A time before the backup started (older than every backup). */
let beforeBackup = '';
/** The recovery target: after phase B, before phase C. */
let target = '';
let summaryA: string[] = [];
let summaryAB: string[] = [];
let summaryABC: string[] = [];
let restoreCount = 0;

function ok(r: WalrusResult, what: string): WalrusResult {
  assert.equal(r.code, 0, `${what} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** A path for a restore that does not exist yet (restore creates it), under the source's temp dir. */
const newRestorePath = () => join(c.tmpRoot, `restored-${++restoreCount}`);

/** The restored directory as a cluster of its own, never archiving into the source's store. */
const startRestored = async (dataDirectory: string): Promise<PgCluster> => {
  const r = await createCluster({ dataDirectory, settings: { archive_mode: 'off' } });
  await r.start();
  return r;
};

const pgbenchBalanced = (r: PgCluster) => r.query('select (select sum(abalance) from pgbench_accounts) = (select coalesce(sum(delta), 0) from pgbench_history)');

before(async () => {
  ac = await createArchivingCluster();
  c = ac.cluster;
  await createMarkerTable(c);
  await insertMarkers(c, 'A', 300, 'restore');
  await c.pgbench(['-i', '-s', '1', '-q']);
  beforeBackup = await serverClockTime(c);
  await sleep(1100);
  // pgbench writes while the backup runs: the restored state must still balance
  const load = c.pgbench(['-T', '4', '-c', '2', '-n']);
  const push = ac.walrus(['backup-push', '--fast', '--json']);
  const [pushed] = await Promise.all([push, load]);
  backup = JSON.parse(ok(pushed, 'backup-push').stdout).name;
  await insertMarkers(c, 'B', 200, 'restore');
  await sleep(1100);
  target = await serverClockTime(c);
  await sleep(1100);
  await insertMarkers(c, 'C', 100, 'restore');
  await ac.switchAndWaitArchived();
  summaryABC = await markerSummary(c);
  summaryA = summaryABC.filter((l) => l.startsWith('A='));
  summaryAB = summaryABC.filter((l) => !l.startsWith('C='));
  assert.equal(summaryABC.length, 3);
});
after(destroyAllClusters);

test('restore --target-time: the new directory recovers to exactly the rows before the target, pgbench balances; --json fields', { timeout: 240_000 }, async () => {
  const dataDirectory = newRestorePath();
  const res = ok(await ac.walrus(['restore', dataDirectory, '--target-time', target, '--json']), 'restore --target-time');
  const summary = JSON.parse(res.stdout);
  assert.deepEqual(Object.keys(summary).sort(), ['backup', 'dataDirectory', 'next', 'signal', 'suppliedConfigFiles', 'target']);
  assert.equal(summary.dataDirectory, dataDirectory);
  assert.equal(summary.backup, backup);
  assert.equal(summary.target, `time ${target}`);
  assert.equal(summary.signal, 'recovery.signal');
  // backups leave the configuration files out (as WAL-E does): restore supplies minimal ones
  assert.deepEqual(summary.suppliedConfigFiles, ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf']);
  for (const f of summary.suppliedConfigFiles) assert.match(await readFile(join(dataDirectory, f), 'utf8'), /^# written by walrus restore/);
  // the harness runs clusters with max_connections = 30; the default 100 would do here, but a primary
  // with more would stop recovery at once ("insufficient parameter settings") without these lines
  const supplied = await readFile(join(dataDirectory, 'postgresql.conf'), 'utf8');
  assert.match(supplied, /^max_connections = 30$/m);
  for (const name of ['max_worker_processes', 'max_wal_senders', 'max_prepared_transactions', 'max_locks_per_transaction']) assert.match(supplied, new RegExp(`^${name} = \\d+$`, 'm'));
  assert.match(summary.next, /pg_ctl -D .* start/);

  assert.ok(existsSync(join(dataDirectory, 'recovery.signal')));
  assert.ok(!existsSync(join(dataDirectory, 'standby.signal')));
  assert.equal(statSync(dataDirectory).uid, statSync(c.dataDirectory).uid, 'restore as root gives the directory to the OS user');
  const autoConf = await readFile(join(dataDirectory, 'postgresql.auto.conf'), 'utf8');
  assert.match(autoConf, /# --- walrus restore: begin ---\nrestore_command = '.*wal-fetch %f %p'\n/);
  assert.match(autoConf, new RegExp(`recovery_target_time = '${target.replace(/[.+]/g, '\\$&')}'`));
  assert.match(autoConf, /recovery_target_action = 'promote'/);

  const r = await startRestored(dataDirectory);
  try {
    await r.waitForRecoveryEnd(180_000);
    assert.deepEqual(await markerSummary(r), summaryAB, 'rows of phases A and B, none of C');
    assert.equal(await pgbenchBalanced(r), 't', 'sum(abalance) = sum(delta)');
    assert.equal(await r.query('select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)'), '00000002', 'promoted onto a new timeline');
  } finally {
    await r.destroy();
  }
});

test('restore --target-immediate: just the backup (phase A rows), consistent', { timeout: 240_000 }, async () => {
  const dataDirectory = newRestorePath();
  const res = ok(await ac.walrus(['restore', dataDirectory, '--target-immediate']), 'restore --target-immediate');
  assert.match(res.stdout, new RegExp(`restored ${backup} into ${dataDirectory}`));
  assert.match(res.stdout, /target the end of the backup \(consistent state\), then promote/);
  assert.match(res.stdout, /supplied postgresql\.conf, pg_hba\.conf, pg_ident\.conf \(the backup had none\): review them/);
  assert.match(res.stdout, /next:\n  .*pg_ctl -D .* start/);
  const autoConf = await readFile(join(dataDirectory, 'postgresql.auto.conf'), 'utf8');
  assert.match(autoConf, /recovery_target = 'immediate'/);
  const r = await startRestored(dataDirectory);
  try {
    await r.waitForRecoveryEnd(180_000);
    assert.deepEqual(await markerSummary(r), summaryA, 'phase B was written after the backup finished');
    assert.equal(await pgbenchBalanced(r), 't');
  } finally {
    await r.destroy();
  }
});

test('restore --standby: standby.signal, restore_command and no recovery target; the standby replays every archived segment', { timeout: 240_000 }, async () => {
  const dataDirectory = newRestorePath();
  const res = ok(await ac.walrus(['restore', dataDirectory, '--standby', '--json']), 'restore --standby');
  assert.equal(JSON.parse(res.stdout).signal, 'standby.signal');
  assert.ok(existsSync(join(dataDirectory, 'standby.signal')));
  assert.ok(!existsSync(join(dataDirectory, 'recovery.signal')));
  const autoConf = await readFile(join(dataDirectory, 'postgresql.auto.conf'), 'utf8');
  const block = autoConf.slice(autoConf.indexOf('# --- walrus restore: begin ---'));
  assert.match(block, /restore_command = /);
  assert.doesNotMatch(block, /recovery_target/);
  const r = await startRestored(dataDirectory);
  try {
    const deadline = Date.now() + 120_000;
    let seen: string[] = [];
    while (Date.now() < deadline) {
      seen = await markerSummary(r).catch(() => []);
      if (seen.length === 3) break;
      await sleep(500);
    }
    assert.deepEqual(seen, summaryABC, 'a standby replays to the end of the archive');
    assert.equal(await r.query('select pg_is_in_recovery()'), 't', 'and stays a standby');
  } finally {
    await r.destroy();
  }
});

test('restore into a non-empty directory: exit 5 with a message, nothing written', { timeout: 120_000 }, async () => {
  const dataDirectory = newRestorePath();
  await mkdir(dataDirectory);
  await writeFile(join(dataDirectory, 'keep-me.txt'), 'old data');
  const res = await ac.walrus(['restore', dataDirectory, '--target-time', target]);
  assert.equal(res.code, 5, res.stderr);
  assert.match(res.stderr, /MSG: .*is not empty \(1 entry: keep-me\.txt\)/);
  assert.deepEqual(readdirSync(dataDirectory), ['keep-me.txt']);
});

test('restore --target-time older than every backup: exit 5 and the message lists the backups there are', { timeout: 120_000 }, async () => {
  const dataDirectory = newRestorePath();
  const res = await ac.walrus(['restore', dataDirectory, '--target-time', beforeBackup]);
  assert.equal(res.code, 5, res.stderr);
  assert.match(res.stderr, /MSG: no backup finished before time .*: the target is older than every backup/);
  assert.match(res.stderr, new RegExp(`DETAIL: backups: ${backup} \\(finished \\d{4}-\\d\\d-\\d\\dT`));
  assert.match(res.stderr, /HINT: pick a target after \d{4}-.*, when the first backup finished/);
  assert.ok(!existsSync(dataDirectory), 'nothing was created');
});

test('restore with two targets is a usage error (exit 2)', { timeout: 60_000 }, async () => {
  const res = await ac.walrus(['restore', newRestorePath(), '--target-time', target, '--target-immediate']);
  assert.equal(res.code, 2, res.stderr);
  assert.match(res.stderr, /choose one recovery target/);
});
