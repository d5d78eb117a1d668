/**
 * wal-push cost, as PostgreSQL pays it: one `bin/walrus wal-push` process per 16 MiB segment.
 *  1. Median wall time of single pushes (file storage, lzo; with and without gpg), on a real WAL
 *     segment (a WAL-E fixture segment, decompressed) and on random bytes (incompressible).
 *  2. The archiving rate with PostgreSQL 15 driving archive_command: write N segments with
 *     pgbench -i, time until pg_stat_archiver has them all (poolSize 1 and 4).
 *
 *   bash bench/wal-push.sh        (builds dist/ first; run as root: PostgreSQL runs as postgres)
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { nextSegmentName, segmentNumber } from '../core/layout.js';
import { chownToPostgres, createCluster, destroyAllClusters, registerCleanup } from '../test/helpers/pg-cluster.js';
import { REPO_ROOT, WALRUS_BIN, assertDistCurrent, runWalrus, simpleFleet, writeFleetConfig } from '../test/helpers/walrus-cli.js';
import { SHARED_FIXTURES } from '../test/helpers/shared-fixtures.js';

const RUNS = Number(process.env.RUNS ?? 7);
const PG_SCALE = Number(process.env.PG_SCALE ?? 20);
const FIXTURE_GPG = `${SHARED_FIXTURES}/wal-e-gpg`;
const FIXTURE_SEGMENT = `${SHARED_FIXTURES}/wal-e-plain/store/wal_005/000000010000000200000031.lzo`;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function lzopDecompress(path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('lzop', ['-d', '-c', path], { stdio: ['ignore', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`lzop -d exited ${code}`))));
  });
}

const work = await mkdtemp(join(tmpdir(), 'walrus-bench-'));
chmodSync(work, 0o755);
registerCleanup(() => rmSync(work, { recursive: true, force: true }));
assertDistCurrent();

const rows: string[][] = [];

// ------------------------------------------------------------------ 1. single pushes
const realSegment = await lzopDecompress(FIXTURE_SEGMENT);
const contents: Record<string, Buffer> = { 'real WAL': realSegment, random: randomBytes(16 * 1024 * 1024) };
const gpgKey = { publicKey: `\${file:${FIXTURE_GPG}/public-key.asc}`, secretKey: `\${file:${FIXTURE_GPG}/secret-key.asc}`, passphrase: `\${file:${FIXTURE_GPG}/passphrase.txt}` };
let segment = '000000010000000A00000000';
const dataDirectory = join(work, 'data');
await mkdir(join(dataDirectory, 'pg_wal', 'archive_status'), { recursive: true });

for (const gpg of [false, true]) {
  const config = await writeFleetConfig(
    join(work, `push-${gpg ? 'gpg' : 'plain'}.yaml`),
    simpleFleet({ storage: join(work, `store-${gpg ? 'gpg' : 'plain'}`), dataDirectory, prefix: 'db1', gpgKey: gpg ? gpgKey : undefined }),
  );
  for (const [label, content] of Object.entries(contents)) {
    const times: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      segment = nextSegmentName(segment);
      await writeFile(join(dataDirectory, 'pg_wal', segment), content);
      const started = process.hrtime.bigint();
      const r = await runWalrus(['wal-push', `pg_wal/${segment}`], { config, server: 'db1', cwd: dataDirectory });
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if (r.code !== 0) throw new Error(`wal-push exited ${r.code}: ${r.stderr}`);
      times.push(ms);
    }
    rows.push([`wal-push, file storage, lzo${gpg ? ' + gpg' : ''}`, label, String(RUNS), `${(median(times) / 1000).toFixed(2)} s`, `${(16 / (median(times) / 1000)).toFixed(1)} MiB/s`, `min ${(Math.min(...times) / 1000).toFixed(2)} / max ${(Math.max(...times) / 1000).toFixed(2)} s`]);
  }
}
// the baseline: a process that only starts and prints help
{
  const times: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const started = process.hrtime.bigint();
    await runWalrus(['--help']);
    times.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  rows.push(['walrus --help (start-up only)', '-', String(RUNS), `${(median(times) / 1000).toFixed(2)} s`, '-', `min ${(Math.min(...times) / 1000).toFixed(2)} / max ${(Math.max(...times) / 1000).toFixed(2)} s`]);
}

// ------------------------------------------------------------------ 2. PostgreSQL drives archive_command
for (const poolSize of [1, 4]) {
  const archive = join(work, `pg-archive-${poolSize}`);
  await mkdir(archive);
  const config = await writeFleetConfig(join(work, `pg-${poolSize}.yaml`), simpleFleet({ storage: archive, dataDirectory: '/unused', prefix: 'db1', poolSize }));
  await chownToPostgres(archive);
  const c = await createCluster({
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: `'${WALRUS_BIN}' --config '${config}' --server db1 wal-push %p`,
      max_wal_size: '4GB',
      shared_buffers: '64MB',
    },
  });
  try {
    await c.start();
    const first = await c.query('select pg_walfile_name(pg_current_wal_lsn())');
    const started = Date.now();
    await c.pgbench(['-i', '-s', String(PG_SCALE), '-q']);
    const last = await c.query('select pg_walfile_name(pg_switch_wal())');
    const written = (Date.now() - started) / 1000;
    const segments = segmentNumber(last) - segmentNumber(first) + 1;
    for (;;) {
      const [[archived, failed]] = await c.queryRows("select coalesce(last_archived_wal, ''), failed_count from pg_stat_archiver");
      if (Number(failed) > 0) throw new Error(`archive_command failed:\n${await c.logTail(20)}`);
      if (archived >= last) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const total = (Date.now() - started) / 1000;
    const serverLog = await readFile(c.logFile, 'utf8');
    const ahead = serverLog.split('already archived by a parallel push').length - 1;
    rows.push([
      `PostgreSQL archive_command, poolSize ${poolSize}`,
      `pgbench -i -s ${PG_SCALE}`,
      `${segments} segs`,
      `${(total / segments).toFixed(2)} s/seg`,
      `${((segments * 16) / total).toFixed(1)} MiB/s`,
      `load ${written.toFixed(1)} s, all archived after ${total.toFixed(1)} s; ${ahead} calls found their segment pushed ahead`,
    ]);
  } finally {
    await c.destroy();
  }
}
await destroyAllClusters();

const header = ['what', 'input', 'runs', 'median per 16 MiB segment', 'rate', 'spread / detail'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (r: string[]) => r.map((cell, i) => cell.padEnd(widths[i])).join(' | ');
console.log(`walrus wal-push bench (${REPO_ROOT}, node ${process.version}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')})`);
console.log(line(header));
console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
for (const r of rows) console.log(line(r));
