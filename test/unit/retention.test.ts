/** Retention planning (core/retention.ts) on plain listings: which backups, folders and WAL `delete` removes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ArchiveLayout } from '../../core/layout.js';
import { deletionOrder, planDeletion, RetentionPlanError } from '../../core/retention.js';
import type { StorageObjectInfo } from '../../core/types.js';

const layout = new ArchiveLayout('db1/', '.lzo');

/** A listing builder: times increase with each call so the order of creation is the order of completion. */
function archive() {
  const objects: StorageObjectInfo[] = [];
  let clock = Date.UTC(2026, 0, 1);
  const add = (key: string, size = 100) => objects.push({ key, size, lastModified: new Date((clock += 60_000)) });
  return {
    objects,
    add,
    wal(...names: string[]) {
      for (const n of names) add(layout.walKey(n), 1000);
    },
    /** A backup starting at `segment`; complete unless told otherwise. */
    backup(segment: string, options: { complete?: boolean; offset?: number } = {}) {
      const name = ArchiveLayout.backupName(segment, options.offset ?? 0x28);
      add(layout.extendedVersionKey(name), 10);
      add(layout.partitionKey(name, 0), 5000);
      add(layout.partitionKey(name, 1), 5000);
      if (options.complete ?? true) add(layout.sentinelKey(name), 300);
      return name;
    },
  };
}

const seg = (timeline: number, log: number, s: number) =>
  [timeline, log, s].map((n) => n.toString(16).toUpperCase().padStart(8, '0')).join('');

const walNames = (plan: ReturnType<typeof planDeletion>) => plan.wal.keys.map((k) => layout.walFileOfKey(k)).sort();

test('retain N keeps the N newest backups and the WAL from the oldest kept start segment on', () => {
  const a = archive();
  a.wal(seg(1, 0, 1), seg(1, 0, 2));
  const b1 = a.backup(seg(1, 0, 2));
  a.wal(seg(1, 0, 3), `${seg(1, 0, 3)}.00000028.backup`, seg(1, 0, 4));
  const b2 = a.backup(seg(1, 0, 4));
  a.wal(`${seg(1, 0, 4)}.00000028.backup`, seg(1, 0, 5), seg(1, 0, 6));
  const b3 = a.backup(seg(1, 0, 6));
  a.wal(seg(1, 0, 7));

  const plan = planDeletion(layout, a.objects, { kind: 'retain', count: 2 });
  assert.deepEqual(plan.backups.map((b) => b.name), [b1]);
  assert.deepEqual(plan.retained.map((b) => b.name), [b2, b3]);
  assert.equal(plan.walHorizon, seg(1, 0, 4));
  // strictly older than segment 4: the .backup file of segment 4 (b2's own) stays
  assert.deepEqual(walNames(plan), [seg(1, 0, 1), seg(1, 0, 2), seg(1, 0, 3), `${seg(1, 0, 3)}.00000028.backup`].sort());
  assert.equal(plan.wal.first, seg(1, 0, 1));
  assert.equal(plan.wal.last, `${seg(1, 0, 3)}.00000028.backup`);
  assert.equal(plan.wal.bytes, 4000);
  assert.equal(plan.backups[0].folderKeys.length, 3);
  assert.equal(plan.backups[0].bytes, 10 + 5000 + 5000 + 300);
});

test('retain N with N or fewer backups deletes nothing but the WAL before the oldest backup', () => {
  const a = archive();
  a.wal(seg(1, 0, 1), seg(1, 0, 2));
  a.backup(seg(1, 0, 2));
  a.wal(seg(1, 0, 3));
  const plan = planDeletion(layout, a.objects, { kind: 'retain', count: 5 });
  assert.equal(plan.backups.length, 0);
  assert.deepEqual(walNames(plan), [seg(1, 0, 1)]);
});

test('no complete backup: no WAL goes at all (nothing says which WAL is needed)', () => {
  const a = archive();
  a.wal(seg(1, 0, 1), seg(1, 0, 2), seg(1, 0, 3));
  a.backup(seg(1, 0, 2), { complete: false });
  const plan = planDeletion(layout, a.objects, { kind: 'retain', count: 1 });
  assert.equal(plan.walHorizon, null);
  assert.deepEqual(plan.wal.keys, []);
  assert.deepEqual(plan.incomplete, []);
  assert.equal(plan.incompleteKept.length, 1);
});

