/**
 * The stop sentinel: `basebackups_005/base_<seg>_<offset>_backup_stop_sentinel.json`, written last.
 * WAL-E's fields first (WAL-E reads them), then walrus's own under `walrus` (WAL-E ignores them).
 * A backup without its sentinel does not exist.
 */
import { createHash } from 'node:crypto';
export interface TablespaceEntry {
  loc: string;
  link: string;
}

export interface PartitionRecord {
  /** part_00000000.tar.lzo → 0 */
  number: number;
  key: string;
  /** Bytes of the tar before compression. */
  tarBytes: number;
  /** SHA-256 of the tar: written by earlier walrus versions only (the codec's checksums cover the tar since; see core/partition-encode.ts). */
  tarSha256?: string;
  /** Bytes and SHA-256 of the object as stored (compressed, encrypted). */
  storedBytes: number;
  storedSha256: string;
  members: number;
}

export interface WalrusBackupInfo {
  /** walrus format version of this block. */
  format: 1;
  startLsn: string;
  stopLsn: string;
  timeline: number;
  startedAt: string;
  stoppedAt: string;
  serverVersion: string;
  serverVersionNum: number;
  systemIdentifier: string;
  /** online (pg_backup_start/stop) or offline (--while-offline). */
  mode: 'online' | 'offline';
  compression: string;
  encrypted: boolean;
  /** backup_label contents as returned by pg_backup_stop (also inside the tar). */
  backupLabel?: string;
  tablespaceMap?: string | null;
  partitions: PartitionRecord[];
  /** SHA-256 of the sentinel's compact JSON with this field set to '' (see sealSentinel). */
  sentinelSha256?: string;
  /** extended_version.txt's stored size/sha256 */
  extendedVersion?: { key: string; storedBytes: number; storedSha256: string };
}

export interface BackupSentinel {
  wal_segment_backup_stop: string;
  wal_segment_offset_backup_stop: string;
  expanded_size_bytes: number | null;
  spec: {
    base_prefix: string;
    tablespaces: string[];
    [name: string]: unknown;
  };
  /** Present only on walrus-written backups. */
  walrus?: WalrusBackupInfo;
}

const digestOf = (s: BackupSentinel) => createHash('sha256').update(JSON.stringify({ ...s, walrus: { ...s.walrus!, sentinelSha256: '' } })).digest('hex');

/**
 * The sentinel as written: compact JSON whose walrus block carries the SHA-256 of the sentinel
 * itself (computed with that field empty). JSON that still parses and fits the schema after a
 * flipped byte (a digit in a size, a letter in the backup label) is then still caught.
 */
export function sealSentinel(s: BackupSentinel): string {
  if (!s.walrus) return JSON.stringify(s);
  return JSON.stringify({ ...s, walrus: { ...s.walrus, sentinelSha256: digestOf(s) } });
}

/** true: the seal matches; false: it does not (damaged); null: no seal (WAL-E's, or an older walrus). */
export function sentinelSealIntact(s: BackupSentinel): boolean | null {
  const recorded = s.walrus?.sentinelSha256;
  if (!recorded) return null;
  return digestOf(s) === recorded;
}
