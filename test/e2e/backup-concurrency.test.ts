/**
 * `delete --confirm retain 1` while a backup-push is running: a real PostgreSQL 15 cluster archiving
 * through walrus (test/helpers/archiving-cluster.ts), two complete backups, then a third pushed at a
 * limited read rate while delete runs again and again (marker rows written in between).
 *
 * core/retention.ts keeps a folder without a sentinel unless it starts before the newest complete
 * backup's start; a running backup always starts at or after it, and WAL goes only below the newest
 * retained backup's start. This proves it with the real verbs: every delete during the push lists the
 * running backup as kept, none removes an object of it or a WAL file from its start on, and once it
 * finishes it is listed, restores and replays through wal-fetch to the primary's rows.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCluster, createMarkerTable, destroyAllClusters, insertMarkers, markerSummary } from '../helpers/pg-cluster.js';
import { createArchivingCluster } from '../helpers/archiving-cluster.js';
import { WALRUS_BIN, REPO_ROOT, type WalrusResult } from '../helpers/walrus-cli.js';
import { segmentNumber, segmentOfWalFile } from '../../core/layout.js';

after(destroyAllClusters);

function ok(r: WalrusResult, what: string): WalrusResult {
  assert.equal(r.code, 0, `${what} exited ${r.code}:\n${r.stderr}`);
  return r;
}

/** Object files under `dir` (relative to it), recursively; not the file storage's temp files (renamed into place when complete). */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (!e.name.startsWith('.walrus-tmp-')) out.push(p.slice(dir.length + 1));
    }
  };
  walk(dir);
  return out.sort();
}

test('delete --confirm retain 1 during a backup-push keeps the running backup and its WAL; it then restores and replays to the primary\'s rows', { timeout: 300_000 }, async () => {
  const a = await createArchivingCluster();
  const { cluster: c, store, prefix } = a;
  await c.pgbench(['-i', '-s', '2', '-q']);
  await createMarkerTable(c);
  const complete: string[] = [];
  for (let i = 1; i <= 2; i++) {
    await insertMarkers(c, `before-backup-${i}`, 100);
    await a.switchAndWaitArchived();
    complete.push(JSON.parse(ok(await a.walrus(['backup-push', '--fast', '--json']), `backup-push ${i}`).stdout).name);
  }
  await insertMarkers(c, 'before-running-backup', 100);
  await a.switchAndWaitArchived();

  const backups = join(store, prefix, 'basebackups_005');
  const walDir = join(store, prefix, 'wal_005');
  const walNumber = (file: string) => {
    const segment = segmentOfWalFile(file.replace(/\.lzo$/, ''));
    return segment === null ? null : segmentNumber(segment);
  };

  // ~55 MB read at 4 MiB/s: the push runs for several seconds, most of them uploading
  const child = spawn(process.execPath, [WALRUS_BIN, '--config', a.config, '--server', a.server, 'backup-push', '--fast', '--json', '--rate-limit', '4M'], {
    cwd: REPO_ROOT,
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  let exitCode: number | null = null;
  const exited = new Promise<number>((resolve) =>
    child.on('close', (code) => {
      exitCode = code ?? 128;
      resolve(exitCode);
    }),
  );
  const killer = setTimeout(() => child.kill('SIGKILL'), 240_000);
  let deletesDuringPush = 0;
  let running = '';
  try {
    const deadline = Date.now() + 60_000;
    while (!/MSG: begin uploading a base backup volume/.test(stderr)) {
      assert.equal(exitCode, null, `backup-push ended before uploading:\n${stderr}`);
      assert.ok(Date.now() < deadline, `no upload started:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    running = /backup started\n\s+DETAIL: (base_[0-9A-F]{24}_[0-9A-F]{8}):/.exec(stderr)?.[1] ?? '';
    assert.ok(running, `the running backup's name is in its log:\n${stderr}`);
    const runningStart = segmentNumber(running.slice(5, 29));
    assert.ok(runningStart >= segmentNumber(complete[1].slice(5, 29)), 'the running backup starts at or after the newest complete one');

    let round = 0;
    while (exitCode === null) {
      const folderBefore = filesUnder(join(backups, running));
      const walBefore = filesUnder(walDir).filter((f) => (walNumber(f) ?? -1) >= runningStart);
      const sentinelBefore = existsSync(join(backups, `${running}_backup_stop_sentinel.json`));
      await insertMarkers(c, 'during-running-backup', 50);
      const r = ok(await a.walrus(['delete', '--confirm', 'retain', '1', '--json']), `delete during the push (round ${++round})`);
      const plan = JSON.parse(r.stdout);
      if (!sentinelBefore) {
        deletesDuringPush++;
        assert.ok(!plan.incomplete.some((b: { name: string }) => b.name === running), `round ${round}: the running backup is not deleted`);
        // kept as an interrupted backup that may be running, or retained when its sentinel appeared while delete listed
        if (folderBefore.length) assert.ok(plan.incompleteKept.includes(running) || plan.retained.includes(running), `round ${round}: the running backup is kept (${JSON.stringify(plan)})`);
      }
      const folderAfter = new Set(filesUnder(join(backups, running)));
      assert.deepEqual(folderBefore.filter((f) => !folderAfter.has(f)), [], `round ${round}: no object of the running backup was removed`);
      const walAfter = new Set(filesUnder(walDir));
      assert.deepEqual(walBefore.filter((f) => !walAfter.has(f)), [], `round ${round}: no WAL from the running backup's start on was removed`);
    }
    process.stderr.write(`# ${round} deletes ran, ${deletesDuringPush} of them while the backup had no sentinel\n`);
  } finally {
    clearTimeout(killer);
    await exited;
  }
  assert.equal(exitCode, 0, `the backup-push running during the deletes:\n${stderr}`);
  assert.equal(JSON.parse(stdout).name, running);
  assert.ok(deletesDuringPush >= 2, `deletes overlapped the push (${deletesDuringPush})`);

  // after both: the first backup went with the first delete, the new one is listed and LATEST (the
  // second one too, unless a delete ran after the new sentinel appeared)
  const listed = JSON.parse(ok(await a.walrus(['backup-list', '--json']), 'backup-list').stdout).map((r: { name: string }) => r.name);
  assert.ok(!listed.includes(complete[0]), 'the oldest backup was deleted');
  assert.equal(listed[listed.length - 1], running);
  assert.ok(listed.length <= 2 && listed.every((n: string) => n === complete[1] || n === running), JSON.stringify(listed));
  await insertMarkers(c, 'after-running-backup', 100);
  await a.switchAndWaitArchived();
  ok(await a.walrus(['delete', '--confirm', 'retain', '1']), 'delete --confirm retain 1 after the push');
  const expected = await markerSummary(c);

  const target = await createCluster({ skipInitdb: true });
  try {
    ok(await a.walrus(['backup-fetch', target.dataDirectory, running]), 'backup-fetch of the backup taken during the deletes');
    await target.writeConf({ restore_command: `env NODE_OPTIONS= ${process.execPath} ${WALRUS_BIN} --config ${a.config} --server ${a.server} wal-fetch %f %p` });
    await writeFile(join(target.dataDirectory, 'recovery.signal'), '');
    await target.start();
    await target.waitForRecoveryEnd(180_000);
    assert.deepEqual(await markerSummary(target), expected, 'recovery replayed every marker row, those written during the deletes too');
    assert.equal(await target.query('select count(*) from pgbench_accounts'), '200000');
  } finally {
    await target.destroy();
    await rm(target.tmpRoot, { recursive: true, force: true });
  }
});
