/**
 * `status [--json] [--prometheus FILE]`: how fresh each server's archive and backups are, for
 * monitoring. Exit 0 when every server is within its thresholds, 8 (STALE) when one is not, and a
 * failing server's own error code (STORAGE, KEY, ...) when its storage could not be read.
 */
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { EXIT, WalrusError, type ErrorKind } from '../errors.js';
import { listBackups } from '../backup-catalog.js';
import { isSegmentName } from '../layout.js';
import type { ServerConfig } from '../config/fleet-config.js';
import type { ServerRuntime } from '../runtime.js';
import type { VerbRunner } from '../verbs.js';

/** Defaults when a server sets no `status` thresholds (documented in the README and --help). */
export const DEFAULT_MAX_ARCHIVE_AGE_MINUTES = 60;
export const DEFAULT_MAX_BACKUP_AGE_HOURS = 36;

export interface ServerStatus {
  server: string;
  /** Within both thresholds, and the storage was readable. */
  ok: boolean;
  /** Why not ok, one line each. */
  problems: string[];
  lastArchive: { segment: string; key: string; lastModified: string; ageSeconds: number } | null;
  lastBackup: { name: string; lastModified: string; ageSeconds: number } | null;
  backups: { count: number; keep: number | null };
  storage: { objects: number; bytes: number; location: string };
  thresholds: { maxArchiveAgeMinutes: number; maxBackupAgeHours: number };
  /** Set when the storage could not be read: the other fields are then empty. */
  error?: { kind: ErrorKind; message: string };
}

export interface FleetStatus {
  generatedAt: string;
  ok: boolean;
  servers: ServerStatus[];
}

const ageSeconds = (now: Date, then: Date) => Math.max(0, Math.round((now.getTime() - then.getTime()) / 1000));

/** One server's status from its storage. Storage failures propagate (the caller records them). */
export async function serverStatus(rt: Pick<ServerRuntime, 'storage' | 'layout' | 'server'>, now: Date = new Date()): Promise<ServerStatus> {
  const server = rt.server;
  const thresholds = {
    maxArchiveAgeMinutes: server.status.maxArchiveAgeMinutes ?? DEFAULT_MAX_ARCHIVE_AGE_MINUTES,
    maxBackupAgeHours: server.status.maxBackupAgeHours ?? DEFAULT_MAX_BACKUP_AGE_HOURS,
  };
  let objects = 0;
  let bytes = 0;
  let newest: { segment: string; key: string; lastModified: Date } | null = null;
  // One pass over the prefix: sizes of everything, and the newest segment by name (the name, not
  // the time, says how far the archive got; .history/.backup/.partial files are not segments).
  for await (const info of rt.storage.list(server.prefix)) {
    objects += 1;
    bytes += info.size;
    const name = rt.layout.walFileOfKey(info.key);
    if (name !== null && isSegmentName(name) && (newest === null || name > newest.segment)) newest = { segment: name, key: info.key, lastModified: info.lastModified };
  }
  const backups = await listBackups(rt);
  const latest = backups.length ? backups[backups.length - 1] : null;

  const problems: string[] = [];
  const lastArchive = newest && { segment: newest.segment, key: newest.key, lastModified: newest.lastModified.toISOString(), ageSeconds: ageSeconds(now, newest.lastModified) };
  const lastBackup = latest && { name: latest.name, lastModified: latest.lastModified.toISOString(), ageSeconds: ageSeconds(now, latest.lastModified) };
  if (!lastArchive) problems.push('no WAL segment archived');
  else if (lastArchive.ageSeconds > thresholds.maxArchiveAgeMinutes * 60)
    problems.push(`last archived segment is ${formatAge(lastArchive.ageSeconds)} old (threshold ${thresholds.maxArchiveAgeMinutes} min)`);
  if (!lastBackup) problems.push('no base backup');
  else if (lastBackup.ageSeconds > thresholds.maxBackupAgeHours * 3600)
    problems.push(`last base backup is ${formatAge(lastBackup.ageSeconds)} old (threshold ${thresholds.maxBackupAgeHours} h)`);
  return {
    server: server.name,
    ok: problems.length === 0,
    problems,
    lastArchive,
    lastBackup,
    backups: { count: backups.length, keep: server.retention.keepBackups ?? null },
    storage: { objects, bytes, location: rt.storage.describe(server.prefix) },
    thresholds,
  };
}

function failedStatus(server: ServerConfig, e: unknown): ServerStatus {
  const error = e instanceof WalrusError ? { kind: e.kind, message: e.message } : { kind: 'INTERNAL' as const, message: (e as Error)?.message ?? String(e) };
  return {
    server: server.name,
    ok: false,
    problems: [`status unknown: ${error.message}`],
    lastArchive: null,
    lastBackup: null,
    backups: { count: 0, keep: server.retention.keepBackups ?? null },
    storage: { objects: 0, bytes: 0, location: '' },
    thresholds: {
      maxArchiveAgeMinutes: server.status.maxArchiveAgeMinutes ?? DEFAULT_MAX_ARCHIVE_AGE_MINUTES,
      maxBackupAgeHours: server.status.maxBackupAgeHours ?? DEFAULT_MAX_BACKUP_AGE_HOURS,
    },
    error,
  };
}

