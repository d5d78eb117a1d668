/**
 * Object names: WAL-E's layout version 005 (shared/wal-e-format.md), so WAL-E and walrus read each
 * other's archives. Where objects go is decided here, never in a storage plugin.
 */
import { usageError } from './errors.js';

export const WAL_FOLDER = 'wal_005';
export const BACKUP_FOLDER = 'basebackups_005';
/** WAL-E names every object `.lzo`, whatever codec wrote it; walrus does the same for its lzo codec. */
export const DEFAULT_SUFFIX = '.lzo';
export const SEGMENT_SIZE = 16 * 1024 * 1024;

const SEGMENT = /^[0-9A-F]{24}$/;
/** Every file PostgreSQL archives: segments, timeline history, backup history, partial segments. */
const WAL_FILE = /^([0-9A-F]{24})(\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$/;
const BACKUP_NAME = /^base_([0-9A-F]{24})_([0-9A-F]{8})$/;

export function isSegmentName(name: string): boolean {
  return SEGMENT.test(name);
}

export function isWalFileName(name: string): boolean {
  return WAL_FILE.test(name);
}

export interface SegmentParts {
  timeline: number;
  log: number;
  seg: number;
}

export function parseSegmentName(name: string): SegmentParts {
  if (!SEGMENT.test(name)) throw usageError(`'${name}' is not a WAL segment name (24 upper-case hex digits)`);
  return { timeline: parseInt(name.slice(0, 8), 16), log: parseInt(name.slice(8, 16), 16), seg: parseInt(name.slice(16, 24), 16) };
}

const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');

export function segmentName(p: SegmentParts): string {
  return hex8(p.timeline) + hex8(p.log) + hex8(p.seg);
}

/** Segments per "log" (xlogid) for a segment size: 256 for 16 MB segments. */
export function segmentsPerLog(segmentSize = SEGMENT_SIZE): number {
  return 0x100000000 / segmentSize;
}

/**
 * WAL-E's SegmentNumber: log and seg as one increasing integer, ignoring the timeline. Used for
 * garbage collection ("older than the backup's start segment") across timelines.
 */
export function segmentNumber(name: string, segmentSize = SEGMENT_SIZE): number {
  const p = parseSegmentName(name);
  return p.log * segmentsPerLog(segmentSize) + p.seg;
}

export function nextSegmentName(name: string, segmentSize = SEGMENT_SIZE): string {
  const p = parseSegmentName(name);
  const perLog = segmentsPerLog(segmentSize);
  return p.seg + 1 >= perLog ? segmentName({ timeline: p.timeline, log: p.log + 1, seg: 0 }) : segmentName({ ...p, seg: p.seg + 1 });
}

/** The segment a WAL file belongs to (`...0031.00000028.backup` → `...0031`), or null for history files. */
export function segmentOfWalFile(name: string): string | null {
  const m = WAL_FILE.exec(name);
  return m && m[1] ? m[1] : null;
}

/** LSN `X/Y` → 64-bit position as bigint. */
export function parseLsn(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn.trim());
  if (!m) throw usageError(`'${lsn}' is not an LSN (like 0/16B3748)`);
  return (BigInt(parseInt(m[1], 16)) << 32n) | BigInt(parseInt(m[2], 16));
}

export function formatLsn(position: bigint): string {
  return `${(position >> 32n).toString(16).toUpperCase()}/${(position & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** The segment that holds an LSN on a timeline, and the offset inside it. */
export function segmentOfLsn(lsn: string, timeline: number, segmentSize = SEGMENT_SIZE): { segment: string; offset: number } {
  const pos = parseLsn(lsn);
  const segNo = pos / BigInt(segmentSize);
  const perLog = BigInt(segmentsPerLog(segmentSize));
  return {
    segment: segmentName({ timeline, log: Number(segNo / perLog), seg: Number(segNo % perLog) }),
    offset: Number(pos % BigInt(segmentSize)),
  };
}

export class ArchiveLayout {
  /** `prefix` is '' or ends with '/'. */
  constructor(readonly prefix: string, readonly suffix: string = DEFAULT_SUFFIX) {}

  walKey(fileName: string): string {
    return `${this.prefix}${WAL_FOLDER}/${fileName}${this.suffix}`;
  }

  walFolder(): string {
    return `${this.prefix}${WAL_FOLDER}/`;
  }

  /** The WAL file name of a key under wal_005/, or null for anything else. */
  walFileOfKey(key: string): string | null {
    if (!key.startsWith(this.walFolder())) return null;
    const rest = key.slice(this.walFolder().length);
    // strip one codec suffix (.lzo, .zst, ...) if present: the WAL name itself contains dots
    const name = rest.replace(/\.(lzo|zst|lz4|br|gz)$/, '');
    return isWalFileName(name) ? name : null;
  }

  backupsFolder(): string {
    return `${this.prefix}${BACKUP_FOLDER}/`;
  }

  static backupName(startSegment: string, startOffset: number): string {
    return `base_${startSegment}_${hex8(startOffset)}`;
  }

  static parseBackupName(name: string): { startSegment: string; startOffset: string } | null {
    const m = BACKUP_NAME.exec(name);
    return m ? { startSegment: m[1], startOffset: m[2] } : null;
  }

  backupFolder(name: string): string {
    return `${this.backupsFolder()}${name}/`;
  }

  sentinelKey(name: string): string {
    return `${this.backupsFolder()}${name}_backup_stop_sentinel.json`;
  }

  extendedVersionKey(name: string): string {
    return `${this.backupFolder(name)}extended_version.txt`;
  }

  partitionKey(name: string, n: number): string {
    return `${this.backupFolder(name)}tar_partitions/part_${String(n).padStart(8, '0')}.tar${this.suffix}`;
  }

  /** walrus's own per-backup manifest (sizes and SHA-256 of every object); WAL-E ignores it. */
  manifestKey(name: string): string {
    return `${this.backupFolder(name)}walrus_manifest.json`;
  }

  /** The backup a key under basebackups_005/ belongs to (folder contents and sentinel). */
  backupOfKey(key: string): string | null {
    if (!key.startsWith(this.backupsFolder())) return null;
    const rest = key.slice(this.backupsFolder().length);
    const m = /^(base_[0-9A-F]{24}_[0-9A-F]{8})(\/|_backup_stop_sentinel\.json$)/.exec(rest);
    return m ? m[1] : null;
  }
}
