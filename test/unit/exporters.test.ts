/**
 * export-cron, export-pg and status. Command lines are not compared as text: each is parsed back
 * the way its reader parses it (cron's % rule then sh; systemd's unquoting; postgresql.conf's
 * string rules, PostgreSQL's %-placeholders, then sh) and run against a script that prints its
 * argv, from a directory whose name has a space, a quote, a % and a $. OnCalendar conversions
 * are checked against systemd-analyze and croner; status runs on a file storage filled by hand.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile, readFile, utimes, symlink, readdir, copyFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Cron } from 'croner';
import { loadFleetConfig, type FleetConfig } from '../../core/config/fleet-config.js';
import { isCronExpression } from '../../core/config/schema-validation.js';
import { main } from '../../core/cli.js';
import { EXIT } from '../../core/errors.js';
import {
  archiveCommandFor,
  currentInvocation,
  postgresqlConfLines,
  quoteConfString,
  restoreCommandFor,
  shellQuote,
  type WalrusInvocation,
} from '../../core/pg-settings.js';
import { scheduledJobs, type ScheduledJob } from '../../core/operations/export-cron.js';
import { manifest as cronExportManifest } from '../../plugins/cron-export/index.js';
import { cronToOnCalendar, parseCronExpression, CronSyntaxError } from '../../plugins/cron-export/cron-calendar.js';
import { silentLogger } from '../../core/log.js';
import type { ScheduleExporter } from '../../core/operations/export-cron.js';
import { REPO_ROOT } from '../helpers/walrus-cli.js';

// ---------------------------------------------------------------- how each reader parses

/** cron(8): `\%` is a literal %, an unescaped % ends the command (we never emit one). */
function cronUnescape(command: string): string {
  let out = '';
  for (let i = 0; i < command.length; i++) {
    if (command[i] === '\\' && command[i + 1] === '%') {
      out += '%';
      i++;
    } else if (command[i] === '%') throw new Error(`unescaped % in cron command: ${command}`);
    else out += command[i];
  }
  return out;
}

/** systemd ExecStart=: specifiers (%%), then words (quotes, C escapes), then $$ in each argument (not the executable). */
function systemdExecWords(line: string): string[] {
  const afterSpecifiers = line.replace(/%(.)/g, (_, c) => {
    if (c !== '%') throw new Error(`unexpected specifier %${c} in ${line}`);
    return '%';
  });
  const words: string[] = [];
  let i = 0;
  const s = afterSpecifiers;
  while (i < s.length) {
    while (s[i] === ' ') i++;
    if (i >= s.length) break;
    let word = '';
    let quote: string | null = null;
    for (; i < s.length; i++) {
      const c = s[i];
      if (quote === null && c === ' ') break;
      if (c === '\\') {
        const n = s[++i];
        const escapes: Record<string, string> = { '\\': '\\', '"': '"', "'": "'", n: '\n', t: '\t', ' ': ' ' };
        if (!(n in escapes)) throw new Error(`unknown escape \\${n} in ${line}`);
        word += escapes[n];
      } else if (quote === null && (c === '"' || c === "'")) quote = c;
      else if (quote !== null && c === quote) quote = null;
      else word += c;
    }
    if (quote !== null) throw new Error(`unbalanced quote in ${line}`);
    words.push(words.length === 0 ? word : word.replace(/\$(.)/g, (_, c) => {
      if (c !== '$') throw new Error(`unexpected variable $${c} in ${line}`);
      return '$';
    }));
  }
  return words;
}

/** A postgresql.conf string value as the GUC parser reads it ('' and backslash escapes). */
function confStringValue(quoted: string): string {
  assert.match(quoted, /^'.*'$/s);
  const body = quoted.slice(1, -1);
  let out = '';
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c === "'") {
      assert.equal(body[i + 1], "'", `lone quote inside conf string ${quoted}`);
      out += "'";
      i++;
    } else if (c === '\\') {
      const n = body[++i];
      out += ({ b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' } as Record<string, string>)[n] ?? n;
    } else {
      assert.notEqual(c, '\n');
      out += c;
    }
  }
  return out;
}

