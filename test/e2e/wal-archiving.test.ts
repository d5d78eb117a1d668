/**
 * WAL archiving end to end with real PostgreSQL 15: a primary whose archive_command is
 * `bin/walrus wal-push %p`, and a second cluster seeded by `pg_basebackup -X none` (taken before
 * the load, so every later change reaches it only through the archive) that recovers with
 * restore_command = `bin/walrus wal-fetch %f %p` and must show the primary's rows.
 * Two variants: file storage + lzo, and the S3 API server + lzo + gpg.
 */
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';
import {
  PG_BIN_DIRECTORY,
  chownToPostgres,
  createCluster,
  createMarkerTable,
  destroyAllClusters,
  insertMarkers,
  markerSummary,
  registerCleanup,
  type PgCluster,
} from '../helpers/pg-cluster.js';
import { startS3Server, S3RVER_CREDENTIALS, type S3TestServer } from '../helpers/s3-server.js';
import { segmentNumber } from '../../core/layout.js';
import { WALRUS_BIN, assertDistCurrent, simpleFleet, waitForWalrusProcesses, walrusProcessesMentioning, writeFleetConfig } from '../helpers/walrus-cli.js';

const FIXTURE_GPG = `${SHARED_FIXTURES}/wal-e-gpg`;
const MIN_SEGMENTS = 10;

const s3Servers: S3TestServer[] = [];
after(async () => {
  await destroyAllClusters();
  for (const s of s3Servers) await s.stop();
});

