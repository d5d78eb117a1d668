/**
 * walrus next to pgBackRest on one PostgreSQL 15 cluster (see bench/README.md). Run through
 * bench/run.sh, which builds dist/ and checks the tools; as root (PostgreSQL runs as postgres).
 *
 *   BENCH_SCALE  pgbench scale of the cluster (default 100, ~1.5 GB)
 *   BENCH_RUNS   runs per figure (default 3); each figure is the median, with min–max
 *   BENCH_SEGMENTS  WAL segments generated for the archiving and replay figures (default 64)
 *   BENCH_POOL   walrus poolSize and pgBackRest process-max (default 2)
 *   BENCH_WALRUS  the walrus executable (default bin/walrus of this checkout)
 *   BENCH_CODEC  walrus's compression (default lzo, WAL-E's format; lz4 and zstd are opt-in)
 *   BENCH_NO_PGBACKREST=1  walrus figures alone
 *   BENCH_TRACE=1  log each restore_command call of the replays (name, exit status, ms) and print
 *                a summary per replay: where recovery waited for the archive
 *   BENCH_SKIP   comma list of figures to leave out: startup, wal-push, archiving (e.g. to measure
 *                backup, restore and replay alone, faster), backup (backup, restore, replay and the
 *                other verbs' RSS: the archiving figures alone)
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { chownToPostgres, createCluster, destroyAllClusters, registerCleanup, type PgCluster } from '../test/helpers/pg-cluster.js';
import { WALRUS_BIN, waitForWalrusProcesses } from '../test/helpers/walrus-cli.js';

const SCALE = Number(process.env.BENCH_SCALE ?? 100);
const RUNS = Math.max(1, Number(process.env.BENCH_RUNS ?? 3));
const SEGMENTS = Number(process.env.BENCH_SEGMENTS ?? 64);
const POOL = Number(process.env.BENCH_POOL ?? 2);
const WALRUS = process.env.BENCH_WALRUS ?? WALRUS_BIN;
const CODEC = process.env.BENCH_CODEC ?? 'lzo';
// restore_command as walrus writes it (core/pg-settings.ts): the sh front, then node and bin/walrus
// (an older walrus without the front: bin/walrus alone).
const PREFETCH_HIT_FRONT = join(dirname(WALRUS), 'walrus-prefetch-hit');
const RESTORE_COMMAND_PREFIX = existsSync(PREFETCH_HIT_FRONT) ? `/bin/sh ${PREFETCH_HIT_FRONT} ${process.execPath} ` : '';
const PUSH_HIT_FRONT = join(dirname(WALRUS), 'walrus-push-hit');
const ARCHIVE_COMMAND_PREFIX = existsSync(PUSH_HIT_FRONT) ? `/bin/sh ${PUSH_HIT_FRONT} ${process.execPath} ` : '';
const WITH_PGBR = process.env.BENCH_NO_PGBACKREST !== '1';
const TRACE = process.env.BENCH_TRACE === '1';
const SKIP = new Set((process.env.BENCH_SKIP ?? '').split(',').map((s) => s.trim()).filter(Boolean));
const SEGMENT_BYTES = 16 * 1024 * 1024;

// ------------------------------------------------------------------ measuring

interface Measured {
  ms: number;
  rssKb: number;
  code: number;
  stderr: string;
}

/** Run a command as postgres under /usr/bin/time: wall time and the command's own peak RSS. */
function timed(argv: string[], options: { cwd?: string; check?: boolean } = {}): Promise<Measured> {
  const timeFile = join(work, `time.${Math.random().toString(36).slice(2)}`);
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('runuser', ['-u', 'postgres', '--', '/usr/bin/time', '-f', '%M', '-o', timeFile, ...argv], { cwd: options.cwd ?? work, stdio: ['ignore', 'ignore', 'pipe'] });
    const err: Buffer[] = [];
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', async (code) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const rssText = await readFile(timeFile, 'utf8').catch(() => '0');
      await rm(timeFile, { force: true });
      const m = { ms, rssKb: Number(rssText.trim().split('\n').pop()) || 0, code: code ?? -1, stderr: Buffer.concat(err).toString('utf8') };
      if (options.check !== false && m.code !== 0) reject(new Error(`${argv.join(' ')} exited ${m.code}:\n${m.stderr.slice(-3000)}`));
      else resolve(m);
    });
  });
}