/** PostgreSQL's placeholder expansion in archive_command / restore_command (shell_archive.c, xlogarchive.c). */
function expandPlaceholders(command: string, values: Record<string, string>): string {
  return command.replace(/%(.)/g, (whole, c) => (c === '%' ? '%' : (values[c] ?? whole)));
}

function sh(command: string): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync('sh', ['-c', command], { encoding: 'utf8' });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

const hasSystemdAnalyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' }).status === 0;

// ---------------------------------------------------------------- fixtures

let root: string;
/** A directory name every quoting layer must survive. */
let weird: string;
let argvScript: string;
let invocation: WalrusInvocation;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'walrus-exporters-'));
  weird = join(root, `it's a 100% "odd" $HOME dir`);
  await mkdir(weird, { recursive: true });
  argvScript = join(weird, 'print argv.mjs');
  await writeFile(argvScript, "process.stdout.write(JSON.stringify(process.argv.slice(2)) + '\\n');\n");
  // a node binary whose own path needs quoting too (systemd refuses quotes in an executable's path)
  const nodeDirectory = join(root, 'node 100% $dir');
  await mkdir(nodeDirectory);
  await symlink(process.execPath, join(nodeDirectory, 'node bin'));
  invocation = { node: join(nodeDirectory, 'node bin'), script: argvScript };
  // archive_command and restore_command start with the sh fronts that sit beside bin/walrus: through them, a miss runs the script
  await copyFile(join(REPO_ROOT, 'bin', 'walrus-prefetch-hit'), join(weird, 'walrus-prefetch-hit'));
  await copyFile(join(REPO_ROOT, 'bin', 'walrus-push-hit'), join(weird, 'walrus-push-hit'));
});
after(() => rm(root, { recursive: true, force: true }));

async function writeFleet(yaml: string, name = 'fleet.yaml'): Promise<FleetConfig> {
  const file = join(weird, name);
  await writeFile(file, yaml);
  return loadFleetConfig(file, { env: {} });
}

const SCHEDULED_FLEET = `version: 1
storages:
  local:
    plugin: file
    path: ./store
defaults:
  logDirectory: ./logs
  schedule:
    backup: "0 2 * * *"
    retention: "30 18 * * mon-fri"
  retention:
    keepBackups: 8
servers:
  db1:
    dataDirectory: /var/lib/postgresql/15/main
  db2:
    dataDirectory: /var/lib/postgresql/15/other
    osUser: pgother
    schedule:
      backup: "*/20 1-5 1,15 * sun"
  db3:
    dataDirectory: /var/lib/postgresql/15/third
    schedule:
      backup: "@daily"
    retention: {}
`;

async function exporter(format: 'crontab' | 'cron.d' | 'systemd'): Promise<ScheduleExporter> {
  return (await cronExportManifest.create({ format }, { log: silentLogger, configDirectory: root, instanceName: 'cron-export' })) as ScheduleExporter;
}

/** `(schedule, user?, command)` of each job line (comments and blank lines skipped). */
function cronLines(text: string, withUser: boolean) {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .map((line) => {
      const tokens = line.split(' ');
      const fieldCount = tokens[0].startsWith('@') ? 1 : 5;
      const schedule = tokens.slice(0, fieldCount).join(' ');
      const user = withUser ? tokens[fieldCount] : undefined;
      const command = tokens.slice(fieldCount + (withUser ? 1 : 0)).join(' ');
      return { line, schedule, user, command };
    });
}

/** Runs a cron job's command as cron would, returns the argv the program saw (from its log). */
async function runCronCommand(command: string, logFile: string): Promise<string[]> {
  await rm(logFile, { force: true });
  const r = sh(cronUnescape(command));
  assert.equal(r.status, 0, r.stderr);
  const lines = (await readFile(logFile, 'utf8')).trim().split('\n');
  assert.equal(lines.length, 1);
  return JSON.parse(lines[0]);
}

// ---------------------------------------------------------------- cron → OnCalendar

