/**
 * One held connection to a PostgreSQL server for the whole of a base backup: a non-exclusive
 * backup belongs to the session that started it, and PostgreSQL aborts it if that session ends.
 * `pg` is imported when connecting, so loading this module stays cheap.
 */
import type { Client, ClientConfig } from 'pg';
import { databaseError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { formatLsn, parseLsn, segmentOfLsn } from '../../core/layout.js';
import type { BackupSource, BackupStart, BackupStop, DataFile, ServerIdentity, TablespaceSpec } from '../../core/types.js';
import { listDataFiles, readTablespaces } from './data-files.js';

export interface PostgresConnection {
  /** Host name, IP, or unix-socket directory (a path starting with `/`). Default: libpq's PGHOST, else localhost. */
  host?: string;
  port?: number;
  user?: string;
  database?: string;
  password?: string;
}

/** Where we connect, for messages: `host:port` or `socket dir:port`. Never the password. */
export function describeConnection(c: PostgresConnection): string {
  const host = c.host ?? process.env.PGHOST ?? 'localhost';
  const port = c.port ?? (process.env.PGPORT ? Number(process.env.PGPORT) : 5432);
  const user = c.user ?? process.env.PGUSER;
  return `${host.startsWith('/') ? `socket ${host}` : host}:${port}${user ? ` as ${user}` : ''}`;
}

interface PgErrorLike {
  code?: string;
  message?: string;
}

function connectFailure(where: string, e: unknown) {
  const err = e as PgErrorLike;
  const code = err?.code ?? '';
  let what = err?.message ?? String(e);
  let hint = 'check that the server is running and the connection in the server config (host, port, user, database)';
  if (code === 'ECONNREFUSED') what = 'connection refused';
  else if (code === 'ENOENT') what = 'no socket there (is the server running, is host the socket directory?)';
  else if (code === '28P01' || code === '28000') hint = 'check user and password in the server config and pg_hba.conf';
  else if (code === '3D000') hint = 'check the database name in the server config';
  return databaseError(`cannot connect to PostgreSQL at ${where}: ${what}`, { hint, cause: e });
}

function callFailure(where: string, call: string, e: unknown, hint?: string) {
  const err = e as PgErrorLike;
  let defaultHint = 'see the PostgreSQL server log for details';
  if (err?.code === '42501') defaultHint = 'the user needs to be a superuser, or be granted EXECUTE on the backup functions and pg_read_all_settings';
  return databaseError(`PostgreSQL call ${call} failed on ${where}: ${err?.message ?? String(e)}`, { hint: hint ?? defaultHint, cause: e });
}

/** Connects and returns the source; rejects with DATABASE when the server cannot be reached. */
export async function connectSource(connection: PostgresConnection, log: Logger): Promise<BackupSource> {
  if (connection.password) log.addSecrets([connection.password]);
  const where = describeConnection(connection);
  const { default: pg } = await import('pg');
  const config: ClientConfig = {
    host: connection.host,
    port: connection.port,
    user: connection.user,
    database: connection.database,
    password: connection.password,
    application_name: 'walrus',
    // the connection sits idle for as long as the files take to upload
    keepAlive: true,
    connectionTimeoutMillis: 30_000,
  };
  const client = new pg.Client(config);
  // After connect, a server-side termination surfaces as an 'error' event; the next query rejects with it.
  let lostWith: Error | null = null;
  client.on('error', (e) => {
    lostWith = e;
    log.warn('lost the PostgreSQL connection', { detail: `${where}: ${e.message}` });
  });
  // pg_backup_stop explains itself in notices ("WAL archiving is not enabled ...", "all required WAL segments have been archived")
  client.on('notice', (n) => {
    const severity = (n as { severity?: string }).severity ?? 'NOTICE';
    (severity === 'WARNING' ? log.warn : log.info)(`PostgreSQL ${severity.toLowerCase()}: ${n.message}`, { detail: where });
  });
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => {});
    throw connectFailure(where, e);
  }
  const source = new PostgresSource(client, where, log, () => lostWith);
  try {
    await source.prepareSession();
  } catch (e) {
    await source.close();
    throw e;
  }
  return source;
}

