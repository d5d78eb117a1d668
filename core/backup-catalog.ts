/**
 * The base backups in a storage, as WAL-E lists them: a backup exists when its stop sentinel
 * `basebackups_005/base_<segment>_<offset>_backup_stop_sentinel.json` does. Folders without one are
 * leftovers of interrupted backups (delete cleans them up) and are never listed.
 *
 * Order: oldest first by the sentinel's last-modified time (WAL-E's order; LATEST is the last),
 * the name breaking ties.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ValidateFunction } from 'ajv';
import { WalrusError, integrityError, notFound, usageError } from './errors.js';
import { ArchiveLayout } from './layout.js';
import { compileSchema, schemaProblems } from './config/schema-validation.js';
import { sentinelSealIntact, type BackupSentinel } from './backup-sentinel.js';
import type { Storage } from './types.js';

/** What the catalog needs of a server runtime (a ServerRuntime fits). */
export interface CatalogRuntime {
  storage: Storage;
  layout: ArchiveLayout;
}

export interface BackupEntry {
  name: string;
  sentinelKey: string;
  /** The sentinel object's last-modified time: when the backup completed. */
  lastModified: Date;
  /** From the name. */
  startSegment: string;
  startOffset: string;
  /** Filled from the sentinel with `detail` (null otherwise, and when the sentinel lacks them). */
  stopSegment: string | null;
  stopOffset: string | null;
  expandedSizeBytes: number | null;
  /** The parsed sentinel, with `detail`. */
  sentinel?: BackupSentinel;
}

/** WAL-E's backup-list columns, in order. */
export const BACKUP_LIST_COLUMNS = [
  'name',
  'last_modified',
  'expanded_size_bytes',
  'wal_segment_backup_start',
  'wal_segment_offset_backup_start',
  'wal_segment_backup_stop',
  'wal_segment_offset_backup_stop',
] as const;

export type BackupListRow = Record<(typeof BACKUP_LIST_COLUMNS)[number], string | number | null>;

/** Sentinels are a few KiB; anything far larger is not one. */
const MAX_SENTINEL_BYTES = 4 * 1024 * 1024;
const SENTINEL_SUFFIX = '_backup_stop_sentinel.json';

let sentinelValidator: ValidateFunction | undefined;
function validateSentinel(): ValidateFunction {
  if (!sentinelValidator) {
    // core/ when run from sources, dist/core/ when compiled
    let text: string;
    try {
      text = readFileSync(fileURLToPath(new URL('../schemas/backup-sentinel.schema.json', import.meta.url)), 'utf8');
    } catch {
      text = readFileSync(fileURLToPath(new URL('../../schemas/backup-sentinel.schema.json', import.meta.url)), 'utf8');
    }
    sentinelValidator = compileSchema(JSON.parse(text));
  }
  return sentinelValidator;
}

/** Parses and checks a sentinel's text; `where` names the object in messages. */
export function parseSentinel(text: string, where: string): BackupSentinel {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw integrityError(`${where} is not valid JSON: ${(e as Error).message}`, {
      hint: 'the sentinel is damaged; the backup cannot be trusted (take a new one, then delete this one)',
    });
  }
  const problems = schemaProblems(validateSentinel(), data);
  if (problems.length) {
    throw integrityError(`${where} is not a backup sentinel: ${problems.map((p) => `${p.path.join('.') || '(top)'} ${p.message}`).join('; ')}`, {
      hint: 'the sentinel is damaged; the backup cannot be trusted (take a new one, then delete this one)',
    });
  }
  if (sentinelSealIntact(data as BackupSentinel) === false) {
    throw integrityError(`${where} does not match its own SHA-256 (walrus.sentinelSha256): it was damaged after it was written`, {
      hint: 'the sentinel is damaged; the backup cannot be trusted (take a new one, then delete this one)',
    });
  }
  return data as BackupSentinel;
}

/** The sentinel of backup `name`; NOT_FOUND when it has none (the backup does not exist). */
export async function readSentinel(rt: CatalogRuntime, name: string): Promise<BackupSentinel> {
  if (!ArchiveLayout.parseBackupName(name)) throw usageError(`'${name}' is not a backup name (base_<24 hex>_<8 hex>)`, { hint: 'walrus backup-list shows the names' });
  const key = rt.layout.sentinelKey(name);
  const stream = await rt.storage.get(key);
  if (!stream) throw notFound(`backup ${name} does not exist in ${rt.storage.describe(rt.layout.backupsFolder())}`, { hint: 'walrus backup-list shows the backups there are' });
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of stream) {
      length += (chunk as Buffer).length;
      if (length > MAX_SENTINEL_BYTES) {
        stream.destroy();
        throw integrityError(`${rt.storage.describe(key)} is larger than ${MAX_SENTINEL_BYTES} bytes: not a backup sentinel`);
      }
      chunks.push(chunk as Buffer);
    }
  } catch (e) {
    if (e instanceof WalrusError) throw e;
    throw integrityError(`reading ${rt.storage.describe(key)} failed: ${(e as Error).message}`, { cause: e });
  }
  return parseSentinel(Buffer.concat(chunks).toString('utf8'), rt.storage.describe(key));
}

