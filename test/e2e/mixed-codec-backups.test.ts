/**
 * Base backups of one server taken with lzo, lz4 and zstd (the compression changed between them)
 * all restore, whatever the compression is now: backup-fetch reads each partition with the codec
 * its suffix names. Offline backups of a real, cleanly stopped PostgreSQL 15 cluster, so each
 * restored base/ and global/ must equal the data directory's byte for byte.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { createCluster, destroyAllClusters, chownToPostgres, type PgCluster } from '../helpers/pg-cluster.js';
import { runWalrus, writeFleetConfig } from '../helpers/walrus-cli.js';

let c: PgCluster;
let store: string;

before(async () => {
  c = await createCluster();
  store = await c.createOwnedDirectory('store');
});
after(() => destroyAllClusters());

const configFor = async (compression: string) => {
  const path = await writeFleetConfig(join(c.tmpRoot, `${compression}.yaml`), {
    version: 1,
    storages: { main: { plugin: 'file', path: store, fsync: false } },
    defaults: { storage: 'main', compression, encryption: 'none', poolSize: 2, prefetch: 0 },
    servers: { db: { dataDirectory: c.dataDirectory, prefix: 'db', connection: c.connection } },
  });
  await chownToPostgres(path);
  return path;
};

/** SHA-256 of every file under base/ and global/ of a data directory, by relative path. */
async function treeDigest(dataDirectory: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string) => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else out.set(relative(dataDirectory, p), createHash('sha256').update(await readFile(p)).digest('hex'));
    }
  };
  for (const top of ['base', 'global']) await walk(join(dataDirectory, top));
  return out;
}

test('offline backups taken with lzo, lz4 and zstd each restore byte for byte under every compression', { timeout: 300_000 }, async () => {
  const backups: Array<{ compression: string; name: string; digest: Map<string, string> }> = [];
  for (const [i, compression] of ['lzo', 'lz4', 'zstd'].entries()) {
    // a new REDO segment for each backup (an offline backup is named after it)
    await c.start();
    await c.query(`CREATE TABLE t${i} AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g; SELECT pg_switch_wal(); CHECKPOINT;`);
    await c.stop('fast');
    const pushed = await runWalrus(['backup-push', '--while-offline', '--json'], { config: await configFor(compression), server: 'db' });
    assert.equal(pushed.code, 0, pushed.stderr);
    const name = JSON.parse(pushed.stdout).name as string;
    const suffix = { lzo: '.lzo', lz4: '.lz4', zstd: '.zst' }[compression];
    const parts = await readdir(join(store, 'db', 'basebackups_005', name, 'tar_partitions'));
    assert.ok(parts.length > 0 && parts.every((p) => p.endsWith(`.tar${suffix}`)), `${compression}: ${parts.join(' ')}`);
    backups.push({ compression, name, digest: await treeDigest(c.dataDirectory) });
  }
  for (const now of ['lzo', 'lz4', 'zstd', 'none']) {
    const config = await configFor(now);
    for (const b of backups) {
      const target = join(c.tmpRoot, `restore-${b.compression}-under-${now}`);
      const fetched = await runWalrus(['backup-fetch', target, b.name], { config, server: 'db' });
      assert.equal(fetched.code, 0, `${b.compression} backup under ${now}: ${fetched.stderr}`);
      assert.deepEqual(await treeDigest(target), b.digest, `${b.compression} backup under ${now}`);
    }
  }
  // verify decodes every partition by its suffix too. Its only complaints: the WAL these offline
  // backups need to start (their checkpoint's segment), which nothing archived here.
  const verified = await runWalrus(['verify', '--json'], { config: await configFor('none'), server: 'db' });
  const report = JSON.parse(verified.stdout) as { problems: Array<{ kind: string; message: string }> };
  assert.ok(report.problems.length > 0 && report.problems.every((p) => /WAL segment 0{7}10{15}[2-4] \(none archived\)/.test(p.message)), verified.stdout);
});
