/**
 * `walrus verify --drill` end to end: a real PostgreSQL 15 archiving through walrus (file storage,
 * lzo) with a marker table, one backup. The drill on the good backup passes and reports every
 * table's row count; `--sql` reports the query's output; on a backup with one flipped byte in its
 * partition it fails with exit 4 naming the object. Every run must leave no scratch directory and
 * no PostgreSQL process behind: the walrus child gets a private TMPDIR so that what it leaves can
 * be told apart from other tests' files.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMarkerTable, destroyAllClusters, insertMarkers, registerCleanup, PG_BIN_DIRECTORY } from '../helpers/pg-cluster.js';
import { createArchivingCluster, flipByte, type ArchivingCluster } from '../helpers/archiving-cluster.js';
import { runWalrus, type WalrusResult } from '../helpers/walrus-cli.js';
import { raiseToRecoveryMinimums, recoveryMinimumsFromControlData, runProgram } from '../../core/local-postgres.js';

const MARKER_ROWS = 250;
let ac: ArchivingCluster;
let backup = '';
let drillTmp = '';

/** verify --drill with TMPDIR = drillTmp: every scratch directory the drill makes is under it. */
const drill = (args: string[]) => runWalrus(['verify', '--drill', ...args], { config: ac.config, server: ac.server, env: { TMPDIR: drillTmp }, timeoutMs: 240_000 });

/** What a drill left behind: entries in its TMPDIR, processes (postgres -D <scratch>) naming it. */
function leftovers(): { files: string[]; processes: string[] } {
  const ps = spawnSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  return {
    files: readdirSync(drillTmp),
    processes: ps.stdout.split('\n').filter((l) => l.includes(drillTmp) && !l.includes('ps -eo')),
  };
}

function assertCleanedUp(r: WalrusResult): void {
  assert.deepEqual(leftovers(), { files: [], processes: [] }, `the drill cleaned up after itself\n${r.stdout}\n${r.stderr}`);
}

before(async () => {
  drillTmp = await mkdtemp(join(tmpdir(), 'walrus-drilltest-'));
  await chmod(drillTmp, 0o755); // the scratch server (postgres) reaches its socket directory through it
  registerCleanup(() => rmSync(drillTmp, { recursive: true, force: true }));
  ac = await createArchivingCluster();
  await createMarkerTable(ac.cluster);
  await insertMarkers(ac.cluster, 'drill', MARKER_ROWS, 'drill');
  const pushed = await ac.walrus(['backup-push', '--fast', '--json']);
  assert.equal(pushed.code, 0, pushed.stderr);
  backup = JSON.parse(pushed.stdout).name;
});
after(async () => {
  await destroyAllClusters();
  await rm(drillTmp, { recursive: true, force: true });
});

// The test clusters run with max_connections = 30, more than the drill's 20: this failed with
// "recovery aborted because of insufficient parameter settings" until ScratchServer matched pg_control.
test('the drill on a good backup passes: exit 0, ok, every step ok, the marker table counted; nothing left behind', { timeout: 240_000 }, async () => {
  const r = await drill(['--json']);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  const report = JSON.parse(r.stdout);
  assert.equal(report.ok, true);
  assert.equal(report.server, ac.server);
  assert.equal(report.backup, backup);
  assert.deepEqual(
    report.steps.map((s: { step: string; ok: boolean }) => [s.step, s.ok]),
    [
      ['fetch', true],
      ['start', true],
      ['recover', true],
      ['check', true],
    ],
  );
  assert.equal(report.check.tables['postgres.marker'], MARKER_ROWS);
  assert.ok(report.check.databases.includes('postgres'));
  assert.equal(typeof report.seconds, 'number');
  assert.equal(report.error, undefined);
  assertCleanedUp(r);
});

test('the drill with --sql reports the query output (text report)', { timeout: 240_000 }, async () => {
  const r = await drill(['--backup', backup, '--sql', 'select count(*) from marker']);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, new RegExp(`^restore drill of ${backup} for ${ac.server}: PASSED in [\\d.]+ s$`, 'm'));
  assert.match(r.stdout, /^ {2}ok {3}check .* query ran$/m);
  assert.match(r.stdout, new RegExp(`^ {7}${MARKER_ROWS}$`, 'm'));
  assertCleanedUp(r);
});

test('the drill on a backup with a flipped byte in its partition fails with exit 4 naming the object, and cleans up', { timeout: 240_000 }, async () => {
  const partition = ac.partitionPath(backup);
  const undo = await flipByte(partition);
  try {
    const r = await drill(['--json']);
    assert.equal(r.code, 4, `${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, false);
    assert.equal(report.backup, backup);
    assert.match(report.error, /part_00000000\.tar\.lzo/);
    assert.deepEqual(report.steps.map((s: { step: string; ok: boolean }) => [s.step, s.ok]), [['fetch', false]]);
    assertCleanedUp(r);

    const text = await drill([]);
    assert.equal(text.code, 4, text.stderr);
    assert.match(text.stdout, new RegExp(`restore drill of ${backup} for ${ac.server}: FAILED`));
    assert.match(text.stdout, /^ {2}FAIL fetch .*part_00000000\.tar\.lzo/m);
    assert.match(text.stdout, /^ {2}error: .*part_00000000\.tar\.lzo/m);
    assertCleanedUp(text);
  } finally {
    await undo();
  }
});

test('the drill on a backup whose start segment is corrupt in the archive: recovery stops, the report carries the server log, nothing left behind', { timeout: 240_000 }, async () => {
  const startSegment = backup.slice('base_'.length, 'base_'.length + 24);
  const undo = await flipByte(join(ac.store, ac.prefix, 'wal_005', `${startSegment}.lzo`));
  try {
    const r = await drill(['--json']);
    assert.equal(r.code, 7, `${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, false);
    assert.equal(report.steps[0].step, 'fetch');
    assert.equal(report.steps[0].ok, true, 'the base backup itself is fine');
    assert.equal(report.steps.at(-1).ok, false);
    assert.match(report.error, new RegExp(`could not restore file "${startSegment}" from archive: child process exited with exit code 204`), 'the error says why, not just "examine the log"');
    // wal-fetch exits above 125 on an integrity failure in recovery, so PostgreSQL stops instead of promoting
    assert.match(report.serverLog, new RegExp(`${startSegment}`));
    assert.match(report.serverLog, /FATAL/);
    assertCleanedUp(r);
  } finally {
    await undo();
  }
});

test("the primary's minimums read from a real pg_controldata raise the drill's settings, never lower them", { timeout: 60_000 }, async () => {
  const r = await runProgram(join(PG_BIN_DIRECTORY, 'pg_controldata'), [ac.cluster.dataDirectory], { osUser: 'postgres', env: { ...process.env, LC_ALL: 'C' } });
  assert.equal(r.code, 0, r.stderr);
  const minimums = recoveryMinimumsFromControlData(r.stdout);
  assert.deepEqual(Object.keys(minimums).sort(), ['max_connections', 'max_locks_per_transaction', 'max_prepared_transactions', 'max_wal_senders', 'max_worker_processes']);
  assert.equal(minimums.max_connections, 30, 'the test harness runs clusters with max_connections = 30');
  const settings = raiseToRecoveryMinimums({ archive_mode: 'off', max_connections: '20', max_worker_processes: '64' }, minimums);
  assert.equal(settings.max_connections, '30');
  assert.equal(settings.max_worker_processes, '64', 'a higher setting stays');
  assert.equal(settings.max_locks_per_transaction, String(minimums.max_locks_per_transaction));
  assert.equal(settings.archive_mode, 'off');
});
