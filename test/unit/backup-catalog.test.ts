/**
 * The backup catalog against file storages: the WAL-E fixture stores (read as they are) and
 * temp stores with sentinels, leftovers of interrupted backups and damaged sentinels.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manifest as fileStorage } from '../../plugins/file/index.js';
import { silentLogger } from '../../core/log.js';
import { ArchiveLayout } from '../../core/layout.js';
import { isWalrusError } from '../../core/errors.js';
import { formatBackupList, listBackups, parseSentinel, readSentinel, resolveBackupName } from '../../core/backup-catalog.js';
import { main } from '../../core/cli.js';
import type { BackupSentinel } from '../../core/backup-sentinel.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const FIXTURES = SHARED_FIXTURES;
const temps: string[] = [];
after(async () => {
  for (const t of temps) await rm(t, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'walrus-catalog-'));
  temps.push(d);
  return d;
}

async function openStore(path: string, prefix = '') {
  const storage = await fileStorage.create({ path, fsync: false }, { log: silentLogger, configDirectory: '/', instanceName: 'file' });
  return { storage, layout: new ArchiveLayout(prefix) };
}

/** The backup-list lines of a fixture's EXPECTED.txt (header and rows, CRLF kept). */
async function expectedListing(fixture: string): Promise<string[]> {
  const text = await readFile(join(FIXTURES, fixture, 'EXPECTED.txt'), 'utf8');
  const after = text.slice(text.indexOf('backup-list output of WAL-E:\n') + 'backup-list output of WAL-E:\n'.length);
  return after.split('\n').filter((l) => l.length > 0);
}

const withoutLastModified = (line: string) => line.split('\t').filter((_, i) => i !== 1).join('\t');

function expectKind(kind: string) {
  return (e: unknown) => {
    assert.ok(isWalrusError(e), `expected a WalrusError, got ${e}`);
    assert.equal(e.kind, kind, e.message);
    return true;
  };
}

