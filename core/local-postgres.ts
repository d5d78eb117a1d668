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
    const options = [
      `-c port=${this.port}`,
      "-c listen_addresses=''",
      `-c unix_socket_directories='${this.socketDirectory}'`,
      ...Object.entries(this.o.settings ?? {}).map(([k, v]) => `-c ${k}='${v.replace(/'/g, "''")}'`),
    ].join(' ');
    const r = await this.pg('pg_ctl', ['start', '-D', this.o.dataDirectory, '-l', this.logFile, '-w', '-t', String(timeoutSeconds), '-o', options]);
    if (r.code !== 0) throw databaseError(`PostgreSQL did not start on ${this.o.dataDirectory}: ${r.stderr.trim() || r.stdout.trim()}`, { detail: await this.logTail() });
  }

  async query(sql: string, database = 'postgres'): Promise<string> {
    const r = await this.pg('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', this.socketDirectory, '-p', String(this.port), '-d', database, '-f', '-'], sql);
    if (r.code !== 0) throw databaseError(`query failed on the scratch server: ${r.stderr.trim().split('\n')[0]}`, { detail: sql });
    return r.stdout.replace(/\n$/, '');
  }

  /** Polls until recovery has ended (promoted) or `timeoutMs` passes. */
  async waitUntilPromoted(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const inRecovery = await this.query('select pg_is_in_recovery()').catch(() => 't');
      if (inRecovery === 'f') return;
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