test('timelines: segment numbers ignore the timeline, and the lowest start of any retained backup protects WAL', () => {
  const a = archive();
  a.wal(seg(1, 0, 0x10), seg(1, 0, 0x11), seg(1, 0, 0x12), seg(1, 0, 0x20));
  a.backup(seg(1, 0, 0x10)); // oldest: goes
  const tl1late = a.backup(seg(1, 0, 0x20)); // completed before the PITR, far along timeline 1
  // a restore to segment 0x12 forked timeline 2; its backup starts "earlier" in segment numbers
  a.wal('00000002.history', seg(2, 0, 0x12), seg(2, 0, 0x13), `${seg(2, 0, 0x13)}.00000028.backup`, seg(2, 0, 0x14));
  const tl2 = a.backup(seg(2, 0, 0x13));

  const plan = planDeletion(layout, a.objects, { kind: 'retain', count: 2 });
  assert.deepEqual(plan.retained.map((b) => b.name), [tl1late, tl2]);
  // horizon is tl2's start (0x13), though tl1late is the older of the two
  assert.equal(plan.walHorizon, seg(2, 0, 0x13));
  assert.deepEqual(walNames(plan), [seg(1, 0, 0x10), seg(1, 0, 0x11), seg(1, 0, 0x12), seg(2, 0, 0x12)].sort());
  // history files stay, whatever their timeline
  assert.ok(!plan.wal.keys.includes(layout.walKey('00000002.history')));
});

test('.history files are never deleted by position; .partial and .backup files go with their segment', () => {
  const a = archive();
  a.wal('00000002.history', '00000003.history', `${seg(1, 0, 5)}.partial`, `${seg(1, 0, 5)}.00000060.backup`, seg(3, 0, 8));
  a.backup(seg(3, 0, 9));
  const plan = planDeletion(layout, a.objects, { kind: 'retain', count: 1 });
  assert.deepEqual(walNames(plan), [`${seg(1, 0, 5)}.00000060.backup`, `${seg(1, 0, 5)}.partial`, seg(3, 0, 8)].sort());
});

test('segment numbers cross log boundaries (…00000000FF < …0000000100000000)', () => {
  const a = archive();
  a.wal(seg(1, 0, 0xff), seg(1, 1, 0), seg(1, 1, 1));
  a.backup(seg(1, 1, 0));
  const plan = planDeletion(layout, a.objects, { kind: 'retain', count: 1 });
  assert.deepEqual(walNames(plan), [seg(1, 0, 0xff)]);
});

test('before NAME removes the backups before it and keeps NAME; an unknown name is refused', () => {
  const a = archive();
  const b1 = a.backup(seg(1, 0, 2));
  const b2 = a.backup(seg(1, 0, 4));
  const b3 = a.backup(seg(1, 0, 6));
  a.wal(seg(1, 0, 3), seg(1, 0, 4), seg(1, 0, 5));
  const plan = planDeletion(layout, a.objects, { kind: 'before', name: b2 });
  assert.deepEqual(plan.backups.map((b) => b.name), [b1]);
  assert.deepEqual(plan.retained.map((b) => b.name), [b2, b3]);
  assert.deepEqual(walNames(plan), [seg(1, 0, 3)]);
  assert.throws(() => planDeletion(layout, a.objects, { kind: 'before', name: ArchiveLayout.backupName(seg(1, 0, 9), 0) }), (e: unknown) => e instanceof RetentionPlanError && e.reason === 'unknown-backup');
});

test('before the oldest backup removes no backup, only WAL before it', () => {
  const a = archive();
  a.wal(seg(1, 0, 1));
  const b1 = a.backup(seg(1, 0, 2));
  const plan = planDeletion(layout, a.objects, { kind: 'before', name: b1 });
  assert.equal(plan.backups.length, 0);
  assert.deepEqual(walNames(plan), [seg(1, 0, 1)]);
});

test('an interrupted backup is removed only when older than the newest complete backup, or with includeIncomplete', () => {
  const a = archive();
  const stale = a.backup(seg(1, 0, 3), { complete: false });
  a.backup(seg(1, 0, 2));
  a.backup(seg(1, 0, 5));
  const running = a.backup(seg(1, 0, 7), { complete: false }); // maybe running right now
  const plan = planDeletion(layout, a.objects, { kind: 'retain', count: 2 });
  assert.deepEqual(plan.incomplete.map((b) => b.name), [stale]);
  assert.deepEqual(plan.incompleteKept.map((b) => b.name), [running]);
  assert.equal(plan.backups.length, 0);
  assert.equal(plan.incomplete[0].sentinelKey, null);
  assert.equal(plan.incomplete[0].folderKeys.length, 3);

  const all = planDeletion(layout, a.objects, { kind: 'retain', count: 2 }, { includeIncomplete: true });
  assert.deepEqual(all.incomplete.map((b) => b.name), [stale, running]);
});

test('an interrupted backup does not count as a backup: retain counts only complete ones', () => {
  const a = archive();
  const b1 = a.backup(seg(1, 0, 2));
  a.backup(seg(1, 0, 4), { complete: false });
  const b2 = a.backup(seg(1, 0, 6));
  const plan = planDeletion(layout, a.objects, { kind: 'retain', count: 1 });
  assert.deepEqual(plan.backups.map((b) => b.name), [b1]);
  assert.deepEqual(plan.retained.map((b) => b.name), [b2]);
});