for (const fixture of ['wal-e-plain', 'wal-e-gpg']) {
  test(`${fixture}: listing prints WAL-E's own backup-list lines (last_modified aside)`, async () => {
    const rt = await openStore(join(FIXTURES, fixture, 'store'));
    const entries = await listBackups(rt);
    const printed = formatBackupList(entries).split('\n').filter((l) => l.length > 0);
    const expected = await expectedListing(fixture);
    assert.equal(printed.length, expected.length);
    assert.equal(printed[0], expected[0], 'header, byte for byte (CRLF included)');
    for (let i = 1; i < expected.length; i++) assert.equal(withoutLastModified(printed[i]), withoutLastModified(expected[i]));
    assert.match(printed[1].split('\t')[1], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });
}

test('wal-e-plain: --detail reads the sentinel; LATEST resolves to the only backup', async () => {
  const rt = await openStore(join(FIXTURES, 'wal-e-plain', 'store'));
  const [entry] = await listBackups(rt, { detail: true });
  assert.equal(entry.name, 'base_000000010000000200000032_00000032');
  assert.equal(entry.expandedSizeBytes, 39280290);
  assert.equal(entry.stopSegment, '000000010000000200000032');
  assert.equal(entry.stopOffset, '00000032');
  assert.equal(entry.sentinel?.spec.base_prefix, '/tmp/wfx.9IJB/pgdata/');
  assert.equal(await resolveBackupName(rt, 'LATEST'), entry.name);
  assert.equal(await resolveBackupName(rt, entry.name), entry.name);
  await assert.rejects(resolveBackupName(rt, 'base_000000010000000200000099_00000000'), expectKind('NOT_FOUND'));
  await assert.rejects(resolveBackupName(rt, 'latest'), expectKind('USAGE'));
  await assert.rejects(readSentinel(rt, 'base_000000010000000200000099_00000000'), expectKind('NOT_FOUND'));
});

function sentinel(stop: string, size: number): BackupSentinel {
  return { wal_segment_backup_stop: stop, wal_segment_offset_backup_stop: '00000100', expanded_size_bytes: size, spec: { base_prefix: '/data/', tablespaces: [] } };
}

async function putSentinel(root: string, rt: Awaited<ReturnType<typeof openStore>>, name: string, body: string, mtimeSeconds: number) {
  const key = rt.layout.sentinelKey(name);
  await rt.storage.put(key, Readable.from([Buffer.from(body)]));
  await utimes(join(root, key), mtimeSeconds, mtimeSeconds);
}

test('only backups with a sentinel are listed, oldest first by completion; leftovers and stray files are not', async () => {
  const root = await tempDir();
  const rt = await openStore(root, 'db1/');
  // completed out of name order: the second-named one finished first
  await putSentinel(root, rt, 'base_000000010000000000000009_00000028', JSON.stringify(sentinel('00000001000000000000000A', 10)), 1_700_000_100);
  await putSentinel(root, rt, 'base_000000010000000000000005_00000028', JSON.stringify(sentinel('000000010000000000000006', 5)), 1_700_000_000);
  await putSentinel(root, rt, 'base_00000001000000000000000C_00000060', JSON.stringify(sentinel('00000001000000000000000D', 12)), 1_700_000_200);
  // an interrupted backup: partitions and extended_version, no sentinel
  await rt.storage.put(rt.layout.extendedVersionKey('base_00000001000000000000000F_00000028'), Readable.from([Buffer.from('PostgreSQL 15')]));
  await rt.storage.put(rt.layout.partitionKey('base_00000001000000000000000F_00000028', 0), Readable.from([Buffer.from('x')]));
  await rt.storage.put('db1/basebackups_005/notes.txt', Readable.from([Buffer.from('x')]));
  await rt.storage.put('db1/basebackups_005/base_00000001000000000000000C_00000060/walrus_backup_stop_sentinel.json', Readable.from([Buffer.from('{}')]));
  // another server's backup under another prefix
  await rt.storage.put('db2/basebackups_005/base_000000010000000000000001_00000028_backup_stop_sentinel.json', Readable.from([Buffer.from('{}')]));

  const entries = await listBackups(rt, { detail: true });
  assert.deepEqual(
    entries.map((e) => [e.name, e.expandedSizeBytes, e.stopSegment]),
    [
      ['base_000000010000000000000005_00000028', 5, '000000010000000000000006'],
      ['base_000000010000000000000009_00000028', 10, '00000001000000000000000A'],
      ['base_00000001000000000000000C_00000060', 12, '00000001000000000000000D'],
    ],
  );
  assert.equal(await resolveBackupName(rt, 'LATEST'), 'base_00000001000000000000000C_00000060');
  await assert.rejects(resolveBackupName(rt, 'base_00000001000000000000000F_00000028'), expectKind('NOT_FOUND'));
  const text = formatBackupList(await listBackups(rt));
  assert.equal(text.split('\r\n').length, 5, 'header, three rows, and the empty rest after the last CRLF');
  assert.match(text.split('\r\n')[1], /^base_000000010000000000000005_00000028\t2023-11-14T22:13:20\.000Z\t\t000000010000000000000005\t00000028\t\t$/);
});

test('an empty storage lists nothing, and LATEST is NOT_FOUND', async () => {
  const rt = await openStore(await tempDir());
  assert.deepEqual(await listBackups(rt, { detail: true }), []);
  await assert.rejects(resolveBackupName(rt, 'LATEST'), expectKind('NOT_FOUND'));
});

test('damaged sentinels are INTEGRITY errors that name the object', async () => {
  const root = await tempDir();
  const rt = await openStore(root);
  await putSentinel(root, rt, 'base_000000010000000000000005_00000028', '{"wal_segment_backup_stop": "0000000100', 1_700_000_000);
  await assert.rejects(readSentinel(rt, 'base_000000010000000000000005_00000028'), (e: unknown) => {
    expectKind('INTEGRITY')(e);
    assert.match((e as Error).message, /base_000000010000000000000005_00000028_backup_stop_sentinel\.json is not valid JSON/);
    return true;
  });
  await assert.rejects(listBackups(rt, { detail: true }), expectKind('INTEGRITY'));
  assert.equal((await listBackups(rt)).length, 1, 'without --detail the sentinel is not read');
  assert.throws(() => parseSentinel(JSON.stringify({ ...sentinel('xyz', 1) }), 'x.json'), /wal_segment_backup_stop must be a WAL segment name/);
  assert.throws(() => parseSentinel(JSON.stringify({ spec: { base_prefix: '/', tablespaces: [] } }), 'x.json'), /not a backup sentinel/);
  assert.throws(() => parseSentinel(JSON.stringify({ ...sentinel('000000010000000000000006', -1) }), 'x.json'), /expanded_size_bytes/);
});

test('a walrus sentinel with tablespaces and the walrus block passes the schema', () => {
  const s: BackupSentinel = {
    ...sentinel('000000010000000000000006', 42),
    spec: { base_prefix: '/data/', tablespaces: ['16384'], '16384': { loc: '/ts/', link: 'pg_tblspc/16384' } },
    walrus: {
      format: 1,
      startLsn: '0/5000028',
      stopLsn: '0/6000100',
      timeline: 1,
      startedAt: new Date().toISOString(),
      stoppedAt: new Date().toISOString(),
      serverVersion: 'PostgreSQL 15.18',
      serverVersionNum: 150018,
      systemIdentifier: '7300000000000000000',
      mode: 'online',
      compression: 'lzo',
      encrypted: false,
      backupLabel: 'START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n',
      tablespaceMap: '16384 /ts\n',
      partitions: [{ number: 0, key: 'k', tarBytes: 10, tarSha256: 'a'.repeat(64), storedBytes: 5, storedSha256: 'b'.repeat(64), members: 3 }],
    },
  };
  assert.deepEqual(parseSentinel(JSON.stringify(s), 'x.json'), s);
  const broken = structuredClone(s);
  (broken.walrus!.partitions[0] as any).tarSha256 = 'nope';
  assert.throws(() => parseSentinel(JSON.stringify(broken), 'x.json'), /walrus\.partitions\.0\.tarSha256/);
});

async function runCli(argv: string[]): Promise<{ code: number; stdout: string }> {
  const chunks: Buffer[] = [];
  const out = new Writable({ write: (c, _e, cb) => (chunks.push(Buffer.from(c)), cb()) });
  const code = await main(argv, { ...process.env, WALRUS_LOG_LEVEL: 'error' }, out);
  return { code, stdout: Buffer.concat(chunks).toString('utf8') };
}

test('walrus backup-list on the WAL-E fixture store: the same lines as WAL-E, --json, QUERY', async () => {
  const dir = await tempDir();
  const config = join(dir, 'fleet.yaml');
  await writeFile(
    config,
    [
      'version: 1',
      'storages:',
      `  fixture: { plugin: file, path: ${join(FIXTURES, 'wal-e-plain', 'store')} }`,
      'servers:',
      "  db: { dataDirectory: /nonexistent, storage: fixture, prefix: '' }",
      '',
    ].join('\n'),
  );
  const plain = await runCli(['--config', config, 'backup-list']);
  assert.equal(plain.code, 0);
  const expected = await expectedListing('wal-e-plain');
  assert.deepEqual(plain.stdout.split('\n').filter(Boolean).map(withoutLastModified), expected.map(withoutLastModified));

  const detail = await runCli(['--config', config, 'backup-list', 'LATEST', '--detail', '--json']);
  assert.equal(detail.code, 0);
  assert.deepEqual(JSON.parse(detail.stdout).map((r: any) => ({ ...r, last_modified: typeof r.last_modified })), [
    {
      name: 'base_000000010000000200000032_00000032',
      last_modified: 'string',
      expanded_size_bytes: 39280290,
      wal_segment_backup_start: '000000010000000200000032',
      wal_segment_offset_backup_start: '00000032',
      wal_segment_backup_stop: '000000010000000200000032',
      wal_segment_offset_backup_stop: '00000032',
    },
  ]);

  const missing = await runCli(['--config', config, 'backup-list', 'base_000000010000000200000099_00000000']);
  assert.equal(missing.code, 1);
  assert.equal(missing.stdout, expected[0] + '\n', 'only the header');
});