/** The backup name a sentinel key stands for, or null (folder contents, other files). */
function backupOfSentinelKey(layout: ArchiveLayout, key: string): string | null {
  if (!key.endsWith(SENTINEL_SUFFIX)) return null;
  const name = layout.backupOfKey(key);
  return name !== null && key === layout.sentinelKey(name) ? name : null;
}

export function compareBackups(a: BackupEntry, b: BackupEntry): number {
  return a.lastModified.getTime() - b.lastModified.getTime() || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

/** Every backup with a sentinel, oldest first. With `detail`, each sentinel is read and parsed. */
export async function listBackups(rt: CatalogRuntime, options: { detail?: boolean } = {}): Promise<BackupEntry[]> {
  const entries: BackupEntry[] = [];
  for await (const info of rt.storage.list(rt.layout.backupsFolder())) {
    const name = backupOfSentinelKey(rt.layout, info.key);
    if (name === null) continue;
    const parts = ArchiveLayout.parseBackupName(name)!;
    entries.push({
      name,
      sentinelKey: info.key,
      lastModified: info.lastModified,
      startSegment: parts.startSegment,
      startOffset: parts.startOffset,
      stopSegment: null,
      stopOffset: null,
      expandedSizeBytes: null,
    });
  }
  entries.sort(compareBackups);
  if (options.detail) await readBackupDetails(rt, entries);
  return entries;
}

/** Reads the sentinels of `entries` (a few at a time: each is one small GET) and fills their stop fields. */
export async function readBackupDetails(rt: CatalogRuntime, entries: BackupEntry[]): Promise<void> {
  const queue = [...entries];
  const worker = async () => {
    for (let e = queue.shift(); e; e = queue.shift()) {
      const sentinel = await readSentinel(rt, e.name);
      e.sentinel = sentinel;
      e.stopSegment = sentinel.wal_segment_backup_stop;
      e.stopOffset = sentinel.wal_segment_offset_backup_stop;
      e.expandedSizeBytes = sentinel.expanded_size_bytes ?? null;
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, entries.length) }, worker));
}

/** `LATEST` (case as WAL-E: exactly that word) or a backup name → an existing backup's name. */
export async function resolveBackupName(rt: CatalogRuntime, nameOrLatest: string): Promise<string> {
  if (nameOrLatest === 'LATEST') {
    const all = await listBackups(rt);
    if (!all.length) throw notFound(`no base backups in ${rt.storage.describe(rt.layout.backupsFolder())}`, { hint: 'take one with walrus backup-push' });
    return all[all.length - 1].name;
  }
  if (!ArchiveLayout.parseBackupName(nameOrLatest)) {
    throw usageError(`'${nameOrLatest}' is neither LATEST nor a backup name (base_<24 hex>_<8 hex>)`, { hint: 'walrus backup-list shows the names' });
  }
  if (!(await rt.storage.head(rt.layout.sentinelKey(nameOrLatest)))) {
    throw notFound(`backup ${nameOrLatest} does not exist in ${rt.storage.describe(rt.layout.backupsFolder())} (no stop sentinel)`, {
      hint: 'walrus backup-list shows the backups there are; a folder without a sentinel is an interrupted backup',
    });
  }
  return nameOrLatest;
}

/** Entries matching QUERY as WAL-E's backup-list does: LATEST is the newest one, else the exact name. */
export function filterBackups(entries: BackupEntry[], query: string | undefined): BackupEntry[] {
  if (query === undefined) return entries;
  if (query === 'LATEST') return entries.slice(-1);
  return entries.filter((e) => e.name === query);
}

export function backupListRow(e: BackupEntry): BackupListRow {
  return {
    name: e.name,
    last_modified: e.lastModified.toISOString(),
    expanded_size_bytes: e.expandedSizeBytes,
    wal_segment_backup_start: e.startSegment,
    wal_segment_offset_backup_start: e.startOffset,
    wal_segment_backup_stop: e.stopSegment,
    wal_segment_offset_backup_stop: e.stopOffset,
  };
}

/**
 * WAL-E's text output: Python's csv writer with the excel-tab dialect, so tab-separated lines
 * ending in CRLF, a header first, empty fields for what was not read. Byte for byte what WAL-E
 * prints, so scripts written against it keep working.
 */
export function formatBackupList(entries: BackupEntry[]): string {
  const line = (fields: Array<string | number | null>) => fields.map((f) => (f === null ? '' : String(f))).join('\t') + '\r\n';
  return line([...BACKUP_LIST_COLUMNS]) + entries.map((e) => line(BACKUP_LIST_COLUMNS.map((c) => backupListRow(e)[c]))).join('');
}
