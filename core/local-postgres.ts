/**
 * Running PostgreSQL's own programs on this machine for a restored data directory: as the
 * configured OS user (PostgreSQL refuses to run as root, so walrus run as root switches with
 * runuser), on a free port, listening only on a private unix socket. Used by `verify --drill`
 * and by the demo.
 */
import { spawn } from 'node:child_process';
import { chmod, chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { WalrusError, databaseError } from './errors.js';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runProgram(program: string, args: string[], options: { osUser?: string; input?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  const switchUser = options.osUser && process.getuid?.() === 0 && options.osUser !== userInfo().username;
  const [command, argv] = switchUser ? ['runuser', ['-u', options.osUser!, '--', program, ...args]] : [program, args];
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, { cwd: options.cwd ?? '/', env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new WalrusError('USAGE', `cannot run ${program}: ${e.message}`, { hint: 'is PostgreSQL installed? set pgBinDirectory in the config' })));
    child.on('close', (code) => resolve({ code: code ?? 128, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (address && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** uid/gid of an OS user (via `id`), or null when walrus is not root (nothing to change). */
export async function osUserIds(osUser: string): Promise<{ uid: number; gid: number } | null> {
  if (process.getuid?.() !== 0) return null;
  const [u, g] = await Promise.all([runProgram('id', ['-u', osUser]), runProgram('id', ['-g', osUser])]);
  if (u.code !== 0) throw new WalrusError('USAGE', `OS user '${osUser}' does not exist (osUser in the config)`);
  return { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) };
}

/** chown -R to the OS user when running as root (PostgreSQL must own its data directory). */
export async function giveToOsUser(path: string, osUser: string): Promise<void> {
  if (!(await osUserIds(osUser))) return;
  const r = await runProgram('chown', ['-R', `${osUser}:`, path]);
  if (r.code !== 0) throw new WalrusError('LOCAL_IO', `chown -R ${osUser} ${path} failed: ${r.stderr.trim()}`);
}

/**
 * pg_controldata's "<name> setting:" lines for the parameters a server in archive recovery with
 * hot_standby on must have at least as high as the primary had ("recovery aborted because of
 * insufficient parameter settings" otherwise), keyed by the GUC name.
 */
const PRIMARY_MINIMUMS: Array<[label: string, setting: string]> = [
  ['max_connections setting', 'max_connections'],
  ['max_worker_processes setting', 'max_worker_processes'],
  ['max_wal_senders setting', 'max_wal_senders'],
  ['max_prepared_xacts setting', 'max_prepared_transactions'],
  ['max_locks_per_xact setting', 'max_locks_per_transaction'],
];

/** Parses pg_controldata output (C locale) into the minimum settings recovery needs; unknown lines are ignored. */
export function recoveryMinimumsFromControlData(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const found = PRIMARY_MINIMUMS.find(([label]) => label === line.slice(0, colon).trim());
    const value = Number(line.slice(colon + 1).trim());
    if (found && Number.isInteger(value)) out[found[1]] = value;
  }
  return out;
}

/**
 * The primary's minimums from a restored directory's pg_control; none when pg_controldata cannot
 * read it (the server's own error will then say more). `osUser`: run as that user (when root).
 */
export async function readRecoveryMinimums(binDirectory: string, dataDirectory: string, osUser?: string): Promise<Record<string, number>> {
  const r = await runProgram(join(binDirectory, 'pg_controldata'), [dataDirectory], {
    osUser,
    env: { ...process.env, LC_ALL: 'C', LANG: 'C' }, // labels are English only in the C locale
  }).catch(() => null);
  return r?.code === 0 ? recoveryMinimumsFromControlData(r.stdout) : {};
}

/**
 * `settings` with each of the primary's minimums raised to at least the value in the restored
 * pg_control. A backup carries no postgresql.conf, and a caller may ask for fewer connections to
 * save memory: either way recovery would stop at its first WAL record if the primary had more.
 */
export function raiseToRecoveryMinimums(settings: Record<string, string>, minimums: Record<string, number>): Record<string, string> {
  const out = { ...settings };
  for (const [name, minimum] of Object.entries(minimums)) {
    const asked = out[name] === undefined ? NaN : Number(out[name]);
    if (!(asked >= minimum)) out[name] = String(minimum);
  }
  return out;
}

export interface ScratchServerOptions {
  dataDirectory: string;
  binDirectory: string;
  osUser: string;
  /** Extra settings (written to postgresql.auto.conf by the caller, or passed with -c here). */
  settings?: Record<string, string>;
}

/** A PostgreSQL server on a restored directory, reachable only through a private socket directory. */
export class ScratchServer {
  readonly socketDirectory: string;
  readonly port: number;
  readonly logFile: string;
  private constructor(private readonly o: ScratchServerOptions, socketDirectory: string, port: number) {
    this.socketDirectory = socketDirectory;
    this.port = port;
    this.logFile = join(socketDirectory, 'postgres.log');
  }

  static async prepare(o: ScratchServerOptions): Promise<ScratchServer> {
    const socketDirectory = await mkdtemp(join(tmpdir(), 'walrus-scratch-'));
    await chmod(socketDirectory, 0o700);
    const ids = await osUserIds(o.osUser);
    if (ids) await chown(socketDirectory, ids.uid, ids.gid);
    return new ScratchServer(o, socketDirectory, await freePort());
  }

  private pg(program: string, args: string[], input?: string) {
    return runProgram(join(this.o.binDirectory, program), args, { osUser: this.o.osUser, input, cwd: this.socketDirectory });
  }

  async logTail(lines = 20): Promise<string> {
    try {
      return (await readFile(this.logFile, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no server log)';
    }
  }

  async start(timeoutSeconds = 600): Promise<void> {
    const minimums = await readRecoveryMinimums(this.o.binDirectory, this.o.dataDirectory, this.o.osUser);
    const settings = raiseToRecoveryMinimums(this.o.settings ?? {}, minimums);
    const options = [
      `-c port=${this.port}`,
      "-c listen_addresses=''",
      `-c unix_socket_directories='${this.socketDirectory}'`,
      ...Object.entries(settings).map(([k, v]) => `-c ${k}='${v.replace(/'/g, "''")}'`),
    ].join(' ');
    const r = await this.pg('pg_ctl', ['start', '-D', this.o.dataDirectory, '-l', this.logFile, '-w', '-t', String(timeoutSeconds), '-o', options]);
    if (r.code !== 0) {
      // pg_ctl only says "Examine the log output": the server's last FATAL says why
      const fatal = (await this.logTail(200)).split('\n').reverse().map((l) => /\b(?:FATAL|PANIC):\s+(.*)$/.exec(l)?.[1]).find(Boolean);
      const said = (r.stderr.trim() || r.stdout.trim()).replace(/\s*\n\s*/g, ' ');
      throw databaseError(`PostgreSQL did not start on ${this.o.dataDirectory}: ${fatal ?? said}`, { detail: await this.logTail() });
    }
  }

  async query(sql: string, database = 'postgres'): Promise<string> {
    const r = await this.pg('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', this.socketDirectory, '-p', String(this.port), '-d', database, '-f', '-'], sql);
    if (r.code !== 0) throw databaseError(`query failed on the scratch server: ${r.stderr.trim().split('\n')[0]}`, { detail: sql });
    return r.stdout.replace(/\n$/, '');
  }

  async isRunning(): Promise<boolean> {
    return (await this.pg('pg_ctl', ['status', '-D', this.o.dataDirectory])).code === 0;
  }

  /** Polls until recovery has ended (promoted) or `timeoutMs` passes; fails at once when the server stopped (a FATAL in recovery). */
  async waitUntilPromoted(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const inRecovery = await this.query('select pg_is_in_recovery()').catch(() => 't');
      if (inRecovery === 'f') return;
      if (!(await this.isRunning())) throw databaseError(`the scratch server stopped during recovery of ${this.o.dataDirectory}`, { detail: await this.logTail() });
      if (Date.now() > deadline) throw databaseError(`the scratch server was still in recovery after ${Math.round(timeoutMs / 1000)} s`, { detail: await this.logTail() });
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async stop(): Promise<void> {
    await this.pg('pg_ctl', ['stop', '-D', this.o.dataDirectory, '-m', 'immediate', '-w', '-t', '60']);
  }

  async removeSocketDirectory(): Promise<void> {
    await rm(this.socketDirectory, { recursive: true, force: true });
  }
}

/** Write a file only if it is missing. */
export async function writeIfMissing(path: string, content: string): Promise<boolean> {
  try {
    await writeFile(path, content, { flag: 'wx', mode: 0o600 });
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}