function directoryBytes(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('du', ['-sb', path], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b));
    child.on('error', reject);
    child.on('close', () => resolve(Number(out.split('\t')[0])));
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** A figure: median and spread of runs, in a unit; `higherIsBetter` decides the ratio's sense. */
interface Figure {
  values: number[];
  unit: string;
  digits: number;
}
const fig = (values: number[], unit: string, digits = 2): Figure => ({ values, unit, digits });
const show = (f?: Figure) =>
  !f || !f.values.length ? '-' : `${median(f.values).toFixed(f.digits)} ${f.unit} (${Math.min(...f.values).toFixed(f.digits)}–${Math.max(...f.values).toFixed(f.digits)})`;

interface Row {
  what: string;
  walrus?: Figure;
  other?: Figure;
  otherName: string;
  higherIsBetter: boolean;
  target?: number;
}
const rows: Row[] = [];
const rss: Array<[string, number[]]> = [];
function addRss(verb: string, kb: number) {
  const entry = rss.find(([v]) => v === verb);
  if (entry) entry[1].push(kb);
  else rss.push([verb, [kb]]);
}

/** walrus relative to the other tool: >1 means walrus is better (faster / higher rate). */
function ratio(r: Row): number | undefined {
  if (!r.walrus?.values.length || !r.other?.values.length) return undefined;
  const w = median(r.walrus.values);
  const o = median(r.other.values);
  return r.higherIsBetter ? w / o : o / w;
}