class PostgresSource implements BackupSource {
  private versionNum = 0;
  private segmentSize = 16 * 1024 * 1024;
  private started: BackupStart | null = null;

  constructor(
    private readonly client: Client,
    private readonly where: string,
    private readonly log: Logger,
    private readonly lostWith: () => Error | null,
  ) {}

  private async sql<Row extends Record<string, unknown>>(call: string, text: string, values: unknown[] = [], hint?: string): Promise<Row[]> {
    try {
      const result = await this.client.query(text, values);
      return result.rows as Row[];
    } catch (e) {
      throw callFailure(this.where, call, this.lostWith() ?? e, hint);
    }
  }

  /** Session settings a role default must not override while we hold a backup open. */
  async prepareSession(): Promise<void> {
    const [row] = await this.sql<{ num: string; seg: string; unit: string | null }>(
      'server_version_num',
      `select current_setting('server_version_num') as num,
              (select setting from pg_settings where name = 'wal_segment_size') as seg,
              (select unit from pg_settings where name = 'wal_segment_size') as unit`,
    );
    this.versionNum = Number(row.num);
    if (this.versionNum < 90600) {
      throw databaseError(`PostgreSQL ${row.num} at ${this.where} is too old: walrus needs 9.6 or later (non-exclusive backups)`);
    }
    // PostgreSQL 10 reports wal_segment_size in 8kB pages, 11+ in bytes
    const multiplier = row.unit === '8kB' ? 8192 : 1;
    this.segmentSize = Number(row.seg) * multiplier;
    await this.sql('set', 'set statement_timeout = 0');
    await this.sql('set', 'set idle_in_transaction_session_timeout = 0');
    if (this.versionNum >= 140000) await this.sql('set', 'set idle_session_timeout = 0');
  }

  async identify(): Promise<ServerIdentity> {
    const [row] = await this.sql<{ version_text: string; version_num: string; system_identifier: string; timeline: number; data_directory: string }>(
      'identify',
      `select version() as version_text,
              current_setting('server_version_num') as version_num,
              (select system_identifier::text from pg_control_system()) as system_identifier,
              (select timeline_id from pg_control_checkpoint()) as timeline,
              current_setting('data_directory') as data_directory`,
    );
    return {
      versionText: row.version_text,
      versionNum: Number(row.version_num),
      systemIdentifier: row.system_identifier,
      timeline: Number(row.timeline),
      dataDirectory: row.data_directory,
    };
  }

  private async currentTimeline(): Promise<number> {
    const [row] = await this.sql<{ timeline: number }>('pg_control_checkpoint', 'select timeline_id as timeline from pg_control_checkpoint()');
    return Number(row.timeline);
  }

  /**
   * A session-level advisory lock held for the whole backup: PostgreSQL releases it when this
   * connection ends, so a crashed backup-push never leaves it behind.
   */
  async lockBackups(): Promise<boolean> {
    const rows = await this.sql<{ locked: boolean }>('pg_try_advisory_lock', "select pg_try_advisory_lock(hashtext('walrus backup-push')) as locked");
    return rows[0]?.locked === true;
  }

  async startBackup(label: string, options: { fast: boolean }): Promise<BackupStart> {
    if (this.started) throw databaseError(`a backup is already in progress on this connection to ${this.where}`);
    const fn = this.versionNum >= 150000 ? 'pg_backup_start' : 'pg_start_backup';
    const text =
      this.versionNum >= 150000
        ? 'select pg_backup_start($1, $2)::text as lsn'
        : 'select pg_start_backup($1, $2, false)::text as lsn';
    const [row] = await this.sql<{ lsn: string }>(fn, text, [label, options.fast], 'another backup may be running on this session, or the user lacks the right to run backups');
    const startedAt = new Date();
    // The checkpoint pg_backup_start just wrote carries the timeline the start LSN lives on.
    const timeline = await this.currentTimeline();
    // A checkpoint's redo point is never exactly on a segment boundary (a page header precedes it),
    // so the segment holding the LSN is the one that starts the backup.
    const { segment, offset } = segmentOfLsn(row.lsn, timeline, this.segmentSize);
    this.started = { startLsn: row.lsn, startSegment: segment, startOffset: offset, timeline, startedAt };
    this.log.debug('backup started', { structured: { action: 'backup-start', lsn: row.lsn, seg: segment } });
    return this.started;
  }

