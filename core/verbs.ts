/**
 * Every verb, declared once: its usage, help, example and options. The CLI parses with this table,
 * `--help` prints from it, and the README's verb list is written from it. A verb's code lives in
 * core/operations/<verb>.ts and is imported only when that verb runs.
 */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  description: string;
  /** Shown in help as --name VALUE */
  valueName?: string;
  multiple?: boolean;
}

export interface VerbSpec {
  name: string;
  summary: string;
  usage: string;
  description?: string;
  examples: string[];
  options?: Record<string, OptionSpec>;
  positionals: { min: number; max: number };
  /** Needs --config (and a server, unless `fleetWide`). */
  needsConfig: boolean;
  fleetWide?: boolean;
  load: () => Promise<{ run: VerbRunner }>;
}

import type { VerbContext } from './cli.js';
export type VerbRunner = (ctx: VerbContext, positionals: string[], options: Record<string, string | boolean | string[] | undefined>) => Promise<number | void>;

const JSON_OPTION: OptionSpec = { type: 'boolean', description: 'machine-readable JSON on stdout' };

export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  config: { type: 'string', short: 'c', valueName: 'FILE', description: 'fleet config (YAML); default $WALRUS_CONFIG' },
  server: { type: 'string', short: 's', valueName: 'NAME', description: 'server of the fleet; default $WALRUS_SERVER, or the only one' },
  'log-format': { type: 'string', valueName: 'text|json', description: 'log lines on stderr: WAL-E-style text (default) or JSON' },
  'log-level': { type: 'string', valueName: 'LEVEL', description: 'error, warn, info (default), debug' },
  debug: { type: 'boolean', description: 'debug logging and stack traces on errors' },
  help: { type: 'boolean', short: 'h', description: 'help for walrus or for a verb' },
  version: { type: 'boolean', description: 'print the version' },
};

