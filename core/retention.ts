/**
 * Retention planning: given every object under a server's prefix, decide what `delete` removes.
 * Pure (no storage calls), so each rule is unit-tested on plain listings.
 *
 * Rules (WAL-E's, made explicit):
 * - A backup exists when its stop sentinel does. Backups are ordered as backup-list orders them
 *   (sentinel last-modified time, then name); `retain N` keeps the N newest, `before NAME` keeps
 *   NAME and everything after it.
 * - WAL goes only when its segment number (WAL-E's SegmentNumber: log and seg, any timeline) is
 *   strictly below the lowest start segment of every retained backup. So no retained backup ever
 *   loses a segment it needs, whatever order the timelines put them in. With no backup retained
 *   (or none at all) no WAL goes, except with `everything`.
 * - Timeline `.history` files are kept always (tiny, and recovery onto a later timeline needs the
 *   whole chain). `.backup` history files and `.partial` segments go by their segment number.
 * - Folders without a sentinel are interrupted backups, or a backup running right now. They go
 *   when their start segment is below the newest complete backup's start segment (a running
 *   backup always starts at or after it), or all of them with `includeIncomplete`.
 * - `everything`: every object of the current layout (basebackups_005/, wal_005/).
 * - `old-versions`: objects of WAL-E's older layouts (`basebackups_00N/`, `wal_00N/`, N ≠ 5).
 */
import { ArchiveLayout, BACKUP_FOLDER, WAL_FOLDER, segmentNumber, segmentOfWalFile } from './layout.js';
import type { StorageObjectInfo } from './types.js';

export type RetentionRule =
  | { kind: 'retain'; count: number }
  | { kind: 'before'; name: string }
  | { kind: 'everything' }
  | { kind: 'old-versions' };

export interface PlannedBackup {
  name: string;
  startSegment: string;
  /** The stop sentinel's key, or null for an interrupted backup (no sentinel). */
  sentinelKey: string | null;
  /** When the sentinel was written (null without one). */
  completedAt: Date | null;
  /** Objects inside the backup's folder (partitions, extended_version.txt, manifest). */
  folderKeys: string[];
  bytes: number;
}

export interface PlannedWal {
  keys: string[];
  bytes: number;
  /** Lowest and highest WAL file names among them (by segment number, then name). */
  first: string | null;
  last: string | null;
}

export interface DeletionPlan {
  rule: RetentionRule;
  /** Complete backups that go, oldest first. */
  backups: PlannedBackup[];
  /** Complete backups that stay, oldest first. */
  retained: PlannedBackup[];
  /** Interrupted backups (no sentinel) that go. */
  incomplete: PlannedBackup[];
  /** Interrupted backups that stay (may be running). */
  incompleteKept: PlannedBackup[];
  /** WAL strictly below this segment number goes; null when no WAL goes by position. */
  walHorizon: string | null;
  wal: PlannedWal;
  /** Other objects that go (old layouts for old-versions; strays for everything). */
  otherKeys: string[];
  otherBytes: number;
}

export interface PlanOptions {
  includeIncomplete?: boolean;
}

export class RetentionPlanError extends Error {
  constructor(
    message: string,
    readonly reason: 'unknown-backup' | 'bad-count',
  ) {
    super(message);
  }
}

const OLD_LAYOUT = /^(basebackups|wal)_(\d{3})\//;

/** A WAL object's key → its file name and segment number (null: history file or not WAL). */
function walPosition(layout: ArchiveLayout, key: string): { file: string; number: number | null } | null {
  const file = layout.walFileOfKey(key);
  if (file === null) return null;
  const segment = segmentOfWalFile(file);
  return { file, number: segment === null ? null : segmentNumber(segment) };
}

