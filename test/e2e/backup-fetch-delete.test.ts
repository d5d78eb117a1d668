/**
 * backup-fetch and delete end to end: a real PostgreSQL 15 archiving through `bin/walrus wal-push`,
 * four backups with marker rows between them, `delete retain 2` (dry run, then --confirm), and a
 * restore of the OLDER retained backup replayed to the end through `wal-fetch`: its marker rows
 * prove that delete kept every WAL segment it needs. Then the refusals: a non-empty target (exit 5),
 * a partition with one flipped byte (exit 4, object named, restore left marked incomplete), and a
 * partition whose recorded SHA-256 does not match (exit 4).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCluster, createMarkerTable, destroyAllClusters, insertMarkers, markerSummary, chownToPostgres, type PgCluster } from '../helpers/pg-cluster.js';
import { runWalrus, walrusArchiveCommand, writeFleetConfig, WALRUS_BIN, type WalrusResult } from '../helpers/walrus-cli.js';
import { segmentNumber, segmentOfWalFile } from '../../core/layout.js';
import { sealSentinel, type BackupSentinel } from '../../core/backup-sentinel.js';
import { flipByte } from '../helpers/archiving-cluster.js';

const PREFIX = 'db1';
const SERVER = 'db';
let c: PgCluster;
let store: string;
let config: string;
const backups: string[] = [];
let finalSummary: string[] = [];

const walrus = (args: string[], timeoutMs = 180_000) => runWalrus(args, { config, server: SERVER, timeoutMs });

function ok(r: WalrusResult, what: string): WalrusResult {
  assert.equal(r.code, 0, `${what} exited ${r.code}:\n${r.stderr}`);
  return r;
}

/** Every object file under the store (the file storage keeps one file per object). */
function objectFiles(root = store): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(p.slice(root.length + 1));
    }
  };
  walk(root);
  return out.sort();
}

/** Archived WAL files that belong to a segment (segments, .backup files), not timeline history. */
const walFiles = () =>
  objectFiles()
    .filter((f) => f.startsWith(`${PREFIX}/wal_005/`))
    .map((f) => f.slice(`${PREFIX}/wal_005/`.length).replace(/\.lzo$/, ''))
    .filter((n) => segmentOfWalFile(n) !== null);
const numberOf = (walFile: string) => segmentNumber(segmentOfWalFile(walFile)!);

