/**
 * `npm run demo`: walrus on the embedded default, end to end, on a throwaway cluster.
 * A PostgreSQL 15 cluster archives through `walrus wal-push` into file storage in a temp folder;
 * walrus takes a base backup while rows are written; more rows come after a recorded time;
 * `walrus restore --target-time` brings a second cluster back to that time, and the restored row
 * counts are printed next to the expected ones; `walrus verify` and `verify --drill` check the
 * archive. Everything is removed at the end, also on failure.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ScratchServer, freePort, giveToOsUser, runProgram } from '../core/local-postgres.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const bin = join(repo, 'bin', 'walrus');
const pgBin = process.env.WALRUS_PG_BIN ?? '/usr/lib/postgresql/15/bin';
const osUser = process.getuid?.() === 0 ? 'postgres' : userInfo().username;
const started = Date.now();
const say = (text: string) => process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m  (${((Date.now() - started) / 1000).toFixed(0)} s)\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Run bin/walrus as the database's OS user, showing its output. */
async function walrus(args: string[], quiet = false): Promise<string> {
  const r = await runProgram(process.execPath, [bin, '--config', config, '--server', 'demo', ...args], { osUser, cwd: root });
  if (!quiet || r.code !== 0) {
    process.stdout.write(`$ walrus ${args.join(' ')}\n${r.stdout}`);
    if (r.stderr.trim()) process.stdout.write(r.stderr.split('\n').filter((l) => /MSG:|ERROR|HINT/.test(l)).map((l) => `  ${l.trim()}`).join('\n') + '\n');
  }
  if (r.code !== 0) throw new Error(`walrus ${args[0]} exited with ${r.code}`);
  return r.stdout;
}

let root = '';
let config = '';
const servers: Array<{ stop(): Promise<void> }> = [];