test('order is completion order (sentinel time), as backup-list shows, not the name', () => {
  const a = archive();
  // the backup starting later finished first (e.g. a long backup overlapping a short one)
  const laterStart = ArchiveLayout.backupName(seg(1, 0, 9), 0x28);
  const earlierStart = ArchiveLayout.backupName(seg(1, 0, 4), 0x28);
  a.add(layout.partitionKey(earlierStart, 0));
  a.add(layout.partitionKey(laterStart, 0));
  a.add(layout.sentinelKey(laterStart));
  a.add(layout.sentinelKey(earlierStart));
  a.wal(seg(1, 0, 3), seg(1, 0, 4), seg(1, 0, 8));
  const plan = planDeletion(layout, a.objects, { kind: 'retain', count: 1 });
  assert.deepEqual(plan.backups.map((b) => b.name), [laterStart]);
  assert.deepEqual(plan.retained.map((b) => b.name), [earlierStart]);
  assert.deepEqual(walNames(plan), [seg(1, 0, 3)]);
});

test('retain 0 or a fraction is refused (use everything)', () => {
  const a = archive();
  a.backup(seg(1, 0, 2));
  for (const count of [0, -1, 1.5, NaN]) {
    assert.throws(() => planDeletion(layout, a.objects, { kind: 'retain', count }), (e: unknown) => e instanceof RetentionPlanError && e.reason === 'bad-count');
  }
});

test('everything: all backups, interrupted folders, WAL incl. history files, strays of the current layout; nothing outside it', () => {
  const a = archive();
  a.wal('00000002.history', seg(1, 0, 1), seg(2, 0, 2));
  a.backup(seg(1, 0, 1));
  a.backup(seg(2, 0, 2), { complete: false });
  a.add('db1/basebackups_005/stray.txt');
  a.add('db1/wal_005/not-a-wal-file');
  a.add('db1/wal_004/000000010000000000000001.lzo');
  a.add('db2/wal_005/000000010000000000000001.lzo');
  const plan = planDeletion(layout, a.objects, { kind: 'everything' });
  assert.equal(plan.backups.length, 1);
  assert.equal(plan.incomplete.length, 1);
  assert.equal(plan.wal.keys.length, 3);
  assert.deepEqual(plan.otherKeys, ['db1/basebackups_005/stray.txt', 'db1/wal_005/not-a-wal-file']);
  const order = deletionOrder(plan);
  assert.equal(order.sentinels.length, 1);
  assert.equal(order.folders.length, 6);
  for (const k of [...order.sentinels, ...order.folders, ...order.wal, ...order.other]) assert.ok(k.startsWith('db1/basebackups_005/') || k.startsWith('db1/wal_005/'), k);
});

test('old-versions: only WAL-E layouts other than 005, under this prefix', () => {
  const a = archive();
  a.backup(seg(1, 0, 1));
  a.wal(seg(1, 0, 1));
  a.add('db1/wal_004/000000010000000000000001.lzo');
  a.add('db1/basebackups_004/base_000000010000000000000001_00000028/tar_partitions/part_0.tar.lzo');
  a.add('db1/basebackups_004/base_000000010000000000000001_00000028_backup_stop_sentinel.json');
  a.add('db1/wal_003/x');
  a.add('db1/wal_0055/x'); // not a layout folder
  a.add('db1/other/wal_004/x');
  a.add('db2/wal_004/000000010000000000000001.lzo');
  const plan = planDeletion(layout, a.objects, { kind: 'old-versions' });
  assert.deepEqual(plan.otherKeys, [
    'db1/basebackups_004/base_000000010000000000000001_00000028/tar_partitions/part_0.tar.lzo',
    'db1/basebackups_004/base_000000010000000000000001_00000028_backup_stop_sentinel.json',
    'db1/wal_003/x',
    'db1/wal_004/000000010000000000000001.lzo',
  ]);
  assert.equal(plan.backups.length, 0);
  assert.equal(plan.wal.keys.length, 0);
});

test('deletion order: sentinels first, then folders, then WAL', () => {
  const a = archive();
  a.wal(seg(1, 0, 1));
  const b1 = a.backup(seg(1, 0, 2));
  a.backup(seg(1, 0, 3));
  const order = deletionOrder(planDeletion(layout, a.objects, { kind: 'retain', count: 1 }));
  assert.deepEqual(order.sentinels, [layout.sentinelKey(b1)]);
  assert.ok(order.folders.every((k) => k.startsWith(layout.backupFolder(b1))));
  assert.deepEqual(order.wal.map((k) => layout.walFileOfKey(k)), [seg(1, 0, 1)]);
});

test('an empty prefix ("") works like any other', () => {
  const root = new ArchiveLayout('', '.lzo');
  const objects: StorageObjectInfo[] = [
    { key: root.walKey(seg(1, 0, 1)), size: 1, lastModified: new Date(1) },
    { key: root.partitionKey(ArchiveLayout.backupName(seg(1, 0, 2), 0), 0), size: 1, lastModified: new Date(2) },
    { key: root.sentinelKey(ArchiveLayout.backupName(seg(1, 0, 2), 0)), size: 1, lastModified: new Date(3) },
  ];
  const plan = planDeletion(root, objects, { kind: 'retain', count: 1 });
  assert.equal(plan.retained.length, 1);
  assert.deepEqual(plan.wal.keys, [root.walKey(seg(1, 0, 1))]);
});