describe('cron expressions to OnCalendar', () => {
  const expected: Array<[string, string[]]> = [
    ['0 2 * * *', ['*-*-* 02:00:00']],
    ['30 18 * * 1-5', ['Mon..Fri *-*-* 18:30:00']],
    ['30 18 * * mon-fri', ['Mon..Fri *-*-* 18:30:00']],
    ['*/15 * * * *', ['*-*-* *:00/15:00']],
    ['10/20 * * * *', ['*-*-* *:10/20:00']],
    ['5,35 */6 * * sat,sun', ['Sun,Sat *-*-* 00/6:05,35:00']],
    ['0 9-17/2 * * *', ['*-*-* 09,11,13,15,17:00:00']],
    ['0 0 1 jan *', ['*-01-01 00:00:00']],
    ['0 12 * * 7', ['Sun *-*-* 12:00:00']],
    ['0 0 * 3-5,9 *', ['*-03..05,09-* 00:00:00']],
    // day-of-month starts with *: cron ANDs the two day fields, like systemd
    ['0 3 */2 * 1', ['Mon *-*-01/2 03:00:00']],
    // both restricted: cron ORs them; two OnCalendar lines fire at the union
    ['0 4 1,15 * 5', ['*-*-01,15 04:00:00', 'Fri *-*-* 04:00:00']],
    ['@daily', ['*-*-* 00:00:00']],
    ['@hourly', ['*-*-* *:00:00']],
    ['@weekly', ['Sun *-*-* 00:00:00']],
    ['@monthly', ['*-*-01 00:00:00']],
    ['@yearly', ['*-01-01 00:00:00']],
  ];
  for (const [cron, specs] of expected) {
    it(`${cron} → ${specs.join(' + ')}`, () => {
      assert.ok(isCronExpression(cron));
      assert.deepEqual(cronToOnCalendar(cron), specs);
    });
  }

  it('rejects what cron rejects', () => {
    for (const bad of ['60 * * * *', '* * * *', '0 0 * * 8', '5-1 * * * *', '*/0 * * * *', '0 0 32 * *', '0 0 * foo *', '@reboot', '1/2/3 * * * *']) {
      assert.throws(() => parseCronExpression(bad), CronSyntaxError, bad);
    }
  });

  // The same next 40 times from systemd's own calendar parser and from croner (an independent cron implementation).
  const compared = ['0 2 * * *', '30 18 * * 1-5', '*/15 * * * *', '10/20 3 * * *', '5,35 */6 * * sat,sun', '0 9-17/2 * * *', '0 0 1 jan *', '0 12 * * 7', '0 4 1,15 * 5', '15 8 13 * fri', '0 0 29 2 *', '0 6 * 3-5,9 mon', '@weekly', '@monthly'];
  for (const cron of compared) {
    it(`${cron}: systemd-analyze calendar agrees with croner`, { skip: hasSystemdAnalyze ? false : 'systemd-analyze not installed' }, () => {
      const n = 40;
      const before = new Date();
      const r = spawnSync('systemd-analyze', ['calendar', `--iterations=${n}`, ...cronToOnCalendar(cron)], { encoding: 'utf8', env: { ...process.env, TZ: 'UTC' } });
      const after = new Date();
      assert.equal(r.status, 0, r.stderr);
      assert.doesNotMatch(r.stdout + r.stderr, /Failed|Invalid/);
      const times = [...r.stdout.matchAll(/(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC/g)].map((m) => Date.parse(m[1].replace(' ', 'T') + 'Z'));
      const union = [...new Set(times)].sort((a, b) => a - b).slice(0, n);
      // croner from just before and just after systemd-analyze ran: a schedule boundary may fall in between
      const fromCroner = (start: Date) => new Cron(cron, { timezone: 'UTC', sloppyRanges: true }).nextRuns(n, start).map((d) => d.getTime());
      const candidates = [fromCroner(new Date(before.getTime() - 1000)), fromCroner(before), fromCroner(after)];
      assert.ok(
        candidates.some((c) => JSON.stringify(c) === JSON.stringify(union)),
        `systemd: ${union.slice(0, 5).map((t) => new Date(t).toISOString())}...\ncroner:  ${candidates[1].slice(0, 5).map((t) => new Date(t).toISOString())}...`,
      );
    });
  }
});

// ---------------------------------------------------------------- export-cron

describe('export-cron', () => {
  let fleet: FleetConfig;
  let jobs: ScheduledJob[];
  before(async () => {
    fleet = await writeFleet(SCHEDULED_FLEET);
    await mkdir(join(weird, 'logs'), { recursive: true });
    jobs = scheduledJobs(fleet, invocation);
  });

  it('one job per schedule and server; retention only where keepBackups is set', () => {
    assert.deepEqual(
      jobs.map((j) => `${j.server}:${j.job}:${j.schedule}`),
      ['db1:backup:0 2 * * *', 'db1:retention:30 18 * * mon-fri', 'db2:backup:*/20 1-5 1,15 * sun', 'db2:retention:30 18 * * mon-fri', 'db3:backup:@daily', 'db3:retention:30 18 * * mon-fri'],
    );
  });

  it('the default invocation is this node and this checkout\'s bin/walrus, by absolute path', () => {
    const real = currentInvocation();
    assert.equal(real.node, process.execPath);
    assert.ok(real.script.startsWith('/') && real.script.endsWith('/bin/walrus') && existsSync(real.script), real.script);
    const [job] = scheduledJobs(fleet);
    assert.deepEqual(job.argv.slice(0, 2), [real.node, real.script]);
    assert.equal(job.argv[3], join(weird, 'fleet.yaml'));
  });

  it('crontab: 5 valid cron fields, then a command sh runs with exactly the right argv and log file', async () => {
    const text = (await exporter('crontab')).render(jobs, ['test header']);
    assert.match(text, /^# test header\n/);
    const lines = cronLines(text, false);
    assert.equal(lines.length, jobs.length);
    for (const [i, l] of lines.entries()) {
      assert.ok(isCronExpression(l.schedule), `not a cron expression: ${l.schedule}`);
      assert.equal(l.schedule, jobs[i].schedule);
      const logFile = join(weird, 'logs', `${jobs[i].server}-${jobs[i].job === 'backup' ? 'backup-push' : 'delete'}.log`);
      assert.equal(jobs[i].logFile, logFile);
      assert.match(l.command, / >> .* 2>&1$/);
      const argv = await runCronCommand(l.command, logFile);
      const verb = jobs[i].job === 'backup' ? ['backup-push'] : ['delete', '--confirm', 'retain', '8'];
      assert.deepEqual(argv, ['--config', join(weird, 'fleet.yaml'), '--server', jobs[i].server, ...verb]);
    }
  });

  it('appends to the log (>>), never truncates', async () => {
    const l = cronLines((await exporter('crontab')).render(jobs.slice(0, 1), []), false)[0];
    await rm(jobs[0].logFile, { force: true });
    sh(cronUnescape(l.command));
    sh(cronUnescape(l.command));
    assert.equal((await readFile(jobs[0].logFile, 'utf8')).trim().split('\n').length, 2);
  });

  it('cron.d: the user column is the server\'s osUser', async () => {
    const lines = cronLines((await exporter('cron.d')).render(jobs, []), true);
    assert.deepEqual(
      lines.map((l) => l.user),
      jobs.map((j) => (j.server === 'db2' ? 'pgother' : 'postgres')),
    );
    for (const [i, l] of lines.entries()) {
      assert.ok(isCronExpression(l.schedule));
      assert.deepEqual((await runCronCommand(l.command, jobs[i].logFile)).slice(0, 4), ['--config', join(weird, 'fleet.yaml'), '--server', jobs[i].server]);
    }
  });

  it('systemd: a oneshot service and a timer per job, ExecStart unquotes to the argv, OnCalendar matches the cron expression', async () => {
    const text = (await exporter('systemd')).render(jobs, ['test header']);
    const files = new Map<string, string>();
    let current: string | null = null;
    for (const line of text.split('\n')) {
      const m = /^# (walrus-[A-Za-z0-9_.-]+\.(?:service|timer))$/.exec(line);
      if (m) {
        assert.ok(!files.has(m[1]), `${m[1]} twice`);
        current = m[1];
        files.set(current, '');
      } else if (current) files.set(current, files.get(current)! + line + '\n');
    }
    assert.equal(files.size, jobs.length * 2);
    const unitDirectory = join(root, 'units');
    await mkdir(unitDirectory, { recursive: true });
    for (const job of jobs) {
      const base = `walrus-${job.server}-${job.job}`;
      const service = files.get(`${base}.service`)!;
      const timer = files.get(`${base}.timer`)!;
      assert.ok(service && timer, base);
      assert.match(service, /^Type=oneshot$/m);
      assert.match(service, new RegExp(`^User=${job.osUser}$`, 'm'));
      const exec = /^ExecStart=(.*)$/m.exec(service)![1];
      assert.deepEqual(systemdExecWords(exec), job.argv);
      const output = /^StandardOutput=append:(.*)$/m.exec(service)![1];
      assert.equal(output.replace(/%%/g, '%'), job.logFile);
      const calendars = [...timer.matchAll(/^OnCalendar=(.*)$/gm)].map((m) => m[1]);
      assert.deepEqual(calendars, cronToOnCalendar(job.schedule));
      await writeFile(join(unitDirectory, `${base}.service`), service);
      await writeFile(join(unitDirectory, `${base}.timer`), timer);
    }
    assert.deepEqual(cronToOnCalendar('0 2 * * *'), ['*-*-* 02:00:00']);
    assert.match(files.get('walrus-db1-backup.timer')!, /^OnCalendar=\*-\*-\* 02:00:00$/m);
  });

  it('systemd: systemd-analyze verify accepts every unit (it also checks that the quoted executable exists)', { skip: hasSystemdAnalyze ? false : 'systemd-analyze not installed' }, async () => {
    const unitDirectory = join(root, 'units-verified');
    await mkdir(unitDirectory, { recursive: true });
    // users named in User= must exist for verify to be quiet: use root for this check
    const rootJobs = jobs.map((j) => ({ ...j, osUser: 'root' }));
    const text = (await exporter('systemd')).render(rootJobs, []);
    let current: string | null = null;
    const files = new Map<string, string>();
    for (const line of text.split('\n')) {
      const m = /^# (walrus-\S+\.(?:service|timer))$/.exec(line);
      if (m) files.set((current = m[1]), '');
      else if (current) files.set(current, files.get(current)! + line + '\n');
    }
    for (const [name, body] of files) await writeFile(join(unitDirectory, name), body);
    const names = await readdir(unitDirectory);
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', ...names], { cwd: unitDirectory, encoding: 'utf8', env: { ...process.env, SYSTEMD_UNIT_PATH: `${unitDirectory}:` } });
    assert.equal((r.stdout + r.stderr).trim(), '', r.stdout + r.stderr);
    // and it does complain about a unit that is wrong: the check can fail
    await writeFile(join(unitDirectory, 'walrus-broken.service'), files.get('walrus-db1-backup.service')!.replace('"', ''));
    const bad = spawnSync('systemd-analyze', ['verify', '--man=no', 'walrus-broken.service'], { cwd: unitDirectory, encoding: 'utf8', env: { ...process.env, SYSTEMD_UNIT_PATH: `${unitDirectory}:` } });
    assert.notEqual((bad.stdout + bad.stderr).trim(), '');
  });

  it('systemd: an executable path with a quote is refused with a usage error, not written broken', async () => {
    const quoted = jobs.map((j) => ({ ...j, argv: [join(weird, 'node'), ...j.argv.slice(1)] }));
    await assert.rejects(async () => (await exporter('systemd')).render(quoted, []), (e: Error & { kind?: string }) => e.kind === 'USAGE' && /quotes/.test(e.message));
  });

  it('through the CLI: the header names the config, crontab warns when servers run as different users', async () => {
    let out = '';
    const sink = new Writable({ write: (chunk, _e, cb) => ((out += chunk.toString()), cb()) });
    const code = await main(['--config', join(weird, 'fleet.yaml'), 'export-cron', '--format', 'cron.d'], {}, sink);
    assert.equal(code, EXIT.OK);
    assert.ok(out.includes(`# walrus cron.d file for the fleet ${join(weird, 'fleet.yaml')}`));
    assert.equal(cronLines(out, true).length, 6);
    assert.equal(await main(['--config', join(weird, 'fleet.yaml'), 'export-cron', '--format', 'fcron'], {}, sink), EXIT.USAGE);
  });
});

// ---------------------------------------------------------------- export-pg

describe('export-pg', () => {
  it('shellQuote survives sh for every awkward character', () => {
    const words = ['plain', 'with space', "it's", '100%', '$HOME', '`date`', 'a\\b', '"q"', '', '*', '~', 'new\nline', "''"];
    const r = spawnSync('sh', ['-c', `printf '%s\\0' ${words.map(shellQuote).join(' ')}`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.split('\0').slice(0, -1), words);
  });

  it('quoteConfString round-trips through the postgresql.conf string rules', () => {
    for (const value of ["it's", 'a\\b', "''", 'tab\there', 'line\nbreak', "'\\'", '%p']) assert.equal(confStringValue(quoteConfString(value)), value);
  });

  it('archive_command and restore_command, read as PostgreSQL reads them, run the program with the right argv', async () => {
    const fleet = await writeFleet(SCHEDULED_FLEET);
    const configPath = join(weird, 'fleet.yaml');
    const server = fleet.servers.db1;
    const lines = postgresqlConfLines(configPath, server, { invocation });
    const setting = (name: string) => {
      const line = lines.find((l) => l.startsWith(`${name} = `));
      assert.ok(line, name);
      return line.slice(name.length + 3);
    };
    assert.equal(setting('wal_level'), 'replica');
    assert.equal(setting('archive_mode'), 'on');
    assert.equal(setting('archive_timeout'), '60');
    for (const l of lines) assert.ok(!l.includes('\n'));

    const archive = confStringValue(setting('archive_command'));
    assert.equal(archive, archiveCommandFor(configPath, server, invocation));
    const pushed = sh(expandPlaceholders(archive, { p: 'pg_wal/000000010000000000000001', f: '000000010000000000000001' }));
    assert.equal(pushed.status, 0, pushed.stderr);
    assert.deepEqual(JSON.parse(pushed.stdout), ['--config', configPath, '--server', 'db1', 'wal-push', 'pg_wal/000000010000000000000001']);

    const restore = confStringValue(setting('restore_command'));
    assert.equal(restore, restoreCommandFor(configPath, server, invocation));
    const fetched = sh(expandPlaceholders(restore, { p: 'pg_wal/RECOVERYXLOG', f: '00000002.history', r: '000000010000000000000001' }));
    assert.equal(fetched.status, 0, fetched.stderr);
    assert.deepEqual(JSON.parse(fetched.stdout), ['--config', configPath, '--server', 'db1', 'wal-fetch', '00000002.history', 'pg_wal/RECOVERYXLOG']);
  });

  it('through the CLI: unknown server is a usage error', async () => {
    let out = '';
    const sink = new Writable({ write: (chunk, _e, cb) => ((out += chunk.toString()), cb()) });
    assert.equal(await main(['--config', join(weird, 'fleet.yaml'), 'export-pg', 'db1'], {}, sink), EXIT.OK);
    assert.match(out, /^archive_command = '.*wal-push %p'$/m);
    assert.equal(await main(['--config', join(weird, 'fleet.yaml'), 'export-pg', 'nope'], {}, sink), EXIT.USAGE);
  });
});

// ---------------------------------------------------------------- status

describe('status', () => {
  let dir: string;
  let configPath: string;
  let now = Date.now();
  const ago = (seconds: number) => new Date(now - seconds * 1000);
  /** An age status computed some time after `now`: at least `seconds`, at most that plus the time since. */
  const assertAge = (actual: number, seconds: number) => {
    const elapsed = Math.ceil((Date.now() - now) / 1000);
    assert.ok(actual >= seconds - 1 && actual <= seconds + elapsed + 1, `age ${actual}, expected ${seconds} (+ up to ${elapsed} s elapsed)`);
  };

  /** An object in the file storage with a chosen size and mtime. */
  async function object(key: string, bytes: number, mtime: Date) {
    const path = join(dir, 'store', key);
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, Buffer.alloc(bytes, 1));
    await utimes(path, mtime, mtime);
  }

  async function status(args: string[] = []): Promise<{ code: number; out: string }> {
    let out = '';
    const sink = new Writable({ write: (chunk, _e, cb) => ((out += chunk.toString()), cb()) });
    const code = await main(['--config', configPath, 'status', ...args], {}, sink);
    return { code, out };
  }

  before(async () => {
    dir = join(root, 'status dir');
    await mkdir(dir, { recursive: true });
    configPath = join(dir, 'fleet.yaml');
    now = Date.now();
    await writeFile(
      configPath,
      `version: 1
storages:
  local:
    plugin: file
    path: ./store
    fsync: false
defaults:
  storage: local
  retention:
    keepBackups: 2
servers:
  db1:
    dataDirectory: /var/lib/postgresql/15/main
    status:
      maxArchiveAgeMinutes: 10
      maxBackupAgeHours: 24
  db2:
    dataDirectory: /var/lib/postgresql/15/other
`,
    );
    const sentinel = JSON.stringify({ wal_segment_backup_stop: '000000010000000000000004', wal_segment_offset_backup_stop: '00000100', expanded_size_bytes: 1 });
    // db1: the highest segment name is the last archived even though a lower one is newer on disk;
    // history/backup files and a backup without sentinel do not count
    await object('db1/wal_005/000000010000000000000003.lzo', 100, ago(600));
    await object('db1/wal_005/000000010000000000000004.lzo', 200, ago(300));
    await object('db1/wal_005/000000010000000000000002.lzo', 50, ago(60));
    await object('db1/wal_005/00000002.history.lzo', 10, ago(10));
    await object('db1/wal_005/000000010000000000000004.00000028.backup.lzo', 10, ago(10));
    await object('db1/basebackups_005/base_000000010000000000000002_00000028/tar_partitions/part_00000000.tar.lzo', 1000, ago(7200));
    await object('db1/basebackups_005/base_000000010000000000000002_00000028_backup_stop_sentinel.json', sentinel.length, ago(7000));
    await object('db1/basebackups_005/base_000000010000000000000004_00000028/tar_partitions/part_00000000.tar.lzo', 1000, ago(3700));
    await object('db1/basebackups_005/base_000000010000000000000004_00000028_backup_stop_sentinel.json', sentinel.length, ago(3600));
    await object('db1/basebackups_005/base_000000010000000000000006_00000028/tar_partitions/part_00000000.tar.lzo', 500, ago(5));
    // db2: nothing archived, one old backup
    await object('db2/basebackups_005/base_000000010000000000000001_00000028_backup_stop_sentinel.json', 2, ago(40 * 3600));
  });

  it('--json: last archive by segment name, last backup by sentinel time, counts and bytes; db2 is stale', async () => {
    const { code, out } = await status(['--json']);
    assert.equal(code, EXIT.STALE);
    const s = JSON.parse(out);
    assert.equal(s.ok, false);
    const [db1, db2] = s.servers;
    assert.equal(db1.server, 'db1');
    assert.equal(db1.ok, true, db1.problems.join('; '));
    assert.equal(db1.lastArchive.segment, '000000010000000000000004');
    assert.equal(db1.lastArchive.key, 'db1/wal_005/000000010000000000000004.lzo');
    assertAge(db1.lastArchive.ageSeconds, 300);
    assert.equal(db1.lastBackup.name, 'base_000000010000000000000004_00000028');
    assertAge(db1.lastBackup.ageSeconds, 3600);
    assert.deepEqual(db1.backups, { count: 2, keep: 2 });
    const sentinelBytes = 2 * JSON.stringify({ wal_segment_backup_stop: '000000010000000000000004', wal_segment_offset_backup_stop: '00000100', expanded_size_bytes: 1 }).length;
    assert.equal(db1.storage.bytes, 100 + 200 + 50 + 10 + 10 + 1000 + 1000 + 500 + sentinelBytes);
    assert.equal(db1.storage.objects, 10);
    assert.deepEqual(db1.thresholds, { maxArchiveAgeMinutes: 10, maxBackupAgeHours: 24 });

    assert.equal(db2.ok, false);
    assert.equal(db2.lastArchive, null);
    assert.deepEqual(db2.thresholds, { maxArchiveAgeMinutes: 60, maxBackupAgeHours: 36 });
    assert.deepEqual(db2.problems, ['no WAL segment archived', 'last base backup is 1d 16h old (threshold 36 h)']);
  });

  it('one server within thresholds exits 0; an old segment makes it stale (exit 8)', async () => {
    assert.equal((await status(['--server', 'db1'])).code, EXIT.OK);
    const old = ago(11 * 60);
    await utimes(join(dir, 'store/db1/wal_005/000000010000000000000004.lzo'), old, old);
    const { code, out } = await status(['--server', 'db1']);
    assert.equal(code, EXIT.STALE);
    assert.equal(EXIT.STALE, 8);
    assert.match(out, /^db1 .* STALE$/m);
    assert.match(out, /^db1: last archived segment is 11m \d\ds old \(threshold 10 min\)$/m);
  });

  it('--prometheus writes textfile metrics atomically (no temp file left)', async () => {
    const prom = join(dir, 'metrics dir', 'walrus.prom');
    await mkdir(join(dir, 'metrics dir'));
    await writeFile(prom, 'old contents\n');
    const { code } = await status(['--prometheus', prom]);
    assert.equal(code, EXIT.STALE);
    const text = await readFile(prom, 'utf8');
    assert.deepEqual(await readdir(join(dir, 'metrics dir')), ['walrus.prom']);
    const samples = Object.fromEntries(
      text
        .split('\n')
        .filter((l) => l && !l.startsWith('#'))
        .map((l) => {
          const m = /^(\w+\{server="[^"]*"\}) (\S+)$/.exec(l);
          assert.ok(m, `bad sample line: ${l}`);
          return [m[1], m[2]];
        }),
    );
    assert.equal(samples['walrus_last_archive_age_seconds{server="db2"}'], '+Inf');
    assertAge(Number(samples['walrus_last_archive_age_seconds{server="db1"}']), 660);
    assert.equal(samples['walrus_backups_count{server="db1"}'], '2');
    assert.equal(samples['walrus_status_ok{server="db1"}'], '0');
    assert.equal(samples['walrus_status_ok{server="db2"}'], '0');
    assert.ok(Number(samples['walrus_storage_bytes{server="db1"}']) > 2800);
    for (const name of ['walrus_last_archive_age_seconds', 'walrus_last_backup_age_seconds', 'walrus_backups_count', 'walrus_storage_bytes', 'walrus_status_ok']) {
      assert.match(text, new RegExp(`^# TYPE ${name} gauge$`, 'm'));
    }
  });

  it('a server whose storage fails is reported, and its error code wins over stale', async () => {
    await writeFile(
      join(dir, 'failing-storage.mjs'),
      `export const manifest = { name: 'failing', kind: 'storage', optionsSchema: { type: 'object' }, create: () => ({
        async put() {}, async get() { return null; }, async head() { return null; }, async delete() {},
        describe: (k = '') => 'failing://' + k,
        async *list() { const { storageError } = await import(${JSON.stringify(new URL('../../core/errors.ts', import.meta.url).href)}); throw storageError('list failed: bucket unreachable'); },
      }) };\n`,
    );
    const yaml = await readFile(configPath, 'utf8');
    const failingConfig = join(dir, 'failing.yaml');
    await writeFile(failingConfig, yaml.replace('storages:\n', 'storages:\n  broken:\n    plugin: ./failing-storage.mjs\n') + '  db3:\n    dataDirectory: /x\n    storage: broken\n');
    let out = '';
    const sink = new Writable({ write: (chunk, _e, cb) => ((out += chunk.toString()), cb()) });
    const code = await main(['--config', failingConfig, 'status', '--json'], {}, sink);
    assert.equal(code, EXIT.STORAGE);
    const db3 = JSON.parse(out).servers.find((s: { server: string }) => s.server === 'db3');
    assert.deepEqual(db3.error, { kind: 'STORAGE', message: 'list failed: bucket unreachable' });
    assert.equal(db3.ok, false);
  });
});