async function main() {
  root = await mkdtemp(join(tmpdir(), 'walrus-demo-'));
  await chmod(root, 0o755);
  config = join(root, 'fleet.yaml');
  const primaryData = join(root, 'primary');
  const restoredData = join(root, 'restored');
  await mkdir(join(root, 'store'));
  await writeFile(
    config,
    [
      '# walrus demo fleet: one throwaway server, file storage in a temp folder',
      'version: 1',
      'storages:',
      `  local: { plugin: file, path: ${join(root, 'store')} }`,
      'defaults: { storage: local, compression: lzo, poolSize: 2, prefetch: 4 }',
      'servers:',
      '  demo:',
      `    dataDirectory: ${primaryData}`,
      `    connection: { host: ${root}, port: PORT, user: ${osUser}, database: postgres }`,
      `    pgBinDirectory: ${pgBin}`,
      `    osUser: ${osUser}`,
      '',
    ].join('\n'),
  );
  const port = await freePort();
  await writeFile(config, (await import('node:fs')).readFileSync(config, 'utf8').replace('PORT', String(port)), { mode: 0o644 });
  await giveToOsUser(root, osUser);

  say('1. a throwaway PostgreSQL 15 cluster that archives through walrus');
  const init = await runProgram(join(pgBin, 'initdb'), ['-D', primaryData, '-U', osUser, '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'], { osUser, cwd: root });
  if (init.code !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const pgConf = await walrus(['export-pg', 'demo'], true);
  await appendFile(join(primaryData, 'postgresql.conf'), `\n${pgConf}\nport = ${port}\nlisten_addresses = ''\nunix_socket_directories = '${root}'\nfsync = off\narchive_timeout = 0\n`);
  process.stdout.write(pgConf.split('\n').filter((l) => /^(archive|restore)_command|^archive_mode|^wal_level/.test(l)).map((l) => `  ${l}`).join('\n') + '\n');
  const pg = (program: string, args: string[], input?: string) => runProgram(join(pgBin, program), args, { osUser, cwd: root, input });
  const psql = async (sql: string) => {
    const r = await pg('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', root, '-p', String(port), '-d', 'postgres', '-f', '-'], sql);
    if (r.code !== 0) throw new Error(`psql: ${r.stderr}`);
    return r.stdout.trim();
  };
  const start = await pg('pg_ctl', ['start', '-D', primaryData, '-l', join(root, 'primary.log'), '-w']);
  if (start.code !== 0) throw new Error(`pg_ctl start: ${start.stderr}`);
  servers.push({ stop: async () => void (await pg('pg_ctl', ['stop', '-D', primaryData, '-m', 'immediate'])) });

  const phase = (name: string, n: number) => psql(`insert into marker(phase, note) select '${name}', md5('${name}' || g) from generate_series(1, ${n}) g;`);
  await psql('create table marker(id serial primary key, phase text not null, note text not null, at timestamptz default clock_timestamp());');
  await phase('before-backup', 1000);
  const pgbench = await pg('pgbench', ['-i', '-s', '2', '-q', '-h', root, '-p', String(port), 'postgres']);
  if (pgbench.code !== 0) throw new Error(`pgbench -i: ${pgbench.stderr}`);

  say('2. an online base backup, while pgbench writes');
  const pgbenchArgv = [join(pgBin, 'pgbench'), '-T', '5', '-c', '2', '-h', root, '-p', String(port), 'postgres'];
  const load = process.getuid?.() === 0 ? spawn('runuser', ['-u', osUser, '--', ...pgbenchArgv], { stdio: 'ignore' }) : spawn(pgbenchArgv[0], pgbenchArgv.slice(1), { stdio: 'ignore' });
  const loadDone = new Promise((r) => load.once('close', r));
  await walrus(['backup-push', '--fast']);
  await loadDone;
  await walrus(['backup-list']);

  say('3. more writes, a recorded point in time, more writes');
  await phase('after-backup-1', 500);
  await sleep(1100);
  const target = await psql("select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'");
  await sleep(1100);
  await phase('after-backup-2', 200);
  const lastSegment = await psql('select pg_walfile_name(pg_switch_wal())');
  process.stdout.write(`  target time ${target}; waiting until ${lastSegment} is archived\n`);
  for (let i = 0; i < 240; i++) {
    const s = await psql("select coalesce(last_archived_wal, '') || '|' || failed_count from pg_stat_archiver");
    const [wal, failed] = s.split('|');
    if (wal >= lastSegment) break;
    if (Number(failed) > 0 && i % 20 === 0) process.stdout.write(`  (archiver failures so far: ${failed})\n`);
    await sleep(250);
  }
  const expected = await psql(`select phase || '=' || count(*) from marker where at < '${target}' group by phase order by phase`);

  say(`4. walrus restore --target-time '${target}' into a new directory`);
  await walrus(['restore', restoredData, '--target-time', target]);
  const restored = await ScratchServer.prepare({ dataDirectory: restoredData, binDirectory: pgBin, osUser, settings: { archive_mode: 'off' } });
  servers.push({ stop: () => restored.stop() });
  await restored.start();
  await restored.waitUntilPromoted(300_000);
  const got = await restored.query("select phase || '=' || count(*) from marker group by phase order by phase");
  const consistent = await restored.query('select (select sum(abalance) from pgbench_accounts) = (select coalesce(sum(delta), 0) from pgbench_history)');
  await restored.stop();
  servers.pop();
  await restored.removeSocketDirectory();

  say('5. walrus verify, and a restore drill');
  await walrus(['verify']).catch((e) => process.stdout.write(`  verify: ${(e as Error).message}\n`));
  await walrus(['verify', '--drill']).catch((e) => process.stdout.write(`  drill: ${(e as Error).message}\n`));

  say('report');
  const exp = expected.split('\n');
  const res = got.split('\n');
  const phases = ['before-backup', 'after-backup-1', 'after-backup-2'];
  const value = (lines: string[], p: string) => lines.find((l) => l.startsWith(`${p}=`))?.split('=')[1] ?? '0';
  process.stdout.write(`  ${'phase'.padEnd(16)} ${'expected'.padStart(8)} ${'restored'.padStart(8)}\n`);
  let ok = consistent === 't';
  for (const p of phases) {
    const e = value(exp, p);
    const r = value(res, p);
    ok &&= e === r;
    process.stdout.write(`  ${p.padEnd(16)} ${e.padStart(8)} ${r.padStart(8)}\n`);
  }
  process.stdout.write(`  pgbench balances consistent: ${consistent === 't' ? 'yes' : 'NO'}\n`);
  process.stdout.write(`\n${ok ? 'demo passed' : 'demo FAILED'} in ${((Date.now() - started) / 1000).toFixed(0)} s (removing ${root})\n`);
  return ok ? 0 : 1;
}

let code = 1;
try {
  code = await main();
} catch (e) {
  process.stdout.write(`\ndemo failed: ${(e as Error).message}\n`);
} finally {
  for (const s of servers.reverse()) await s.stop().catch(() => {});
  if (root) await rm(root, { recursive: true, force: true });
}
process.exit(code);