export const VERBS: VerbSpec[] = [
  {
    name: 'config',
    summary: 'check a fleet config: walrus config check FILE',
    usage: 'config check [FILE]',
    description:
      'Loads and validates the fleet config (schema, references, secrets, plugin options) and prints each server\'s resolved storage, compression, encryption and schedules, never a secret. Exits 2 with one line per problem on a bad file.',
    examples: ['walrus config check configs/example-fleet.yaml', 'walrus --config fleet.yaml config check --json'],
    options: { json: JSON_OPTION },
    positionals: { min: 1, max: 2 },
    needsConfig: false,
    load: () => import('./operations/config-check.js'),
  },
  {
    name: 'wal-push',
    summary: "archive one WAL file (PostgreSQL's archive_command)",
    usage: 'wal-push WAL_PATH | wal-push --follow PG_WAL',
    description:
      'Compresses, encrypts and uploads one file PostgreSQL finished (segment, .history, .backup, .partial) and exits 0 only once the object is complete in storage. ' +
      'An already archived file with the same content succeeds; with different content it is refused (exit 5). With poolSize > 1, up to 4 × poolSize - 1 of the next .ready segments are pushed ahead, poolSize at once, ' +
      'and recorded in pg_wal/.walrus/pushed/ so that PostgreSQL\'s calls for them return at once (through the sh front bin/walrus-push-hit, without starting node); archive_status/ is never touched. ' +
      'For a running server (pushFollower, on by default) it then starts, detached, one `wal-push --follow PG_WAL` per pg_wal, which pushes each segment as soon as it is marked ready, ' +
      'poolSize at once, until nothing was ready for 60 s, the server stops or the config changes; the front waits for a push in progress instead of starting node. ' +
      '`walrus export-pg SERVER` prints the archive_command to use.',
    examples: ["archive_command = '/bin/sh /opt/walrus/bin/walrus-push-hit /usr/bin/node /opt/walrus/bin/walrus --config /etc/walrus/fleet.yaml --server db1 wal-push %p'"],
    options: {
      'pool-size': { type: 'string', valueName: 'N', description: 'segments pushed at once (default: poolSize from the config)' },
      follow: { type: 'boolean', description: 'stay and push segments as the server marks them ready (started by wal-push)' },
    },
    positionals: { min: 1, max: 1 },
    needsConfig: true,
    load: () => import('./operations/wal-push.js'),
  },
  {
    name: 'wal-fetch',
    summary: "restore one WAL file (PostgreSQL's restore_command)",
    usage: 'wal-fetch WAL_NAME DESTINATION',
    description:
      'Downloads, decrypts and decompresses one archived file to DESTINATION: written beside it, fsynced, renamed, so DESTINATION is whole or absent. ' +
      'A file that is not archived exits 1 (PostgreSQL asks for such files routinely). During archive recovery a storage, key or integrity failure exits above 125 ' +
      '(203, 204, 206) so that PostgreSQL stops instead of promoting past a hole. Starts a background prefetch of the next segments (prefetch in the config).',
    examples: ["restore_command = '/opt/walrus/bin/walrus --config /etc/walrus/fleet.yaml --server db1 wal-fetch %f %p'"],
    positionals: { min: 2, max: 2 },
    needsConfig: true,
    load: () => import('./operations/wal-fetch.js'),
  },
  {
    name: 'wal-prefetch',
    summary: 'download WAL segments ahead of recovery (started by wal-fetch; kept for WAL-E users)',
    usage: 'wal-prefetch WAL_DIRECTORY SEGMENT [--count N] [--follow]',
    description:
      'Downloads SEGMENT and the ones after it into WAL_DIRECTORY/.walrus/prefetch/, where wal-fetch picks them up. Stops at the first segment not archived yet. ' +
      'With --follow (how wal-fetch starts it, detached) it stays and keeps N segments ready ahead of the last one recovery asked for, one such process per pg_wal, ' +
      'until recovery ends (recovery.signal/standby.signal gone) or nothing happened for 15 s.',
    examples: ['walrus --config fleet.yaml --server db1 wal-prefetch /var/lib/postgresql/15/main/pg_wal 000000010000000000000042 --count 8'],
    options: {
      count: { type: 'string', valueName: 'N', description: 'segments to fetch (default: prefetch from the config)' },
      follow: { type: 'boolean', description: 'stay and follow recovery (started by wal-fetch)' },
    },
    positionals: { min: 2, max: 2 },
    needsConfig: true,
    load: () => import('./operations/wal-prefetch.js'),
  },
  {
    name: 'backup-push',
    summary: 'take a base backup of a running server (or a stopped one with --while-offline)',
    usage: 'backup-push [DATADIR] [--while-offline] [--pool-size N] [--rate-limit BYTES_PER_S] [--fast] [--archive-timeout SECONDS]',
    description:
      'Non-exclusive pg_backup_start/pg_backup_stop on one held connection; the data directory is packed into WAL-E tar partitions, ' +
      'each streamed through compression and encryption to storage, several at once. extended_version.txt goes first, the stop sentinel last: ' +
      'a backup without its sentinel does not exist. backup_label and tablespace_map from pg_backup_stop go into a last partition of their own. ' +
      'Waits until the stop segment is archived. On failure the server leaves backup mode and no sentinel is written (delete removes the leftovers). ' +
      '--while-offline refuses a running or uncleanly stopped cluster. Progress on a TTY; --json prints a summary.',
    examples: ['walrus --config fleet.yaml --server db1 backup-push', 'walrus --config fleet.yaml --server db1 backup-push /var/lib/postgresql/15/main --pool-size 2'],
    options: {
      'while-offline': { type: 'boolean', description: 'back up a cleanly stopped cluster (reads pg_controldata)' },
      'pool-size': { type: 'string', valueName: 'N', description: 'partitions uploaded at once (default: poolSize; at most one per core)' },
      'rate-limit': { type: 'string', valueName: 'BYTES_PER_S', description: 'cap on reading the data directory (bytes/s; k, M, G suffixes are powers of 1024)' },
      fast: { type: 'boolean', description: 'request an immediate checkpoint (default: spread)' },
      'archive-timeout': { type: 'string', valueName: 'SECONDS', description: 'how long to wait for the stop segment to be archived (default 120)' },
      json: JSON_OPTION,
    },
    positionals: { min: 0, max: 1 },
    needsConfig: true,
    load: () => import('./operations/backup-push.js'),
  },
  {
    name: 'backup-list',
    summary: 'list base backups, oldest first, as WAL-E names them',
    usage: 'backup-list [QUERY] [--detail] [--json]',
    description: "Only backups with a stop sentinel are listed. Columns: WAL-E's (name, last_modified, expanded_size_bytes, start/stop segment and offset), tab-separated, CRLF line ends as WAL-E prints them; --detail fills the sentinel fields. QUERY: a name or LATEST; exits 1 when it matches nothing.",
    examples: ['walrus --config fleet.yaml --server db1 backup-list', 'walrus --config fleet.yaml --server db1 backup-list LATEST --json'],
    options: { detail: { type: 'boolean', description: 'read each sentinel for sizes and stop positions' }, json: JSON_OPTION },
    positionals: { min: 0, max: 1 },
    needsConfig: true,
    load: () => import('./operations/backup-list.js'),
  },
  {
    name: 'backup-fetch',
    summary: 'restore a base backup into an empty directory',
    usage: 'backup-fetch DATADIR NAME|LATEST [--restore-spec FILE] [--pool-size N]',
    description:
      'Refuses a non-empty DATADIR. Partitions are fetched in parallel; entries that would land outside DATADIR are refused; directories 0700, files 0600; ' +
      'everything is fsynced before success; the directories a backup leaves out (pg_wal, ...) are recreated. Tablespaces go where the sentinel says, or where --restore-spec says. ' +
      'walrus backups are checked against the sizes and SHA-256 their sentinel records. Until it succeeds DATADIR holds .walrus-restore-incomplete; a rerun into such a directory is refused (exit 5): remove it and run again.',
    examples: ['walrus --config fleet.yaml --server db1 backup-fetch /var/lib/postgresql/15/main LATEST'],
    options: {
      'restore-spec': { type: 'string', valueName: 'FILE', description: 'JSON mapping tablespaces to new locations (WAL-E format)' },
      'pool-size': { type: 'string', valueName: 'N', description: 'partitions fetched at once (default: poolSize; at most one per core)' },
      json: JSON_OPTION,
    },
    positionals: { min: 2, max: 2 },
    needsConfig: true,
    load: () => import('./operations/backup-fetch.js'),
  },
  {
    name: 'delete',
    summary: 'prune backups and the WAL no retained backup needs (dry run unless --confirm)',
    usage: 'delete [--confirm] retain N | before NAME | everything | old-versions',
    description:
      'retain N keeps the N newest backups; before NAME removes backups older than NAME. WAL older than the oldest retained backup\'s start segment goes too, never more. ' +
      'Leftovers of interrupted backups (no sentinel) are removed when older than the newest complete backup, or all of them with --include-incomplete. Without --confirm, lists what would go.',
    examples: ['walrus --config fleet.yaml --server db1 delete retain 8', 'walrus --config fleet.yaml --server db1 delete --confirm retain 8'],
    options: {
      confirm: { type: 'boolean', description: 'really delete (default: dry run)' },
      'include-incomplete': { type: 'boolean', description: 'also remove every backup without a sentinel (none may be running!)' },
      json: JSON_OPTION,
    },
    positionals: { min: 1, max: 2 },
    needsConfig: true,
    load: () => import('./operations/delete.js'),
  },
  {
    name: 'restore',
    summary: 'point-in-time restore in one verb: pick, fetch, configure recovery',
    usage: 'restore DATADIR [--target-time T | --target-lsn L | --target-name N | --target-immediate] [--backup NAME] [--standby]',
    description:
      'Picks the newest backup that finished before the target (or --backup), fetches it, writes recovery.signal (or standby.signal), puts restore_command and the target into postgresql.auto.conf, ' +
      'supplies minimal configuration files when the backup has none, and prints what to run next.',
    examples: ["walrus --config fleet.yaml --server db1 restore /var/lib/postgresql/15/main --target-time '2026-11-24 06:00:00+00'"],
    options: {
      'target-time': { type: 'string', valueName: 'TIME', description: 'recovery_target_time' },
      'target-lsn': { type: 'string', valueName: 'LSN', description: 'recovery_target_lsn' },
      'target-name': { type: 'string', valueName: 'NAME', description: 'recovery_target_name (a restore point)' },
      'target-immediate': { type: 'boolean', description: 'stop as soon as the backup is consistent' },
      backup: { type: 'string', valueName: 'NAME', description: 'restore this backup instead of choosing one' },
      standby: { type: 'boolean', description: 'write standby.signal instead of recovery.signal' },
      json: JSON_OPTION,
    },
    positionals: { min: 1, max: 1 },
    needsConfig: true,
    load: () => import('./operations/restore.js'),
  },
  {
    name: 'verify',
    summary: 'check every object of every backup and the WAL chain; --drill restores and starts a scratch cluster',
    usage: 'verify [--json] [--drill [--backup NAME] [--sql QUERY]]',
    description:
      'For every backup: each object exists, decrypts and decompresses with checksums matching the sentinel; the WAL from its start to its stop is archived; the WAL from the oldest backup to the newest segment has no gap. ' +
      '--drill restores the latest (or named) backup into a scratch directory, starts PostgreSQL on a free port, waits for consistency, runs a check query, reports, and cleans up.',
    examples: ['walrus --config fleet.yaml --server db1 verify', 'walrus --config fleet.yaml --server db1 verify --drill --json'],
    options: {
      drill: { type: 'boolean', description: 'restore into a scratch cluster, start it, query it' },
      backup: { type: 'string', valueName: 'NAME', description: 'backup to drill (default LATEST)' },
      sql: { type: 'string', valueName: 'QUERY', description: 'check query for the drill' },
      json: JSON_OPTION,
    },
    positionals: { min: 0, max: 0 },
    needsConfig: true,
    load: () => import('./operations/verify.js'),
  },
  {
    name: 'export-cron',
    summary: "print the crontab lines for every server's backup and retention schedules",
    usage: 'export-cron [--format crontab|cron.d|systemd]',
    description:
      'One job per server and schedule: backup-push at schedule.backup, delete --confirm retain N at schedule.retention (when retention.keepBackups is set), ' +
      'with absolute, shell-quoted paths and output appended to <logDirectory>/<server>-backup-push.log or <server>-delete.log. systemd prints a .service and a .timer per job, ' +
      'each headed by a "# <unit file name>" line, with OnCalendar= converted from the cron expression.',
    examples: ['walrus --config /etc/walrus/fleet.yaml export-cron | crontab -u postgres -', 'walrus --config /etc/walrus/fleet.yaml export-cron --format cron.d > /etc/cron.d/walrus'],
    options: { format: { type: 'string', valueName: 'FORMAT', description: 'crontab (default), cron.d (with user column) or systemd (timer + service units)' } },
    positionals: { min: 0, max: 0 },
    needsConfig: true,
    fleetWide: true,
    load: () => import('./operations/export-cron.js'),
  },
  {
    name: 'export-pg',
    summary: 'print the postgresql.conf lines for a server (archive_command, restore_command, ...)',
    usage: 'export-pg SERVER',
    description:
      'wal_level, archive_mode, archive_command (wal-push %p), restore_command (wal-fetch %f %p) and a suggested archive_timeout. The commands name node, bin/walrus and the config by absolute path, ' +
      "each shell-quoted (paths with spaces work) and quoted again as postgresql.conf strings. PostgreSQL runs them as the server's OS user, who must be able to read the config.",
    examples: ['walrus --config /etc/walrus/fleet.yaml export-pg db1 >> /etc/postgresql/15/main/conf.d/walrus.conf'],
    positionals: { min: 1, max: 1 },
    needsConfig: true,
    fleetWide: true,
    load: () => import('./operations/export-pg.js'),
  },
  {
    name: 'status',
    summary: "freshness of each server's archive and backups (for monitoring)",
    usage: 'status [--json] [--prometheus FILE]',
    description:
      'Per server (all of them, or --server NAME): last archived segment (the highest name under wal_005/) and its age, last complete backup and its age, backups versus retention.keepBackups, storage used under the prefix. ' +
      'Exits 0 when every server is within status.maxArchiveAgeMinutes (default 60) and status.maxBackupAgeHours (default 36), 8 (STALE) when one is not or has nothing archived yet, ' +
      "and a storage failure's own code (3, 6, ...) when a server's storage cannot be read. --prometheus FILE writes node_exporter textfile metrics atomically " +
      '(walrus_last_archive_age_seconds, walrus_last_backup_age_seconds, walrus_backups_count, walrus_backups_keep, walrus_storage_bytes, walrus_status_ok; ages are +Inf when there is none).',
    examples: ['walrus --config /etc/walrus/fleet.yaml status', 'walrus --config /etc/walrus/fleet.yaml status --prometheus /var/lib/node_exporter/walrus.prom'],
    options: { json: JSON_OPTION, prometheus: { type: 'string', valueName: 'FILE', description: 'also write node_exporter textfile metrics' } },
    positionals: { min: 0, max: 0 },
    needsConfig: true,
    fleetWide: true,
    load: () => import('./operations/status.js'),
  },
];

export function findVerb(name: string): VerbSpec | undefined {
  return VERBS.find((v) => v.name === name);
}