/** `3d 04h`, `2h 05m`, `4m 10s`, `12s`: two units are enough to judge freshness. */
export function formatAge(seconds: number): string {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  const p = (n: number) => String(n).padStart(2, '0');
  if (d > 0) return `${d}d ${p(h)}h`;
  if (h > 0) return `${h}h ${p(m)}m`;
  if (m > 0) return `${m}m ${p(s)}s`;
  return `${s}s`;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function formatStatusTable(status: FleetStatus): string {
  const header = ['SERVER', 'LAST ARCHIVED', 'AGE', 'LAST BACKUP', 'AGE', 'BACKUPS', 'STORAGE', 'STATUS'];
  const rows = status.servers.map((s) => [
    s.server,
    s.lastArchive?.segment ?? '-',
    s.lastArchive ? formatAge(s.lastArchive.ageSeconds) : '-',
    s.lastBackup?.name ?? '-',
    s.lastBackup ? formatAge(s.lastBackup.ageSeconds) : '-',
    s.error ? '-' : `${s.backups.count}${s.backups.keep !== null ? `/${s.backups.keep}` : ''}`,
    s.error ? '-' : formatBytes(s.storage.bytes),
    s.ok ? 'ok' : s.error ? `ERROR (${s.error.kind})` : 'STALE',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  const lines = [line(header), ...rows.map(line)];
  const problems = status.servers.flatMap((s) => s.problems.map((p) => `${s.server}: ${p}`));
  if (problems.length) lines.push('', ...problems);
  return lines.join('\n') + '\n';
}

/** A Prometheus label value: backslash, quote and newline escaped. */
const labelValue = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/**
 * node_exporter textfile-collector metrics. An age with nothing archived (or no backup) is +Inf:
 * "infinitely old" fires an age alert, where a missing series would silently not.
 */
export function prometheusMetrics(status: FleetStatus): string {
  const metrics: Array<{ name: string; help: string; value: (s: ServerStatus) => number | null }> = [
    { name: 'walrus_last_archive_age_seconds', help: 'Age of the newest archived WAL segment (+Inf: none).', value: (s) => (s.error ? null : (s.lastArchive?.ageSeconds ?? Infinity)) },
    { name: 'walrus_last_backup_age_seconds', help: 'Age of the newest complete base backup (+Inf: none).', value: (s) => (s.error ? null : (s.lastBackup?.ageSeconds ?? Infinity)) },
    { name: 'walrus_backups_count', help: 'Complete base backups in storage.', value: (s) => (s.error ? null : s.backups.count) },
    { name: 'walrus_backups_keep', help: 'Base backups retention keeps (retention.keepBackups).', value: (s) => (s.error ? null : s.backups.keep) },
    { name: 'walrus_storage_bytes', help: "Bytes stored under the server's prefix.", value: (s) => (s.error ? null : s.storage.bytes) },
    { name: 'walrus_status_ok', help: '1 when archive and backups are within their thresholds, 0 when stale or the storage failed.', value: (s) => (s.ok ? 1 : 0) },
  ];
  const lines: string[] = [];
  for (const m of metrics) {
    lines.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} gauge`);
    for (const s of status.servers) {
      const v = m.value(s);
      if (v !== null) lines.push(`${m.name}{server="${labelValue(s.server)}"} ${v === Infinity ? '+Inf' : v}`);
    }
  }
  return lines.join('\n') + '\n';
}

/** Writes beside the target, fsyncs, renames: the collector never reads a half-written file. */
export async function writeFileAtomically(path: string, text: string): Promise<void> {
  const target = resolve(path);
  // node_exporter reads only *.prom: a temp name without that suffix is never collected half-written
  const temp = join(dirname(target), `.${basename(target)}.${process.pid}.tmp`);
  try {
    const handle = await open(temp, 'w', 0o644);
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, target);
  } catch (e) {
    await rm(temp, { force: true }).catch(() => {});
    throw new WalrusError('LOCAL_IO', `writing metrics to ${target} failed: ${(e as Error).message}`, {
      hint: 'check that the directory exists and is writable by this user',
      cause: e,
    });
  }
}

export const run: VerbRunner = async (ctx, _positionals, options) => {
  const fleet = ctx.fleet();
  const servers = ctx.serverName ? [ctx.server()] : Object.values(fleet.servers);
  const now = new Date();
  const results: ServerStatus[] = [];
  for (const server of servers) {
    try {
      results.push(await serverStatus(await ctx.runtime(server), now));
    } catch (e) {
      ctx.log.error(`status of server ${server.name}: ${(e as Error).message}`, e instanceof WalrusError ? { detail: e.detail, hint: e.hint } : {});
      results.push(failedStatus(server, e));
    }
  }
  const status: FleetStatus = { generatedAt: now.toISOString(), ok: results.every((r) => r.ok), servers: results };
  if (typeof options.prometheus === 'string') await writeFileAtomically(options.prometheus, prometheusMetrics(status));
  ctx.out.write(ctx.json ? JSON.stringify(status, null, 2) + '\n' : formatStatusTable(status));
  // A server whose storage failed says more than "stale": its error's code wins.
  const failed = results.find((r) => r.error);
  if (failed?.error) return EXIT[failed.error.kind];
  return status.ok ? EXIT.OK : EXIT.STALE;
};