function printTable() {
  const header = ['figure', 'walrus', 'compared with', 'other', 'walrus ×', 'target'];
  const body = rows.map((r) => {
    const x = ratio(r);
    return [r.what, show(r.walrus), r.otherName, show(r.other), x === undefined ? '-' : `${x.toFixed(2)}×`, r.target === undefined ? '' : `≥ ${r.target}× ${x === undefined ? '' : x >= r.target ? 'met' : 'MISSED'}`];
  });
  for (const [verb, kbs] of rss) {
    const mb = kbs.map((k) => k / 1024);
    const worst = Math.max(...mb);
    body.push([`peak RSS ${verb}`, show(fig(mb, 'MiB', 0)), '-', '-', '-', `< 200 MiB ${worst < 200 ? 'met' : 'MISSED'}`]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join(' | ');
  console.log('');
  console.log(`walrus bench: scale ${SCALE}, ${RUNS} run(s) per figure (median, min–max), ${SEGMENTS} segments, walrus compression ${CODEC}, pool/process-max ${POOL}, ${cpus().length} cores, node ${process.version}, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log(`walrus ×: walrus's speed relative to the other (> 1: walrus faster).`);
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
  for (const b of body) console.log(line(b));
}

const say = (s: string) => console.log(`== ${s}`);

// ------------------------------------------------------------------ set-up

const work = await mkdtemp(join(tmpdir(), 'walrus-bench-'));
chmodSync(work, 0o755);
registerCleanup(() => rmSync(work, { recursive: true, force: true }));
const walrusStore = join(work, 'walrus-store');
const pgbrConf = join(work, 'pgbackrest.conf');
const fleetPath = join(work, 'fleet.yaml');
for (const d of ['walrus-store', 'pgbr-repo', 'pgbr-log', 'pgbr-lock', 'pgbr-spool', 'seg']) await mkdir(join(work, d));

say(`initdb, pgbench -i -s ${SCALE}`);
const cluster = await createCluster({
  settings: { wal_level: 'replica', archive_mode: 'on', archive_command: "'true'", max_wal_size: '8GB', checkpoint_timeout: '30min', shared_buffers: '128MB' },
});
const walrusCmd = (verb: string) => `${WALRUS} --config ${fleetPath} --server bench --log-level warn ${verb}`;
await writeFile(
  fleetPath,
  [
    'version: 1',
    `storages: { local: { plugin: file, path: ${walrusStore} } }`,
    `defaults: { storage: local, compression: ${CODEC}, encryption: none, poolSize: ${POOL}, prefetch: 8 }`,
    'servers:',
    '  bench:',
    `    dataDirectory: ${cluster.dataDirectory}`,
    '    prefix: bench',
    `    connection: { host: ${cluster.socketDirectory}, port: ${cluster.port}, user: postgres, database: postgres }`,
    '',
  ].join('\n'),
);
await writeFile(
  pgbrConf,
  [
    '[global]',
    `repo1-path=${join(work, 'pgbr-repo')}`,
    `log-path=${join(work, 'pgbr-log')}`,
    `lock-path=${join(work, 'pgbr-lock')}`,
    `spool-path=${join(work, 'pgbr-spool')}`,
    'compress-type=lz4',
    `process-max=${POOL}`,
    'log-level-console=warn',
    'log-level-file=off',
    'start-fast=y',
    'repo1-retention-full=100',
    '[bench]',
    `pg1-path=${cluster.dataDirectory}`,
    `pg1-port=${cluster.port}`,
    `pg1-socket-path=${cluster.socketDirectory}`,
    '',
  ].join('\n'),
);
await chownToPostgres(work);
await cluster.start();
await cluster.pgbench(['-i', '-s', String(SCALE), '-q']);
await cluster.query('create table filler (id int, pad text)');
await cluster.query('checkpoint');
const dataBytes = await directoryBytes(cluster.dataDirectory);
say(`data directory ${(dataBytes / 1e6).toFixed(0)} MB`);

const pgbr = (args: string) => `pgbackrest --config=${pgbrConf} --stanza=bench ${args}`;
const archivers = {
  walrus: `${ARCHIVE_COMMAND_PREFIX}${walrusCmd('wal-push %p')}`,
  'pgBackRest sync': pgbr('archive-push %p'),
  'pgBackRest async': pgbr('--archive-async archive-push %p'),
  both: `${ARCHIVE_COMMAND_PREFIX}${walrusCmd('wal-push %p')} && ${pgbr('archive-push %p')}`,
};
async function setArchiveCommand(command: string) {
  await cluster.query(`alter system set archive_command = '${command.replace(/'/g, "''")}'`);
  await cluster.query('select pg_reload_conf()');
  await new Promise((r) => setTimeout(r, 300));
}

async function waitArchived(last: string, timeoutMs = 15 * 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [[archived, failed]] = await cluster.queryRows("select coalesce(last_archived_wal, ''), failed_count from pg_stat_archiver");
    if (archived >= last) return;
    if (Number(failed) > 0) {
      await cluster.query('select pg_stat_reset_shared($$archiver$$)').catch(() => {});
      throw new Error(`archive_command failed:\n${await cluster.logTail(30)}`);
    }
    if (Date.now() > deadline) throw new Error(`archiving did not reach ${last}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Write about SEGMENTS segments of table data fast; returns the last (switched) segment. */
async function generateSegments(): Promise<{ last: string; loadMs: number }> {
  const started = Date.now();
  await cluster.query(`do $$ declare start pg_lsn := pg_current_wal_lsn(); begin
    loop
      insert into filler select g, md5(g::text) || md5((g * 7)::text) from generate_series(1, 50000) g;
      exit when pg_wal_lsn_diff(pg_current_wal_lsn(), start) >= ${SEGMENTS} * ${SEGMENT_BYTES}::bigint;
    end loop; end $$`);
  const loadMs = Date.now() - started;
  const last = await cluster.query('select pg_walfile_name(pg_switch_wal())');
  return { last, loadMs };
}

async function quiesce(command: string) {
  await setArchiveCommand(command);
  const last = await cluster.query('select pg_walfile_name(pg_switch_wal())');
  await waitArchived(last);
  await cluster.query('truncate filler; checkpoint');
}

if (WITH_PGBR) {
  await timed(pgbr('stanza-create').split(' '));
}

// ------------------------------------------------------------------ 2. start-up and one wal-push

if (!SKIP.has('startup')) {
  say('start-up: node -e 0, walrus --help');
  const node: number[] = [];
  const help: number[] = [];
  for (let i = 0; i < Math.max(RUNS, 5); i++) {
    node.push((await timed([process.execPath, '-e', '0'])).ms);
    const h = await timed([WALRUS, '--help']);
    help.push(h.ms);
    addRss('--help', h.rssKb);
  }
  rows.push({ what: 'start-up: walrus --help vs node -e 0', walrus: fig(help, 'ms', 0), otherName: 'node -e 0', other: fig(node, 'ms', 0), higherIsBetter: false, target: 0.5 });
}

if (!SKIP.has('wal-push')) {
  say('one wal-push of a 16 MiB segment, run by hand');
  // Real segments of this cluster: generate, archive nowhere, copy them aside under fresh names.
  await setArchiveCommand('true');
  const { last } = await generateSegments();
  await waitArchived(last);
  const walDir = join(cluster.dataDirectory, 'pg_wal');
  const names = (await readdir(walDir)).filter((n) => /^[0-9A-F]{24}$/.test(n) && n < last).sort().slice(-Math.max(RUNS, 5));
  const segDir = join(work, 'seg', 'pg_wal');
  await mkdir(join(segDir, 'archive_status'), { recursive: true });
  await chownToPostgres(join(work, 'seg'));
  // timeline 1, log 0x50+i: names no run has pushed (pgBackRest checks the header's system id, not the name)
  const fresh = names.map((_, i) => `00000001000000${(0x50 + i).toString(16).toUpperCase().padStart(2, '0')}00000001`);
  for (const [i, name] of names.entries()) await timed(['cp', join(walDir, name), join(segDir, fresh[i])]);
  await cluster.query('truncate filler; checkpoint');
  const w: number[] = [];
  const p: number[] = [];
  for (const name of fresh) {
    const wr = await timed(walrusCmd(`wal-push ${join(segDir, name)} --pool-size 1`).split(' '));
    w.push(wr.ms);
    addRss('wal-push', wr.rssKb);
    if (WITH_PGBR) p.push((await timed(pgbr(`archive-push ${join(segDir, name)}`).split(' '))).ms);
  }
  rows.push({ what: 'wal-push of one segment (wall)', walrus: fig(w, 'ms', 0), otherName: 'archive-push (sync)', other: WITH_PGBR ? fig(p, 'ms', 0) : undefined, higherIsBetter: false });
}

// ------------------------------------------------------------------ 1. PostgreSQL drives archiving

const catchUp: Record<string, number[]> = {};
const tail: Record<string, number[]> = {};
const busy: Record<string, number[]> = {};
/** CPU seconds all cores have spent busy since boot (/proc/stat: user, nice, system, irq, softirq, steal). */
async function machineCpuSeconds(): Promise<number> {
  const [user, nice, system, , , irq, softirq, steal] = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  return (user + nice + system + irq + softirq + steal) / 100;
}
const modes = WITH_PGBR ? (['walrus', 'pgBackRest sync', 'pgBackRest async'] as const) : (['walrus'] as const);
for (let run = 0; run < (SKIP.has('archiving') ? 0 : RUNS); run++) {
  for (const mode of modes) {
    say(`archiving ${SEGMENTS} segments, ${mode}, run ${run + 1}/${RUNS}`);
    await quiesce(archivers[mode]);
    const started = Date.now();
    const cpuBefore = await machineCpuSeconds();
    const { last, loadMs } = await generateSegments();
    await waitArchived(last);
    const seconds = (Date.now() - started) / 1000;
    const cpu = (await machineCpuSeconds()) - cpuBefore;
    say(`${mode}: load ${(loadMs / 1000).toFixed(2)} s, last segment archived ${(seconds - loadMs / 1000).toFixed(2)} s after it; the machine's CPU busy ${cpu.toFixed(1)} s`);
    (catchUp[mode] ??= []).push((SEGMENTS * 16) / seconds);
    (tail[mode] ??= []).push(seconds - loadMs / 1000);
    (busy[mode] ??= []).push(cpu);
  }
}
const rate = (mode: string) => (catchUp[mode] ? fig(catchUp[mode], 'MiB/s', 1) : undefined);
if (!SKIP.has('archiving')) rows.push({ what: `archiving ${SEGMENTS} segs (load + catch-up)`, walrus: rate('walrus'), otherName: 'archive-push sync', other: rate('pgBackRest sync'), higherIsBetter: true });
if (!SKIP.has('archiving')) rows.push({ what: `archiving ${SEGMENTS} segs (load + catch-up)`, walrus: rate('walrus'), otherName: `archive-push async, process-max ${POOL}`, other: rate('pgBackRest async'), higherIsBetter: true, target: 1 });
const tailFigure = (mode: string) => (tail[mode] ? fig(tail[mode], 's', 2) : undefined);
if (!SKIP.has('archiving')) rows.push({ what: 'archiving: catch-up after the load ends', walrus: tailFigure('walrus'), otherName: `archive-push async, process-max ${POOL}`, other: tailFigure('pgBackRest async'), higherIsBetter: false });
const busyFigure = (mode: string) => (busy[mode] ? fig(busy[mode], 'CPU s', 1) : undefined);
if (!SKIP.has('archiving')) rows.push({ what: 'archiving: machine CPU busy, load + catch-up', walrus: busyFigure('walrus'), otherName: `archive-push async, process-max ${POOL}`, other: busyFigure('pgBackRest async'), higherIsBetter: false });

async function finish() {
  await cluster.stop('fast').catch(() => {});
  await destroyAllClusters();
  printTable();
}
if (SKIP.has('backup')) {
  await finish();
  process.exit(0);
}

// ------------------------------------------------------------------ 3. full backups

await quiesce(WITH_PGBR ? archivers.both : archivers.walrus);
const backupW: number[] = [];
const backupP: number[] = [];
for (let run = 0; run < RUNS; run++) {
  say(`full backup, run ${run + 1}/${RUNS}`);
  await timed(['sync']);
  const w = await timed(walrusCmd('backup-push --fast').split(' '));
  backupW.push(dataBytes / 1e6 / (w.ms / 1000));
  addRss('backup-push', w.rssKb);
  if (WITH_PGBR) {
    await timed(['sync']);
    const p = await timed(pgbr('backup --type=full').split(' '));
    backupP.push(dataBytes / 1e6 / (p.ms / 1000));
  }
}
rows.push({ what: 'full backup (database MB / wall s)', walrus: fig(backupW, 'MB/s', 1), otherName: `backup --type=full, lz4, process-max ${POOL}`, other: WITH_PGBR ? fig(backupP, 'MB/s', 1) : undefined, higherIsBetter: true, target: 1 });

// ------------------------------------------------------------------ 4. restore and replay

say(`${SEGMENTS} segments after the last backups, archived by both`);
{
  const { last } = await generateSegments();
  await waitArchived(last);
}
const fetchW: number[] = [];
const fetchP: number[] = [];
const replayW: number[] = [];
const replayP: number[] = [];
let replayCluster: PgCluster | undefined;
/** restore_command, timed call by call into `log` when BENCH_TRACE=1 (sh, as PostgreSQL runs it). */
function traced(command: string, log: string): string {
  if (!TRACE) return command;
  return `s=$(date +%s%N); ${command}; rc=$?; echo "%f $rc $(( ($(date +%s%N) - s) / 1000000 ))" >> ${log}; exit $rc`;
}
async function traceSummary(who: string, log: string) {
  if (!TRACE) return;
  const calls = (await readFile(log, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean).map((l) => l.split(' '));
  const total = calls.reduce((s, c) => s + Number(c[2]), 0);
  const slow = calls.filter((c) => Number(c[2]) >= 100).map((c) => `${c[0]}:${c[1]}:${c[2]}ms`);
  say(`${who}: ${calls.length} restore_command calls, ${total} ms in all; ≥ 100 ms: ${slow.join(' ') || 'none'}`);
  await rm(log, { force: true });
}
async function replay(dataDirectory: string): Promise<number> {
  replayCluster = await createCluster({ dataDirectory, settings: { archive_mode: 'off', max_wal_size: '8GB', shared_buffers: '128MB' } });
  const started = Date.now();
  // pg_ctl -w returns once the server accepts (read-only) connections, then recovery goes on
  await replayCluster.start({ wait: true, timeoutSeconds: 1200 });
  await replayCluster.waitForRecoveryEnd(20 * 60_000);
  const ms = Date.now() - started;
  if (TRACE) for (const line of (await replayCluster.logTail(200)).split('\n').filter((l) => /redo starts|redo done|archive recovery complete|checkpoint complete|ready to accept connections/.test(l))) say(line);
  await replayCluster.destroy();
  replayCluster = undefined;
  return ms;
}
const targetW = join(work, 'restore-walrus');
const targetP = join(work, 'restore-pgbr');
/** walrus backup-fetch of the latest backup into a fresh targetW, after a sync. */
async function walrusRestore(): Promise<Measured> {
  await rm(targetW, { recursive: true, force: true });
  await timed(['sync']);
  return timed(walrusCmd(`backup-fetch ${targetW} LATEST`).split(' '));
}
/** pgbackrest restore into a fresh, empty targetP owned by postgres, after a sync; `extra` arguments appended. */
async function pgbackrestRestore(extra: string[] = []): Promise<Measured> {
  await rm(targetP, { recursive: true, force: true });
  await mkdir(targetP, { mode: 0o700 });
  await chownToPostgres(targetP);
  await timed(['sync']);
  return timed([...pgbr(`restore --pg1-path=${targetP}`).split(' '), ...extra]);
}
async function walrusRestoreAndReplay() {
  const f = await walrusRestore();
  fetchW.push(dataBytes / 1e6 / (f.ms / 1000));
  addRss('backup-fetch', f.rssKb);
  await writeFile(join(targetW, 'recovery.signal'), '');
  const traceW = join(work, 'trace-walrus.log');
  const restoreCommandW = traced(`${RESTORE_COMMAND_PREFIX}${walrusCmd('wal-fetch %f %p')}`, traceW);
  await writeFile(join(targetW, 'postgresql.auto.conf'), `restore_command = '${restoreCommandW.replace(/'/g, "''")}'\nrecovery_target_timeline = 'latest'\n`);
  await chownToPostgres(targetW);
  replayW.push(await replay(targetW));
  say(`walrus: restore ${(f.ms / 1000).toFixed(2)} s, replay ${(replayW[replayW.length - 1] / 1000).toFixed(1)} s`);
  await traceSummary('walrus', traceW);
  // the prefetcher that followed the recovery ends within a poll (~2 s) of it
  await waitForWalrusProcesses(targetW);
  await rm(targetW, { recursive: true, force: true });
}
async function pgbackrestRestoreAndReplay() {
  const traceP = join(work, 'trace-pgbackrest.log');
  const p = await pgbackrestRestore([`--recovery-option=restore_command=${traced(pgbr(`--pg1-path=${targetP} archive-get %f "%p"`), traceP)}`]);
  fetchP.push(dataBytes / 1e6 / (p.ms / 1000));
  replayP.push(await replay(targetP));
  say(`pgBackRest: restore ${(p.ms / 1000).toFixed(2)} s, replay ${(replayP[replayP.length - 1] / 1000).toFixed(1)} s`);
  await traceSummary('pgBackRest', traceP);
  await rm(targetP, { recursive: true, force: true });
}
// One restore of each tool first, not counted: the first restore after the backups and the WAL
// load paid for whatever the machine was still doing (and, with DAMON's pageout here, for reading
// back the tool's own binary and modules), 1-2 s more than the later ones whichever tool it was.
{
  say('warm-up: one restore of each tool, not counted');
  const w = await walrusRestore();
  await rm(targetW, { recursive: true, force: true });
  let line = `warm-up: walrus restore ${(w.ms / 1000).toFixed(2)} s`;
  if (WITH_PGBR) {
    const p = await pgbackrestRestore();
    await rm(targetP, { recursive: true, force: true });
    line += `, pgBackRest restore ${(p.ms / 1000).toFixed(2)} s`;
  }
  say(line);
}
for (let run = 0; run < RUNS; run++) {
  say(`restore and replay, run ${run + 1}/${RUNS}`);
  // Each tool goes first in every other run, so that neither always follows the other's removal of a whole cluster.
  if (WITH_PGBR && run % 2 === 1) await pgbackrestRestoreAndReplay();
  await walrusRestoreAndReplay();
  if (WITH_PGBR && run % 2 === 0) await pgbackrestRestoreAndReplay();
}
rows.push({ what: 'restore of the full backup (MB / wall s)', walrus: fig(fetchW, 'MB/s', 1), otherName: `restore, process-max ${POOL}`, other: WITH_PGBR ? fig(fetchP, 'MB/s', 1) : undefined, higherIsBetter: true, target: 1 });
rows.push({ what: `start to end of recovery (≥ ${SEGMENTS} segs)`, walrus: fig(replayW.map((m) => m / 1000), 's', 1), otherName: 'archive-get (sync)', other: WITH_PGBR ? fig(replayP.map((m) => m / 1000), 's', 1) : undefined, higherIsBetter: false, target: 1 });

// ------------------------------------------------------------------ 5. the other verbs' peak RSS

say('peak RSS of wal-fetch, wal-prefetch, verify, status, delete (dry run)');
{
  const walDir = join(work, 'seg', 'fetch');
  await mkdir(walDir, { recursive: true });
  await chownToPostgres(walDir);
  const newest = (await readdir(join(walrusStore, 'bench', 'wal_005'))).filter((n) => /^[0-9A-F]{24}(\.[a-z0-9]+)?$/.test(n)).sort();
  const first = newest[newest.length - 10].slice(0, 24);
  addRss('wal-fetch', (await timed(walrusCmd(`wal-fetch ${first} ${join(walDir, first)}`).split(' '))).rssKb);
  addRss('wal-prefetch', (await timed(walrusCmd(`wal-prefetch ${walDir} ${newest[newest.length - 9].slice(0, 24)} --count 8`).split(' '))).rssKb);
  addRss('verify', (await timed(walrusCmd('verify').split(' '), { check: false })).rssKb);
  addRss('status', (await timed(walrusCmd('status').split(' '), { check: false })).rssKb);
  addRss('delete (dry run)', (await timed(walrusCmd('delete retain 1').split(' '), { check: false })).rssKb);
}

await finish();
