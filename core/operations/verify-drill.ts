/**
 * `verify --drill`: the runbook's "create a server to test the backup", automated. Restores the
 * latest (or named) backup into a scratch directory, starts PostgreSQL on a free port with a
 * private socket and archiving off (a drill must never write to the archive), waits until it is
 * consistent and promoted, runs a check query, reports, and removes everything, also on failure.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WalrusError } from '../errors.js';
import { resolveBackupName } from '../backup-catalog.js';
import { fetchBackup } from '../backup-restore.js';
import { restoreCommandFor } from '../pg-settings.js';
import { recoverySettingLines, supplyMissingConfigFiles, targetFromOptions, writeRecoverySettings } from '../recovery-settings.js';
import { ScratchServer, giveToOsUser } from '../local-postgres.js';
import type { VerbRunner } from '../verbs.js';

/** Every user table of every database that accepts connections: counted, so that each is read. */
const TABLE_CHECK = `select format('select %L, count(*) from %s', c.oid::regclass, c.oid::regclass)
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p', 'm') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%'
 order by 1
\\gexec
`;

interface DrillStep {
  step: string;
  ms: number;
  ok: boolean;
  detail?: string;
}

export const run: VerbRunner = async (ctx, _positionals, options) => {
  const rt = await ctx.runtime();
  const started = Date.now();
  const steps: DrillStep[] = [];
  const report: Record<string, unknown> = { server: rt.server.name, backup: null, ok: false, steps };
  let failure: WalrusError | Error | undefined;
  let server: ScratchServer | undefined;
  const scratchRoot = await mkdtemp(join(tmpdir(), 'walrus-drill-'));
  const step = async <T>(name: string, work: () => Promise<T>, detail?: (r: T) => string): Promise<T> => {
    const t = Date.now();
    try {
      const r = await work();
      steps.push({ step: name, ms: Date.now() - t, ok: true, detail: detail?.(r) });
      // progress for a person watching; the report below says the same once it is done
      (process.stderr.isTTY && !ctx.json ? ctx.log.info : ctx.log.debug)(`drill: ${name} done in ${((Date.now() - t) / 1000).toFixed(1)} s${detail ? `: ${detail(r)}` : ''}`);
      return r;
    } catch (e) {
      steps.push({ step: name, ms: Date.now() - t, ok: false, detail: (e as Error).message });
      throw e;
    }
  };
  try {
    await chmod(scratchRoot, 0o700);
    const dataDirectory = join(scratchRoot, 'data');
    const name = await resolveBackupName(rt, String(options.backup ?? 'LATEST'));
    report.backup = name;
    await step('fetch', () => fetchBackup(rt, dataDirectory, name, { poolSize: rt.server.poolSize }), () => `${name} into ${dataDirectory}`);
    await supplyMissingConfigFiles(dataDirectory);
    const target = targetFromOptions(options);
    await writeRecoverySettings(
      dataDirectory,
      recoverySettingLines(restoreCommandFor(rt.fleet.file, rt.server), target.kind === 'end' ? { kind: 'immediate' } : target, false),
      false,
    );
    await giveToOsUser(scratchRoot, rt.server.osUser);
    server = await ScratchServer.prepare({
      dataDirectory,
      binDirectory: rt.server.pgBinDirectory,
      osUser: rt.server.osUser,
      // few connections and little memory for a drill; ScratchServer raises max_connections & co to
      // what the primary had (pg_control), or recovery with hot_standby on would abort at once
      settings: { archive_mode: 'off', max_connections: '20', shared_buffers: '32MB', hot_standby: 'on' },
    });
    await step('start', () => server!.start(), () => `port ${server!.port}`);
    await step('recover', () => server!.waitUntilPromoted(30 * 60_000), () => 'consistent and promoted');
    type CheckResult = { query?: string; output?: string; databases?: string[]; tables?: Record<string, number> };
    const check = await step(
      'check',
      async (): Promise<CheckResult> => {
        if (options.sql) return { query: String(options.sql), output: await server!.query(String(options.sql)) };
        const databases = (await server!.query("select datname from pg_database where datallowconn and datname <> 'template1' order by 1")).split('\n').filter(Boolean);
        const tables: Record<string, number> = {};
        for (const db of databases)
          for (const line of (await server!.query(TABLE_CHECK, db)).split('\n').filter(Boolean)) {
            const [table, count] = line.split('|');
            tables[`${db}.${table}`] = Number(count);
          }
        return { databases, tables };
      },
      (r) => (r.tables ? `${Object.keys(r.tables).length} tables read in ${r.databases?.length} databases` : 'query ran'),
    );
    report.check = check;
    report.ok = true;
  } catch (e) {
    failure = e as Error;
    report.error = (e as Error).message;
    if (server) report.serverLog = await server.logTail(20); // wal-fetch logs 3 lines a segment: 10 could hide the FATAL
  } finally {
    if (server) await server.stop().catch(() => {});
    await rm(scratchRoot, { recursive: true, force: true }).catch(() => {});
    await server?.removeSocketDirectory().catch(() => {});
  }
  report.seconds = Number(((Date.now() - started) / 1000).toFixed(1));

  if (ctx.json) ctx.out.write(JSON.stringify(report, null, 2) + '\n');
  else {
    const lines = [`restore drill of ${report.backup ?? '(no backup)'} for ${rt.server.name}: ${report.ok ? 'PASSED' : 'FAILED'} in ${report.seconds} s`];
    for (const s of steps) lines.push(`  ${s.ok ? 'ok  ' : 'FAIL'} ${s.step.padEnd(8)} ${(s.ms / 1000).toFixed(1).padStart(6)} s  ${s.detail ?? ''}`);
    const check = report.check as { tables?: Record<string, number>; output?: string } | undefined;
    if (check?.tables) for (const [t, n] of Object.entries(check.tables)) lines.push(`       ${t}: ${n} rows`);
    if (check?.output !== undefined) lines.push(`       ${check.output}`);
    if (report.error) lines.push(`  error: ${report.error}`);
    if (report.serverLog) lines.push('  server log:', ...String(report.serverLog).split('\n').map((l) => `    ${l}`));
    ctx.out.write(lines.join('\n') + '\n');
  }
  if (failure) return failure instanceof WalrusError ? failure.exitCode : 9;
  return 0;
};
