/**
 * A real PostgreSQL 15 cluster that archives its WAL through `bin/walrus wal-push` into a file
 * storage in its own temp dir, with a fleet config naming it: the starting point of every test
 * that restores what walrus archived (restore, verify --drill).
 *
 * PostgreSQL runs archive_command/restore_command as `postgres`, so the store and the config are
 * postgres-owned; verbs run by the test as root (backup-push, restore) may write there too.
 */
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { createCluster, chownToPostgres, type PgCluster } from './pg-cluster.js';
import { runWalrus, walrusArchiveCommand, writeFleetConfig, type WalrusResult } from './walrus-cli.js';

export interface ArchivingClusterOptions {
  /** Server name in the fleet config (default `db`). */
  server?: string;
  /** Storage prefix (default `db1`). */
  prefix?: string;
  poolSize?: number;
  /** Extra postgresql.conf settings for the cluster. */
  settings?: Record<string, string>;
}

export interface ArchivingCluster {
  cluster: PgCluster;
  /** Root of the file storage. */
  store: string;
  /** Fleet config path (postgres-readable). */
  config: string;
  server: string;
  prefix: string;
  /** `bin/walrus --config CONFIG --server SERVER ...args` (default timeout 180 s). */
  walrus(args: string[], timeoutMs?: number): Promise<WalrusResult>;
  /** pg_switch_wal(), then wait until PostgreSQL reports that segment archived. Returns its name. */
  switchAndWaitArchived(timeoutMs?: number): Promise<string>;
  /** `<store>/<prefix>/basebackups_005/<backup>/tar_partitions/<partition>` */
  partitionPath(backup: string, partition?: string): string;
}

/** Creates and starts the cluster (archive_mode on, wal_level replica). Destroyed by destroyAllClusters(). */
export async function createArchivingCluster(options: ArchivingClusterOptions = {}): Promise<ArchivingCluster> {
  const server = options.server ?? 'db';
  const prefix = options.prefix ?? 'db1';
  const cluster = await createCluster();
  const store = await cluster.createOwnedDirectory('store');
  // wal-push runs as postgres, backup-push as root: the WAL folder must exist postgres-owned first
  await mkdir(join(store, prefix, 'wal_005'), { recursive: true });
  await chownToPostgres(store);
  const config = await writeFleetConfig(join(cluster.tmpRoot, 'fleet.yaml'), {
    version: 1,
    storages: { main: { plugin: 'file', path: store, fsync: false } },
    defaults: { storage: 'main', compression: 'lzo', encryption: 'none', poolSize: options.poolSize ?? 2, prefetch: 0 },
    servers: { [server]: { dataDirectory: cluster.dataDirectory, prefix, connection: cluster.connection } },
  });
  await chownToPostgres(config);
  await cluster.writeConf({
    archive_mode: 'on',
    archive_command: walrusArchiveCommand(config, server),
    wal_level: 'replica',
    ...options.settings,
  });
  await cluster.start();

  const walrus = (args: string[], timeoutMs = 180_000) => runWalrus(args, { config, server, timeoutMs });

  async function switchAndWaitArchived(timeoutMs = 90_000): Promise<string> {
    const segment = await cluster.query('select pg_walfile_name(pg_switch_wal())');
    const deadline = Date.now() + timeoutMs;
    while ((await cluster.query("select coalesce(last_archived_wal, '') from pg_stat_archiver")) < segment) {
      if (Date.now() > deadline) throw new Error(`segment ${segment} was not archived within ${timeoutMs} ms\n${await cluster.logTail()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    return segment;
  }

  return {
    cluster,
    store,
    config,
    server,
    prefix,
    walrus,
    switchAndWaitArchived,
    partitionPath: (backup, partition = 'part_00000000.tar.lzo') => join(store, prefix, 'basebackups_005', backup, 'tar_partitions', partition),
  };
}

/** Flip one bit of one byte of a file in place (at `at(size)`); returns the undo. */
export async function flipByte(path: string, at: (size: number) => number = (size) => Math.floor(size / 2)): Promise<() => Promise<void>> {
  const h = await open(path, 'r+');
  try {
    const { size } = await h.stat();
    const offset = at(size);
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, offset);
    const original = b[0];
    b[0] ^= 0x10;
    await h.write(b, 0, 1, offset);
    return async () => {
      const u = await open(path, 'r+');
      try {
        await u.write(Buffer.from([original]), 0, 1, offset);
      } finally {
        await u.close();
      }
    };
  } finally {
    await h.close();
  }
}

/** A UTC timestamp from the server's clock, as PostgreSQL and `--target-time` read it. */
export async function serverClockTime(cluster: PgCluster): Promise<string> {
  return cluster.query("select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'");
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