async function switchAndWaitArchived(): Promise<void> {
  const segment = await c.query('select pg_walfile_name(pg_switch_wal())');
  const deadline = Date.now() + 60_000;
  while ((await c.query("select coalesce(last_archived_wal, '') from pg_stat_archiver")) < segment) {
    if (Date.now() > deadline) throw new Error(`segment ${segment} was not archived within 60 s\n${await c.logTail()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A new empty data directory (postgres-owned) to restore into, as its own cluster. */
async function restoreTarget(): Promise<PgCluster> {
  return createCluster({ skipInitdb: true });
}

before(async () => {
  c = await createCluster();
  store = await c.createOwnedDirectory('store');
  await mkdir(join(store, PREFIX, 'wal_005'), { recursive: true });
  await chownToPostgres(store);
  config = await writeFleetConfig(join(c.tmpRoot, 'fleet.yaml'), {
    version: 1,
    storages: { main: { plugin: 'file', path: store, fsync: false } },
    defaults: { storage: 'main', compression: 'lzo', encryption: 'none', poolSize: 2, prefetch: 0 },
    servers: { [SERVER]: { dataDirectory: c.dataDirectory, prefix: PREFIX, connection: c.connection } },
  });
  await chownToPostgres(config);
  await c.writeConf({ archive_mode: 'on', archive_command: walrusArchiveCommand(config, SERVER), wal_level: 'replica' });
  await c.start();
  await createMarkerTable(c);
});
after(destroyAllClusters);

test('four backups with marker rows between them; delete retain 2: dry run deletes nothing, --confirm keeps two and their WAL', { timeout: 600_000 }, async () => {
  for (let i = 1; i <= 4; i++) {
    await insertMarkers(c, `before-backup-${i}`, 200, 'fetch-delete');
    await switchAndWaitArchived(); // each backup starts in a later segment, so there is WAL between them to delete
    const push = ok(await walrus(['backup-push', '--fast', '--json']), `backup-push ${i}`);
    backups.push(JSON.parse(push.stdout).name);
  }
  await insertMarkers(c, 'after-backup-4', 100, 'fetch-delete');
  await switchAndWaitArchived();
  finalSummary = await markerSummary(c);
  assert.equal(finalSummary.length, 5);

  const listed = JSON.parse(ok(await walrus(['backup-list', '--json']), 'backup-list').stdout).map((r: { name: string }) => r.name);
  assert.deepEqual(listed, backups);

  const objectsBefore = objectFiles();
  const walBefore = walFiles();
  assert.ok(walBefore.some((f) => f.endsWith('.backup')), 'PostgreSQL archived backup history files');
  const dry = ok(await walrus(['delete', 'retain', '2']), 'delete retain 2 (dry run)');
  assert.match(dry.stdout, /dry run/);
  assert.match(dry.stdout, new RegExp(`would delete backup ${backups[0]}`));
  assert.match(dry.stdout, new RegExp(`would delete backup ${backups[1]}`));
  assert.doesNotMatch(dry.stdout, new RegExp(`would delete backup (${backups[2]}|${backups[3]})`));
  assert.match(dry.stdout, /would delete \d+ WAL files/);
  assert.deepEqual(objectFiles(), objectsBefore, 'a dry run deletes nothing');

  const dryJson = JSON.parse(ok(await walrus(['delete', 'retain', '2', '--json']), 'delete retain 2 --json').stdout);
  assert.equal(dryJson.dryRun, true);
  assert.deepEqual(dryJson.retained, backups.slice(2));
  const startOf = (name: string) => name.slice('base_'.length, 'base_'.length + 24);
  assert.equal(dryJson.wal.horizon, startOf(backups[2]));
  const expectedWalGone = walBefore.filter((f) => numberOf(f) < segmentNumber(startOf(backups[2])));
  assert.ok(expectedWalGone.length > 0, 'there is WAL older than the third backup');
  assert.equal(dryJson.wal.count, expectedWalGone.length);

  const confirmed = ok(await walrus(['delete', '--confirm', 'retain', '2']), 'delete --confirm retain 2');
  assert.match(confirmed.stdout, new RegExp(`deleted backup ${backups[0]}`));
  const after = JSON.parse(ok(await walrus(['backup-list', '--json']), 'backup-list').stdout).map((r: { name: string }) => r.name);
  assert.deepEqual(after, backups.slice(2));
  const remaining = objectFiles();
  for (const gone of backups.slice(0, 2)) assert.ok(!remaining.some((f) => f.includes(gone)), `nothing of ${gone} is left`);
  const walAfter = walFiles();
  assert.deepEqual(walAfter, walBefore.filter((f) => !expectedWalGone.includes(f)));
  assert.ok(walAfter.every((f) => numberOf(f) >= segmentNumber(startOf(backups[2]))));
  assert.ok(walAfter.includes(startOf(backups[2])), 'the start segment of the oldest retained backup stays');
});

test('the older retained backup restores with backup-fetch and replays to the end through wal-fetch', { timeout: 600_000 }, async () => {
  assert.equal(backups.length, 4, 'needs the backups of the first test');
  const r = await restoreTarget();
  try {
    const fetched = JSON.parse(ok(await walrus(['backup-fetch', r.dataDirectory, backups[2], '--json']), 'backup-fetch').stdout);
    assert.equal(fetched.backup, backups[2]);
    assert.equal(fetched.verification, 'sha256');
    assert.ok(!existsSync(join(r.dataDirectory, '.walrus-restore-incomplete')));
    assert.ok(existsSync(join(r.dataDirectory, 'backup_label')), 'an online backup restores with its backup_label');
    await r.writeConf({ restore_command: `env NODE_OPTIONS= ${process.execPath} ${WALRUS_BIN} --config ${config} --server ${SERVER} wal-fetch %f %p` });
    await writeFile(join(r.dataDirectory, 'recovery.signal'), '');
    await r.start();
    await r.waitForRecoveryEnd(180_000);
    assert.deepEqual(await markerSummary(r), finalSummary);
  } finally {
    await r.destroy();
  }
});

test('backup-fetch into a non-empty directory is refused with exit 5 and says what is there', { timeout: 120_000 }, async () => {
  const r = await restoreTarget();
  try {
    await writeFile(join(r.dataDirectory, 'old-notes.txt'), 'keep me');
    const res = await walrus(['backup-fetch', r.dataDirectory, 'LATEST']);
    assert.equal(res.code, 5, res.stderr);
    assert.match(res.stderr, /is not empty \(1 entry: old-notes\.txt\)/);
    assert.deepEqual(readdirSync(r.dataDirectory), ['old-notes.txt']);
  } finally {
    await r.destroy();
  }
});

test('a partition with one flipped byte: exit 4 naming the object; the directory stays marked incomplete and a rerun is refused', { timeout: 300_000 }, async () => {
  assert.equal(backups.length, 4, 'needs the backups of the first test');
  const name = backups[3];
  const partition = join(store, PREFIX, 'basebackups_005', name, 'tar_partitions', 'part_00000000.tar.lzo');
  const undo = await flipByte(partition, (size) => Math.floor(size / 2));
  const r = await restoreTarget();
  try {
    const res = await walrus(['backup-fetch', r.dataDirectory, name]);
    assert.equal(res.code, 4, res.stderr);
    assert.match(res.stderr, /MSG: .*part_00000000\.tar\.lzo/);
    assert.ok(existsSync(join(r.dataDirectory, '.walrus-restore-incomplete')), 'the failed restore is marked incomplete');
    const marker = JSON.parse(await readFile(join(r.dataDirectory, '.walrus-restore-incomplete'), 'utf8'));
    assert.equal(marker.backup, name);

    const again = await walrus(['backup-fetch', r.dataDirectory, name]);
    assert.equal(again.code, 5, again.stderr);
    assert.match(again.stderr, /unfinished restore/);
    assert.match(again.stderr, /HINT: remove it/);
  } finally {
    await undo();
    await r.destroy();
  }
});

test('a partition whose stored bytes differ from the SHA-256 its sentinel records: exit 4', { timeout: 300_000 }, async () => {
  assert.equal(backups.length, 4, 'needs the backups of the first test');
  const name = backups[3];
  const sentinelPath = join(store, PREFIX, 'basebackups_005', `${name}_backup_stop_sentinel.json`);
  const original = await readFile(sentinelPath, 'utf8');
  const sentinel = JSON.parse(original) as BackupSentinel;
  assert.ok(sentinel.walrus?.partitions.length, 'walrus records the partitions');
  // The object stays a valid lzop stream: only the record disagrees, as after a swap of objects.
  // (The sentinel is resealed: a sentinel edited without its seal is caught earlier, by its own SHA-256.)
  const p = sentinel.walrus!.partitions[0];
  p.storedSha256 = (p.storedSha256[0] === '0' ? '1' : '0') + p.storedSha256.slice(1);
  await writeFile(sentinelPath, sealSentinel(sentinel));
  const r = await restoreTarget();
  try {
    const res = await walrus(['backup-fetch', r.dataDirectory, name]);
    assert.equal(res.code, 4, res.stderr);
    assert.match(res.stderr, /part_00000000\.tar\.lzo does not match its sentinel:.*SHA-256 differs/);
    assert.ok(existsSync(join(r.dataDirectory, '.walrus-restore-incomplete')));
  } finally {
    await writeFile(sentinelPath, original);
    await r.destroy();
  }
});
