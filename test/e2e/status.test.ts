/**
 * export-pg and status against a real PostgreSQL 15. The lines `walrus export-pg` prints go into
 * postgresql.conf verbatim, with the fleet config in a directory whose name has a space, a quote
 * and a %; PostgreSQL then archives through walrus (pg_stat_archiver: archived, none failed),
 * PostgreSQL's own reading of restore_command fetches a segment back byte for byte, and
 * `walrus status` reports the segment PostgreSQL says it archived last.
 *
 * Spawns bin/walrus: run `npx tsc -p tsconfig.build.json` first (bin/walrus prefers dist/).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFile, mkdir, readFile, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCluster, destroyAllClusters, chownToPostgres, type PgCluster } from '../helpers/pg-cluster.js';
import { EXIT } from '../../core/errors.js';

const WALRUS = fileURLToPath(new URL('../../bin/walrus', import.meta.url));

let c: PgCluster;
let configDirectory: string;
let configPath: string;

function run(command: string, args: string[], options: { asPostgres?: boolean; cwd?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const [program, argv] = options.asPostgres ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
  return new Promise((resolve, reject) => {
    const child = spawn(program, argv, { cwd: options.cwd ?? '/', stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b) => (stdout += b));
    child.stderr.on('data', (b) => (stderr += b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 128, stdout, stderr }));
  });
}

/** PostgreSQL's placeholder expansion (%f, %p, %%; unknown ones stay). */
const expandPlaceholders = (command: string, values: Record<string, string>) => command.replace(/%(.)/g, (whole, ch) => (ch === '%' ? '%' : (values[ch] ?? whole)));

before(async () => {
  c = await createCluster();
  configDirectory = join(c.tmpRoot, "walrus conf 100% it's here");
  await mkdir(join(configDirectory, 'store'), { recursive: true });
  await chownToPostgres(configDirectory);
  configPath = join(configDirectory, 'fleet.yaml');
  await writeFile(
    configPath,
    `version: 1
storages:
  local:
    plugin: file
    path: ./store
servers:
  db1:
    dataDirectory: ${JSON.stringify(c.dataDirectory)}
    connection: { host: ${JSON.stringify(c.socketDirectory)}, port: ${c.port} }
    status:
      maxArchiveAgeMinutes: 5
`,
  );
  await chmod(configPath, 0o644);

  const exported = await run(process.execPath, [WALRUS, '--config', configPath, 'export-pg', 'db1']);
  assert.equal(exported.code, 0, exported.stderr);
  await appendFile(join(c.dataDirectory, 'postgresql.conf'), '\n' + exported.stdout);
  await c.start();
});
after(destroyAllClusters);

test('PostgreSQL reads archive_command from the exported lines exactly as walrus built it', async () => {
  const archiveCommand = await c.query('show archive_command');
  assert.ok(archiveCommand.includes('wal-push %p'), archiveCommand);
  assert.ok(archiveCommand.includes("'\\''"), 'the quote in the config path is shell-escaped');
  assert.ok(archiveCommand.includes('100%%'), 'the % in the config path is doubled for PostgreSQL');
  assert.equal(await c.query('show archive_mode'), 'on');
  assert.equal(await c.query('show wal_level'), 'replica');
  assert.equal(await c.query('show archive_timeout'), '1min');
});

test('a switched segment is archived through walrus: archived_count ≥ 1, failed_count 0', async () => {
  await c.query('create table t as select g from generate_series(1, 10000) g');
  const switched = await c.query('select pg_walfile_name(pg_switch_wal())');
  let row: string[] = [];
  for (let i = 0; i < 600; i++) {
    [row] = await c.queryRows('select archived_count, failed_count, coalesce(last_archived_wal, \'\'), coalesce(last_failed_wal, \'\') from pg_stat_archiver');
    if (Number(row[0]) >= 1 && row[2] >= switched) break;
    if (Number(row[1]) > 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(Number(row[1]), 0, `archiving failed for ${row[3]}:\n${await c.logTail(30)}`);
  assert.ok(Number(row[0]) >= 1, `nothing archived:\n${await c.logTail(30)}`);
  assert.ok(row[2] >= switched, `last archived ${row[2]}, switched ${switched}`);
});

test("PostgreSQL's restore_command, run as PostgreSQL runs it, fetches the archived segment byte for byte", async () => {
  const restoreCommand = await c.query('show restore_command');
  const [segment] = (await c.query("select last_archived_wal from pg_stat_archiver")).split('\n');
  const target = join(await c.createOwnedDirectory('fetched'), 'RECOVERYXLOG');
  const command = expandPlaceholders(restoreCommand, { f: segment, p: target });
  const r = await run('sh', ['-c', command], { asPostgres: true, cwd: c.dataDirectory });
  assert.equal(r.code, 0, r.stderr);
  const original = await readFile(join(c.dataDirectory, 'pg_wal', segment));
  const fetched = await readFile(target);
  assert.equal(fetched.length, original.length);
  assert.ok(fetched.equals(original), 'fetched segment differs from pg_wal');
  const missing = await run('sh', ['-c', expandPlaceholders(restoreCommand, { f: '0000000100000000000000FF', p: `${target}.missing` })], { asPostgres: true, cwd: c.dataDirectory });
  assert.equal(missing.code, EXIT.NOT_FOUND, missing.stderr);
});

test('status reports the segment PostgreSQL archived last; no base backup yet makes it stale (exit 8)', async () => {
  const lastArchived = await c.query('select last_archived_wal from pg_stat_archiver');
  const r = await run(process.execPath, [WALRUS, '--config', configPath, 'status', '--json']);
  assert.equal(r.code, EXIT.STALE, r.stderr);
  const s = JSON.parse(r.stdout);
  const [db1] = s.servers;
  assert.equal(db1.lastArchive.segment, lastArchived);
  assert.ok(db1.lastArchive.ageSeconds < 5 * 60, `${db1.lastArchive.ageSeconds}`);
  assert.deepEqual(db1.problems, ['no base backup']);
  assert.equal(db1.backups.count, 0);
  assert.ok(db1.storage.bytes > 0 && db1.storage.objects >= 1);
  const table = await run(process.execPath, [WALRUS, '--config', configPath, 'status']);
  assert.equal(table.code, EXIT.STALE);
  assert.match(table.stdout, new RegExp(`^db1 +${lastArchived} `, 'm'));
});