/** A temp directory PostgreSQL (the postgres user) can write: walrus runs as postgres from archive_command. */
async function postgresOwnedDirectory(label: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `walrus-${label}-`));
  chmodSync(dir, 0o700);
  await chownToPostgres(dir);
  registerCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function runAsPostgres(program: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('runuser', ['-u', 'postgres', '--', join(PG_BIN_DIRECTORY, program), ...args], { cwd: '/', stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stderr }));
  });
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, onTimeout: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}\n${await onTimeout()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** What the restored cluster must show: marker summary, pgbench row counts and balances. */
async function databaseState(c: PgCluster): Promise<string[]> {
  return [
    ...(await markerSummary(c)),
    await c.query('select count(*) from pgbench_accounts'),
    await c.query('select count(*) || \':\' || coalesce(sum(delta), 0) from pgbench_history'),
    await c.query('select sum(abalance) from pgbench_accounts'),
  ];
}

interface Variant {
  name: string;
  storage: () => Promise<string | Record<string, unknown>>;
  gpg: boolean;
}

const variants: Variant[] = [
  { name: 'file storage, lzo', gpg: false, storage: () => postgresOwnedDirectory('archive') },
  {
    name: 'S3 API server, lzo + gpg',
    gpg: true,
    storage: async () => {
      const s3 = await startS3Server();
      s3Servers.push(s3);
      return {
        plugin: 's3',
        bucket: await s3.bucket(),
        endpoint: s3.endpoint,
        region: 'us-east-1',
        forcePathStyle: true,
        accessKeyId: S3RVER_CREDENTIALS.accessKeyId,
        secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey,
      };
    },
  },
];

for (const variant of variants) {
  describe(`WAL archiving with PostgreSQL 15: ${variant.name}`, () => {
    test('archive_command pushes every segment; a pg_basebackup -X none copy recovers through restore_command to the same rows', { timeout: 180_000 }, async (t) => {
      const began = Date.now();
      const phase = (what: string) => t.diagnostic(`${((Date.now() - began) / 1000).toFixed(1)} s: ${what}`);
      assertDistCurrent();
      const work = await postgresOwnedDirectory('wal-e2e');
      const primary = await createCluster();
      const config = await writeFleetConfig(
        join(work, 'fleet.yaml'),
        simpleFleet({
          storage: await variant.storage(),
          dataDirectory: primary.dataDirectory,
          prefix: 'db1',
          poolSize: 3,
          prefetch: 4,
          gpgKey: variant.gpg
            ? { publicKey: `\${file:${FIXTURE_GPG}/public-key.asc}`, secretKey: `\${file:${FIXTURE_GPG}/secret-key.asc}`, passphrase: `\${file:${FIXTURE_GPG}/passphrase.txt}` }
            : undefined,
        }),
      );
      await chownToPostgres(work);
      const walrus = `${shellQuote(WALRUS_BIN)} --config ${shellQuote(config)} --server db1`;

      await primary.writeConf({
        wal_level: 'replica',
        archive_mode: 'on',
        archive_command: `${walrus} wal-push %p`,
        max_wal_size: '256MB',
        checkpoint_timeout: '30min',
        shared_buffers: '32MB',
      });
      await primary.start();
      await createMarkerTable(primary);
      await insertMarkers(primary, 'before-backup', 100, variant.name);

      // The copy: taken before the load, without WAL; everything after reaches it via the archive only.
      const replica = await createCluster({ skipInitdb: true });
      const basebackup = await runAsPostgres('pg_basebackup', ['-h', primary.socketDirectory, '-p', String(primary.port), '-U', 'postgres', '-D', replica.dataDirectory, '-X', 'none', '-c', 'fast', '--no-sync']);
      assert.equal(basebackup.code, 0, basebackup.stderr);

      // The load: pgbench tables and transactions, marker rows, segment switches in between.
      phase('base backup taken');
      const firstSegment = await primary.query('select pg_walfile_name(pg_current_wal_lsn())');
      await primary.pgbench(['-i', '-s', '5', '-q']);
      await insertMarkers(primary, 'after-backup-1', 500, variant.name);
      await primary.query('select pg_switch_wal()');
      await primary.pgbench(['-c', '2', '-t', '200', '-n']);
      for (let i = 0; i < 4; i++) {
        await insertMarkers(primary, `after-backup-${i + 2}`, 50, variant.name);
        await primary.query('select pg_switch_wal()');
      }
      // a few more switches if the load fell short of MIN_SEGMENTS (the last one carries the 'last' rows)
      let lastSegment = '';
      let segmentsWritten = 0;
      for (let extra = 0; segmentsWritten < MIN_SEGMENTS && extra < 20; extra++) {
        await insertMarkers(primary, 'last', 10, variant.name);
        lastSegment = await primary.query('select pg_walfile_name(pg_switch_wal())');
        segmentsWritten = segmentNumber(lastSegment) - segmentNumber(firstSegment) + 1;
      }
      assert.ok(segmentsWritten >= MIN_SEGMENTS, `the load wrote ${segmentsWritten} segments (${firstSegment} … ${lastSegment}); at least ${MIN_SEGMENTS} wanted`);

      phase(`load written: ${segmentsWritten} segments`);
      const archiver = await waitUntil(
        `pg_stat_archiver to reach ${lastSegment}`,
        async () => {
          const [row] = await primary.queryRows('select archived_count, coalesce(last_archived_wal, \'\'), failed_count, coalesce(last_failed_wal, \'\') from pg_stat_archiver');
          if (Number(row[2]) > 0) assert.fail(`archive_command failed ${row[2]} time(s), last for ${row[3]}\n${await primary.logTail(30)}`);
          return row[1] !== '' && row[1] >= lastSegment ? row : undefined;
        },
        90_000,
        () => primary.logTail(30),
      );
      assert.ok(Number(archiver[0]) >= segmentsWritten, `archived_count ${archiver[0]} covers the ${segmentsWritten} segments written`);
      phase('archiver caught up');
      // wal-push started the push follower for this running server (pushFollower is on by default) ...
      assert.ok(walrusProcessesMentioning(join(primary.dataDirectory, 'pg_wal')).length >= 1, "a push follower follows the primary's pg_wal");
      const expected = await databaseState(primary);
      await primary.stop('fast');
      // ... and it ends on its own once the server has stopped
      assert.deepEqual(await waitForWalrusProcesses(primary.dataDirectory, 30_000), [], 'the push follower still running 30 s after the server stopped (killed)');

      // Recovery: recovery.signal, restore_command = wal-fetch; replays the archive to its end, then promotes.
      await writeFile(join(replica.dataDirectory, 'recovery.signal'), '');
      await replica.writeConf({ restore_command: `${walrus} wal-fetch %f %p`, shared_buffers: '32MB' });
      await replica.start({ timeoutSeconds: 120 });
      await replica.waitForRecoveryEnd(120_000);
      phase('recovery ended');
      const restored = await databaseState(replica);
      assert.deepEqual(restored, expected);
      assert.ok(expected.some((line) => /^last=\d+:/.test(line)), 'the rows written just before the last switch are there');
      assert.equal(await replica.query('select count(*) from pgbench_accounts'), '500000');

      // prefetchers started by restore_command are detached: they must end on their own
      assert.deepEqual(await waitForWalrusProcesses(replica.dataDirectory, 30_000), [], 'prefetchers still running after 30 s (killed)');
      const log = await replica.logTail(400);
      assert.match(log, /restored log file "[0-9A-F]{24}" from archive/);
      assert.doesNotMatch(log, /walrus ERROR/, 'wal-fetch reported no errors during recovery');
    });
  });
}
