/**
 * What a `--while-offline` backup knows without a server: pg_controldata's view of the cluster.
 * WAL-E names such a backup after the segment of "Latest checkpoint's REDO location" and writes that
 * same segment as start and stop, with the segment's last 8 hex digits as "offset" (not a byte
 * offset: shared/fixtures/README.md). WAL-E cuts that name out of the LSN text, which goes wrong for
 * timelines ≥ 10 and segments 00–0F of a log; we take pg_controldata's own "REDO WAL file" line,
 * which gives the same name wherever WAL-E's is right.
 */
import { spawn } from 'node:child_process';
import { access, readFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { databaseError } from '../../core/errors.js';
import { segmentOfLsn } from '../../core/layout.js';

export interface OfflineIdentity {
  /** `pg_config --version` of the same installation, e.g. `PostgreSQL 15.18 (Debian 15.18-0+deb12u1)`: WAL-E's extended_version.txt offline. */
  versionText: string;
  /** Major version from PG_VERSION (`15`, `9.6`). */
  majorVersion: string;
  systemIdentifier: string;
  /** "Database cluster state": `shut down` is the only state a consistent offline copy can be taken in. */
  clusterState: string;
  /** True for `shut down` (a primary stopped cleanly); a backup-push --while-offline should refuse otherwise. */
  cleanlyShutDown: boolean;
  timeline: number;
  redoLsn: string;
  /** "Latest checkpoint's REDO WAL file": start and stop segment of the backup. */
  redoSegment: string;
  /** WAL-E's offline "offset": the segment name's last 8 hex digits. */
  walEOffset: string;
  /** The real byte offset of the REDO location inside its segment. */
  redoByteOffset: number;
  walSegmentSize: number;
  /** The pg_controldata that was run. */
  controldataPath: string;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function run(path: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    // labels are only English in the C locale
    const child = spawn(path, args, { env: { ...process.env, LC_ALL: 'C', LANG: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
  });
}

/** binDir if given; else pg_controldata on PATH; else Debian's /usr/lib/postgresql/<PG_VERSION>/bin. */
async function findBinDirectory(dataDirectory: string, binDir: string | undefined, majorVersion: string): Promise<string> {
  const candidates = binDir ? [binDir] : [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), `/usr/lib/postgresql/${majorVersion}/bin`];
  for (const dir of candidates) if (await isExecutable(join(dir, 'pg_controldata'))) return dir;
  throw databaseError(`cannot find pg_controldata for the cluster in '${dataDirectory}'`, {
    detail: `looked in ${candidates.join(', ')}`,
    hint: 'put PostgreSQL\'s bin directory on PATH or set it in the server config',
  });
}

export function parseControlData(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) fields.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return fields;
}

export async function offlineIdentity(dataDirectory: string, binDir?: string): Promise<OfflineIdentity> {
  let majorVersion: string;
  try {
    majorVersion = (await readFile(join(dataDirectory, 'PG_VERSION'), 'utf8')).trim();
  } catch (e) {
    throw databaseError(`'${dataDirectory}' is not a PostgreSQL data directory (no readable PG_VERSION)`, {
      hint: "check the server's dataDirectory in the config",
      cause: e,
    });
  }
  const bin = await findBinDirectory(dataDirectory, binDir, majorVersion);
  const controldataPath = join(bin, 'pg_controldata');
  const result = await run(controldataPath, ['-D', dataDirectory]);
  if (result.code !== 0) {
    throw databaseError(`pg_controldata failed on '${dataDirectory}': ${result.stderr.trim() || `exit ${result.code}`}`);
  }
  const fields = parseControlData(result.stdout);
  const field = (name: string): string => {
    const v = fields.get(name);
    if (v === undefined) throw databaseError(`pg_controldata on '${dataDirectory}' printed no "${name}"`, { hint: 'is pg_controldata from the same PostgreSQL version as the cluster?' });
    return v;
  };
  const redoLsn = field("Latest checkpoint's REDO location");
  const timeline = Number(field("Latest checkpoint's TimeLineID"));
  const walSegmentSize = Number(fields.get('Bytes per WAL segment') ?? 16 * 1024 * 1024);
  const computed = segmentOfLsn(redoLsn, timeline, walSegmentSize);
  // "REDO WAL file" exists since 10; compute it the same way on older versions
  const redoSegment = fields.get("Latest checkpoint's REDO WAL file") ?? computed.segment;
  if (redoSegment !== computed.segment) {
    throw databaseError(`pg_controldata on '${dataDirectory}' names REDO WAL file ${redoSegment}, but ${redoLsn} on timeline ${timeline} is in ${computed.segment}`);
  }
  let versionText = `PostgreSQL ${majorVersion}`;
  if (await isExecutable(join(bin, 'pg_config'))) {
    const v = await run(join(bin, 'pg_config'), ['--version']);
    if (v.code === 0 && v.stdout.trim()) versionText = v.stdout.trim();
  }
  const clusterState = field('Database cluster state');
  return {
    versionText,
    majorVersion,
    systemIdentifier: field('Database system identifier'),
    clusterState,
    cleanlyShutDown: clusterState === 'shut down',
    timeline,
    redoLsn,
    redoSegment,
    walEOffset: redoSegment.slice(-8),
    redoByteOffset: computed.offset,
    walSegmentSize,
    controldataPath,
  };
}