function compareCompleted(a: PlannedBackup, b: PlannedBackup): number {
  return a.completedAt!.getTime() - b.completedAt!.getTime() || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

/** Groups the objects under basebackups_005/ by backup. Keys belonging to no backup are returned apart. */
export function groupBackups(layout: ArchiveLayout, objects: Iterable<StorageObjectInfo>): { complete: PlannedBackup[]; incomplete: PlannedBackup[]; strays: StorageObjectInfo[] } {
  const byName = new Map<string, PlannedBackup>();
  const strays: StorageObjectInfo[] = [];
  for (const o of objects) {
    if (!o.key.startsWith(layout.backupsFolder())) continue;
    const name = layout.backupOfKey(o.key);
    if (name === null) {
      strays.push(o);
      continue;
    }
    let b = byName.get(name);
    if (!b) {
      b = { name, startSegment: ArchiveLayout.parseBackupName(name)!.startSegment, sentinelKey: null, completedAt: null, folderKeys: [], bytes: 0 };
      byName.set(name, b);
    }
    b.bytes += o.size;
    if (o.key === layout.sentinelKey(name)) {
      b.sentinelKey = o.key;
      b.completedAt = o.lastModified;
    } else b.folderKeys.push(o.key);
  }
  const all = [...byName.values()];
  for (const b of all) b.folderKeys.sort();
  const complete = all.filter((b) => b.sentinelKey !== null).sort(compareCompleted);
  const incomplete = all.filter((b) => b.sentinelKey === null).sort((a, b) => segmentNumber(a.startSegment) - segmentNumber(b.startSegment) || (a.name < b.name ? -1 : 1));
  return { complete, incomplete, strays };
}

interface WalCandidate {
  key: string;
  file: string;
  /** Segment number; -1 for history files (they sort first). */
  number: number;
  size: number;
}

function walPlan(candidates: WalCandidate[]): PlannedWal {
  const sorted = [...candidates].sort((a, b) => a.number - b.number || (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return {
    keys: candidates.map((c) => c.key).sort(),
    bytes: candidates.reduce((sum, c) => sum + c.size, 0),
    first: sorted.length ? sorted[0].file : null,
    last: sorted.length ? sorted[sorted.length - 1].file : null,
  };
}

export function planDeletion(layout: ArchiveLayout, objects: StorageObjectInfo[], rule: RetentionRule, options: PlanOptions = {}): DeletionPlan {
  const plan: DeletionPlan = { rule, backups: [], retained: [], incomplete: [], incompleteKept: [], walHorizon: null, wal: walPlan([]), otherKeys: [], otherBytes: 0 };

  if (rule.kind === 'old-versions') {
    for (const o of objects) {
      if (!o.key.startsWith(layout.prefix)) continue;
      const m = OLD_LAYOUT.exec(o.key.slice(layout.prefix.length));
      if (m && `${m[1]}_${m[2]}` !== BACKUP_FOLDER && `${m[1]}_${m[2]}` !== WAL_FOLDER) {
        plan.otherKeys.push(o.key);
        plan.otherBytes += o.size;
      }
    }
    plan.otherKeys.sort();
    return plan;
  }

  const { complete, incomplete, strays } = groupBackups(layout, objects);

  if (rule.kind === 'everything') {
    plan.backups = complete;
    plan.incomplete = incomplete;
    for (const o of strays) {
      plan.otherKeys.push(o.key);
      plan.otherBytes += o.size;
    }
    const wal: WalCandidate[] = [];
    for (const o of objects) {
      if (!o.key.startsWith(layout.walFolder())) continue;
      const p = walPosition(layout, o.key);
      if (p) wal.push({ key: o.key, file: p.file, number: p.number ?? -1, size: o.size });
      else {
        plan.otherKeys.push(o.key);
        plan.otherBytes += o.size;
      }
    }
    plan.wal = walPlan(wal);
    plan.otherKeys.sort();
    return plan;
  }

  let keepFrom: number;
  if (rule.kind === 'retain') {
    if (!Number.isInteger(rule.count) || rule.count < 1) throw new RetentionPlanError(`retain needs a whole number of backups to keep, at least 1 (got ${rule.count})`, 'bad-count');
    keepFrom = Math.max(0, complete.length - rule.count);
  } else {
    keepFrom = complete.findIndex((b) => b.name === rule.name);
    if (keepFrom < 0) throw new RetentionPlanError(`backup ${rule.name} does not exist (no stop sentinel)`, 'unknown-backup');
  }
  plan.backups = complete.slice(0, keepFrom);
  plan.retained = complete.slice(keepFrom);

  if (complete.length) {
    const newestStart = Math.max(...complete.map((b) => segmentNumber(b.startSegment)));
    for (const b of incomplete) {
      if (options.includeIncomplete || segmentNumber(b.startSegment) < newestStart) plan.incomplete.push(b);
      else plan.incompleteKept.push(b);
    }
  } else if (options.includeIncomplete) plan.incomplete = incomplete;
  else plan.incompleteKept = incomplete;

  if (plan.retained.length) {
    // The lowest start of any retained backup: with several timelines this need not be the oldest one's.
    const horizon = plan.retained.reduce((low, b) => (segmentNumber(b.startSegment) < segmentNumber(low.startSegment) ? b : low));
    plan.walHorizon = horizon.startSegment;
    const limit = segmentNumber(horizon.startSegment);
    const wal: WalCandidate[] = [];
    for (const o of objects) {
      if (!o.key.startsWith(layout.walFolder())) continue;
      const p = walPosition(layout, o.key);
      if (!p || p.number === null) continue; // history files and non-WAL objects stay
      if (p.number < limit) wal.push({ key: o.key, file: p.file, number: p.number, size: o.size });
    }
    plan.wal = walPlan(wal);
  }
  return plan;
}

/** Every key the plan removes, in the order delete removes them: sentinels first, then folders, then WAL. */
export function deletionOrder(plan: DeletionPlan): { sentinels: string[]; folders: string[]; wal: string[]; other: string[] } {
  return {
    sentinels: plan.backups.map((b) => b.sentinelKey!).filter(Boolean),
    folders: [...plan.backups, ...plan.incomplete].flatMap((b) => b.folderKeys),
    wal: plan.wal.keys,
    other: plan.otherKeys,
  };
}
