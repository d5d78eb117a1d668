/**
 * Archives written by the real WAL-E (shared/fixtures) restored by walrus alone: `backup-fetch
 * LATEST`, then PostgreSQL 15 recovering with `restore_command = walrus wal-fetch %f %p`.
 * Replaying everything must reproduce EXPECTED.txt's three marker phases; stopping at the recorded
 * recovery_target_time exactly the first two. The fixtures are read-only and must stay untouched.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCluster, destroyAllClusters, markerSummary, readExpected, type PgCluster } from '../helpers/pg-cluster.js';
import { runWalrus, simpleFleet, writeFleetConfig, WALRUS_BIN } from '../helpers/walrus-cli.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const FIXTURES = SHARED_FIXTURES;
const SERVER = 'fx';

after(destroyAllClusters);

/** Every file under `dir` with size and mtime: to prove nothing was written to the fixture. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const s = statSync(p);
        out.push(`${p} ${s.size} ${s.mtimeMs}`);
      }
    }
  };
  walk(dir);
  return out.sort();
}

async function fixtureConfig(fixture: string, c: PgCluster): Promise<string> {
  const folder = join(FIXTURES, fixture);
  const gpg = existsSync(join(folder, 'secret-key.asc'));
  // In the cluster's own (postgres-owned) temp dir: restore_command runs as postgres and reads it.
  return writeFleetConfig(
    join(c.tmpRoot, 'walrus.yaml'),
    simpleFleet({
      storage: join(folder, 'store'),
      dataDirectory: c.dataDirectory,
      server: SERVER,
      prefix: '',
      poolSize: 2,
      prefetch: 0,
      gpgKey: gpg ? { secretKey: `\${file:${join(folder, 'secret-key.asc')}}`, passphrase: `\${file:${join(folder, 'passphrase.txt')}}` } : undefined,
    }),
  );
}

/** The backup WAL-E's own backup-list showed (EXPECTED.txt's last table). */
async function walEBackupName(fixture: string): Promise<string> {
  const text = await readFile(join(FIXTURES, fixture, 'EXPECTED.txt'), 'utf8');
  const rows = text.slice(text.indexOf('backup-list output')).split('\n').filter((l) => l.startsWith('base_'));
  assert.equal(rows.length, 1);
  return rows[0].split('\t')[0];
}

/** Fetch LATEST into a fresh empty data directory and configure archive recovery through walrus. */
async function restoreFixture(fixture: string, recovery: Record<string, string>): Promise<PgCluster> {
  // recovery refuses settings lower than the primary's (WAL-E's cluster ran with the default 100)
  const c = await createCluster({ skipInitdb: true, settings: { max_connections: '100' } });
  const config = await fixtureConfig(fixture, c);
  const fetched = await runWalrus(['backup-fetch', c.dataDirectory, 'LATEST', '--json'], { config, server: SERVER, timeoutMs: 180_000 });
  assert.equal(fetched.code, 0, fetched.stderr);
  const summary = JSON.parse(fetched.stdout);
  assert.equal(summary.backup, await walEBackupName(fixture));
  assert.equal(summary.verification, 'stream-checksums');
  assert.equal(summary.bytes, 39280290); // the sentinel's expanded_size_bytes
  assert.ok(!existsSync(join(c.dataDirectory, '.walrus-restore-incomplete')), 'a finished restore has no incomplete marker');
  assert.ok(existsSync(join(c.dataDirectory, 'pg_wal', 'archive_status')));
  // WAL-E leaves the configuration files out; the harness supplies them at start().
  for (const f of ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf']) assert.ok(!existsSync(join(c.dataDirectory, f)), `${f} is not in a WAL-E backup`);
  const restoreCommand = `env NODE_OPTIONS= ${process.execPath} ${WALRUS_BIN} --config ${config} --server ${SERVER} wal-fetch %f %p`;
  await c.writeConf({ restore_command: restoreCommand, ...recovery });
  await writeFile(join(c.dataDirectory, 'recovery.signal'), '');
  await c.start();
  await c.waitForRecoveryEnd(180_000);
  return c;
}

for (const fixture of ['wal-e-plain', 'wal-e-gpg']) {
  test(`${fixture}: backup-fetch LATEST + wal-fetch recovery to the end reproduces all three phases`, { timeout: 600_000 }, async () => {
    const store = join(FIXTURES, fixture, 'store');
    const before = snapshot(store);
    const expected = await readExpected(join(FIXTURES, fixture, 'EXPECTED.txt'));
    assert.equal(expected.summary.length, 3);
    const c = await restoreFixture(fixture, {});
    try {
      assert.deepEqual(await markerSummary(c), expected.summary);
      assert.equal(await c.query('select count(*) from pgbench_accounts'), expected.values.pgbench_accounts);
    } finally {
      await c.destroy();
    }
    assert.deepEqual(snapshot(store), before, 'the fixture store is unchanged');
  });

  test(`${fixture}: recovery_target_time between the phases stops after exactly the first two`, { timeout: 600_000 }, async () => {
    const expected = await readExpected(join(FIXTURES, fixture, 'EXPECTED.txt'));
    const targetTime = expected.values.recovery_target_time_between_phase1_and_phase2;
    assert.ok(targetTime, 'EXPECTED.txt records the target time');
    const c = await restoreFixture(fixture, { recovery_target_time: targetTime, recovery_target_action: 'promote' });
    try {
      const firstTwo = expected.summary.filter((l) => l.startsWith('before-backup=') || l.startsWith('after-backup-1='));
      assert.equal(firstTwo.length, 2);
      assert.deepEqual(await markerSummary(c), firstTwo);
    } finally {
      await c.destroy();
    }
  });
}