  async stopBackup(): Promise<BackupStop> {
    if (!this.started) throw databaseError(`no backup was started on this connection to ${this.where}`);
    const fn = this.versionNum >= 150000 ? 'pg_backup_stop' : 'pg_stop_backup';
    const text =
      this.versionNum >= 150000
        ? 'select lsn::text as lsn, labelfile, spcmapfile from pg_backup_stop(wait_for_archive => true)'
        : 'select lsn::text as lsn, labelfile, spcmapfile from pg_stop_backup(false, true)';
    const [row] = await this.sql<{ lsn: string; labelfile: string; spcmapfile: string | null }>(
      fn,
      text,
      [],
      'if it waited on archiving, check that archive_command succeeds (see the server log)',
    );
    const stoppedAt = new Date();
    const startInLabel = /^START WAL LOCATION: ([0-9A-F]+\/[0-9A-F]+)/m.exec(row.labelfile)?.[1];
    if (startInLabel !== undefined && parseLsn(startInLabel) !== parseLsn(this.started.startLsn)) {
      throw databaseError(`backup_label from ${this.where} starts at ${startInLabel}, not at ${this.started.startLsn} as pg_backup_start said`, {
        hint: 'another backup may have run on this session; take the backup again',
      });
    }
    const timeline = await this.currentTimeline();
    const { segment, offset } = stopSegmentOf(row.lsn, timeline, this.segmentSize);
    this.started = null;
    this.log.debug('backup stopped', { structured: { action: 'backup-stop', lsn: row.lsn, seg: segment } });
    return {
      stopLsn: row.lsn,
      stopSegment: segment,
      stopOffset: offset,
      backupLabel: row.labelfile,
      tablespaceMap: row.spcmapfile ? row.spcmapfile : null,
      stoppedAt,
    };
  }

  listDataFiles(dataDirectory: string): AsyncIterable<DataFile> {
    return listDataFiles(dataDirectory);
  }

  tablespaces(dataDirectory: string): Promise<TablespaceSpec[]> {
    return readTablespaces(dataDirectory);
  }

  async close(): Promise<void> {
    // Ending the session aborts a backup still open on it, which is what an interrupted backup wants.
    await this.client.end().catch(() => {}); // a connection already gone is closed enough
  }
}

/**
 * The segment that holds the last byte a backup needs. pg_backup_stop's LSN is the *end* of the
 * backup-end record: when it falls exactly on a segment boundary the record ended in the preceding
 * segment, and the next one may not exist yet. So the stop segment is the one holding `lsn - 1`,
 * and the offset is measured from that segment's start: at a boundary it equals the segment size.
 * This is the segment PostgreSQL itself waits to see archived (XLByteToPrevSeg), and the one
 * pg_walfile_name_offset names; that function's offset would be 0 there (PostgreSQL ≤ 16).
 */
export function stopSegmentOf(lsn: string, timeline: number, segmentSize: number): { segment: string; offset: number } {
  const position = parseLsn(lsn);
  if (position === 0n) return segmentOfLsn(lsn, timeline, segmentSize);
  const { segment } = segmentOfLsn(formatLsn(position - 1n), timeline, segmentSize);
  const segmentStart = ((position - 1n) / BigInt(segmentSize)) * BigInt(segmentSize);
  return { segment, offset: Number(position - segmentStart) };
}
