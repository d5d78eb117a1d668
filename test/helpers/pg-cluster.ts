/**
 * Real PostgreSQL clusters for tests. Everything PostgreSQL runs as the `postgres` OS user
 * (`runuser -u postgres --`): initdb refuses root, and tests run as root. Each cluster lives in
 * its own temp dir under os.tmpdir() (data directory, unix socket, server log), listens on
 * 127.0.0.1 on a free port, and is stopped and removed at process exit even when a test fails.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtemp, mkdir, readFile, writeFile, rm, chmod, access } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const PG_BIN_DIRECTORY = '/usr/lib/postgresql/15/bin';
const OS_USER = 'postgres';
const DB_USER = 'postgres';
const CONF_BEGIN = '# --- walrus test harness: begin ---';
const CONF_END = '# --- walrus test harness: end ---';

export type StopMode = 'smart' | 'fast' | 'immediate';

export interface ClusterOptions {
  /** Extra postgresql.conf settings (written after the harness's own, so they win). */
  settings?: Record<string, string>;
  initdbArgs?: string[];
  /**
   * Use this data directory (e.g. a restored one) instead of `<tmpRoot>/data`; initdb is skipped.
   * The harness chowns it to postgres before every start and writes the configuration files a
   * backup leaves out. destroy() leaves it in place (the caller owns it).
   */
  dataDirectory?: string;
  /** Create `<tmpRoot>/data` empty (mode 0700, postgres-owned) instead of running initdb: restore into it, then start(). */
  skipInitdb?: boolean;
}

export interface StartOptions {
  /** Wait for the server to accept connections (pg_ctl -w). Default true. */
  wait?: boolean;
  timeoutSeconds?: number;
}

/** What the `postgres` source plugin needs to connect to this cluster. */
export interface ClusterConnection {
  host: string;
  port: number;
  user: string;
  database: string;
}

export interface PgCluster {
  dataDirectory: string;
  port: number;
  socketDirectory: string;
  tmpRoot: string;
  logFile: string;
  binDirectory: string;
  connection: ClusterConnection;
  start(options?: StartOptions): Promise<void>;
  stop(mode?: StopMode): Promise<void>;
  restart(): Promise<void>;
  isRunning(): Promise<boolean>;
  /** Runs SQL through psql (-At, ON_ERROR_STOP); returns stdout without the final newline. */
  query(sql: string, database?: string): Promise<string>;
  /** Rows of the last statement's output, fields split. */
  queryRows(sql: string, database?: string): Promise<string[][]>;
  /** pgbench with -h/-p/-U set; database `postgres` unless args name one. Resolves to stdout. */
  pgbench(args: string[]): Promise<string>;
  /** Polls until pg_is_in_recovery() is false; fails early (with the log tail) if the server stops. */
  waitForRecoveryEnd(timeoutMs?: number): Promise<void>;
  /** Merges settings into the harness's block of postgresql.conf (takes effect at the next start/reload). */
  writeConf(lines: Record<string, string>): Promise<void>;
  /** A directory under tmpRoot owned by postgres (for tablespaces, restore targets). */
  createOwnedDirectory(name: string): Promise<string>;
  logTail(lines?: number): Promise<string>;
  /** Stop (immediate) if running, and remove tmpRoot. Idempotent. */
  destroy(): Promise<void>;
}

// ---------------------------------------------------------------- process-level cleanup

interface TrackedCluster {
  dataDirectory: string;
  tmpRoot: string;
}
const liveClusters = new Map<PgCluster, TrackedCluster>();
const exitActions: Array<() => void> = [];
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Synchronous fallback: 'exit' handlers cannot await, so pg_ctl runs with spawnSync.
  process.on('exit', () => {
    for (const tracked of liveClusters.values()) {
      spawnSync('runuser', ['-u', OS_USER, '--', join(PG_BIN_DIRECTORY, 'pg_ctl'), 'stop', '-D', tracked.dataDirectory, '-m', 'immediate', '-w', '-s'], {
        stdio: 'ignore',
        cwd: '/',
      });
      rmSync(tracked.tmpRoot, { recursive: true, force: true });
    }
    liveClusters.clear();
    for (const action of exitActions.splice(0)) {
      try {
        action();
      } catch {
        // best effort at exit
      }
    }
  });
  // Signals skip 'exit' handlers unless we turn them into an exit.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => process.exit(signal === 'SIGINT' ? 130 : 143));
  }
}

/** Run `action` (synchronously) at process exit; for temp dirs and processes a test made itself. */
export function registerCleanup(action: () => void): void {
  installExitHook();
  exitActions.push(action);
}

/** Destroy every cluster still alive in this process: use as `after(destroyAllClusters)`. */
export async function destroyAllClusters(): Promise<void> {
  for (const cluster of [...liveClusters.keys()]) await cluster.destroy();
}

// ---------------------------------------------------------------- small tools

/** A TCP port free on 127.0.0.1 right now (bind to port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') return reject(new Error('no port from listen(0)'));
      server.close(() => resolve(address.port));
    });
  });
}

/** chown -R postgres:postgres */
export async function chownToPostgres(path: string): Promise<void> {
  await runCommand('chown', ['-R', `${OS_USER}:${OS_USER}`, path]);
}

interface CommandResult {
  stdout: string;
  stderr: string;
  code: number;
}

function runCommand(
  command: string,
  args: string[],
  options: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string; allowFailure?: boolean } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd ?? '/', env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const result = { stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), code: code ?? 128 };
      if (result.code !== 0 && !options.allowFailure) {
        const shown = [command, ...args].join(' ');
        reject(new Error(`${shown} exited with ${code ?? signal}: ${result.stderr.trim() || result.stdout.trim()}`));
      } else resolve(result);
    });
    child.stdin.on('error', () => {}); // the child may exit before reading all input
    child.stdin.end(options.input ?? '');
  });
}

const quoteConfValue = (value: string) => `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
export const quoteLiteral = (value: string) => `'${value.replace(/'/g, "''")}'`;

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- the cluster

export async function createCluster(options: ClusterOptions = {}): Promise<PgCluster> {
  installExitHook();
  const tmpRoot = await mkdtemp(join(tmpdir(), 'walrus-pg-'));
  await chmod(tmpRoot, 0o700);
  await chownToPostgres(tmpRoot);
  const ownsDataDirectory = options.dataDirectory === undefined;
  const dataDirectory = options.dataDirectory ?? join(tmpRoot, 'data');
  const logFile = join(tmpRoot, 'postgres.log');
  const port = await freePort();
  const settings: Record<string, string> = {
    port: String(port),
    listen_addresses: '127.0.0.1',
    unix_socket_directories: tmpRoot,
    fsync: 'off', // tests never survive an OS crash; fsync only slows them
    logging_collector: 'off',
    max_connections: '30',
    ...options.settings,
  };
  const env = { ...process.env, PGHOST: tmpRoot, PGPORT: String(port), PGUSER: DB_USER, PGDATABASE: 'postgres' };
  const asPostgres = (program: string, args: string[], o: { input?: string; allowFailure?: boolean } = {}) =>
    runCommand('runuser', ['-u', OS_USER, '--', join(PG_BIN_DIRECTORY, program), ...args], { ...o, env, cwd: tmpRoot });

  let destroyed = false;

  async function writeHarnessConf(): Promise<void> {
    const confPath = join(dataDirectory, 'postgresql.conf');
    let text = (await exists(confPath)) ? await readFile(confPath, 'utf8') : '';
    const begin = text.indexOf(CONF_BEGIN);
    if (begin >= 0) {
      const end = text.indexOf(CONF_END, begin);
      text = text.slice(0, begin) + (end >= 0 ? text.slice(end + CONF_END.length + 1) : '');
    }
    const block = [CONF_BEGIN, ...Object.entries(settings).map(([k, v]) => `${k} = ${quoteConfValue(v)}`), CONF_END, ''].join('\n');
    await writeFile(confPath, (text.length > 0 && !text.endsWith('\n') ? text + '\n' : text) + block);
    // A base backup leaves these out: a restored directory needs its own.
    const hba = join(dataDirectory, 'pg_hba.conf');
    if (!(await exists(hba))) {
      await writeFile(hba, 'local all all trust\nhost all all 127.0.0.1/32 trust\nlocal replication all trust\nhost replication all 127.0.0.1/32 trust\n');
    }
    const ident = join(dataDirectory, 'pg_ident.conf');
    if (!(await exists(ident))) await writeFile(ident, '');
  }

  async function prepareDataDirectory(): Promise<void> {
    await writeHarnessConf();
    // Restores run as root: PostgreSQL must own and be the only one to read its directory.
    await chownToPostgres(dataDirectory);
    await chmod(dataDirectory, 0o700);
  }

  async function isRunning(): Promise<boolean> {
    const result = await asPostgres('pg_ctl', ['status', '-D', dataDirectory], { allowFailure: true });
    return result.code === 0;
  }

  async function logTail(lines = 40): Promise<string> {
    try {
      return (await readFile(logFile, 'utf8')).split('\n').slice(-lines - 1).join('\n');
    } catch {
      return '(no server log)';
    }
  }

  async function query(sql: string, database = 'postgres'): Promise<string> {
    const result = await asPostgres('psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', tmpRoot, '-p', String(port), '-U', DB_USER, '-d', database, '-f', '-'], {
      input: sql,
      allowFailure: true,
    });
    if (result.code !== 0) throw new Error(`psql on port ${port} failed: ${result.stderr.trim()}\nSQL: ${sql}`);
    return result.stdout.replace(/\n$/, '');
  }

  const cluster: PgCluster = {
    dataDirectory,
    port,
    socketDirectory: tmpRoot,
    tmpRoot,
    logFile,
    binDirectory: PG_BIN_DIRECTORY,
    connection: { host: tmpRoot, port, user: DB_USER, database: 'postgres' },

    async start(startOptions: StartOptions = {}) {
      await prepareDataDirectory();
      const wait = startOptions.wait ?? true;
      const args = ['start', '-D', dataDirectory, '-l', logFile, wait ? '-w' : '-W', '-t', String(startOptions.timeoutSeconds ?? 120)];
      const result = await asPostgres('pg_ctl', args, { allowFailure: true });
      if (result.code !== 0) {
        throw new Error(`pg_ctl start failed for ${dataDirectory} (exit ${result.code}): ${result.stderr.trim()}\n--- server log ---\n${await logTail()}`);
      }
    },

    async stop(mode: StopMode = 'fast') {
      if (!(await isRunning())) return;
      await asPostgres('pg_ctl', ['stop', '-D', dataDirectory, '-m', mode, '-w', '-t', '120']);
    },

    async restart() {
      await cluster.stop('fast');
      await cluster.start();
    },

    isRunning,
    query,

    async queryRows(sql: string, database = 'postgres') {
      const result = await asPostgres(
        'psql',
        ['-X', '-q', '-A', '-t', '-F', '\x1f', '-v', 'ON_ERROR_STOP=1', '-h', tmpRoot, '-p', String(port), '-U', DB_USER, '-d', database, '-f', '-'],
        { input: sql, allowFailure: true },
      );
      if (result.code !== 0) throw new Error(`psql on port ${port} failed: ${result.stderr.trim()}\nSQL: ${sql}`);
      return result.stdout
        .split('\n')
        .filter((line) => line.length > 0)
        .map((line) => line.split('\x1f'));
    },

    async pgbench(args: string[]) {
      const result = await asPostgres('pgbench', ['-h', tmpRoot, '-p', String(port), '-U', DB_USER, ...args]);
      return result.stdout;
    },

    async waitForRecoveryEnd(timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      let lastError = '';
      while (Date.now() < deadline) {
        if (!(await isRunning())) throw new Error(`server stopped before recovery ended\n--- server log ---\n${await logTail()}`);
        try {
          if ((await query('select pg_is_in_recovery()')) === 'f') return;
        } catch (e) {
          lastError = (e as Error).message; // not accepting connections yet
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`recovery did not end within ${timeoutMs} ms${lastError ? ` (last error: ${lastError})` : ''}\n--- server log ---\n${await logTail()}`);
    },

    async writeConf(lines: Record<string, string>) {
      Object.assign(settings, lines);
      if (await exists(join(dataDirectory, 'PG_VERSION'))) {
        await writeHarnessConf();
        await chownToPostgres(join(dataDirectory, 'postgresql.conf'));
      }
    },

    async createOwnedDirectory(name: string) {
      const path = join(tmpRoot, name);
      await mkdir(path, { recursive: true, mode: 0o700 });
      await chownToPostgres(path);
      return path;
    },

    logTail,

    async destroy() {
      if (destroyed) return;
      destroyed = true;
      try {
        if (await isRunning()) await asPostgres('pg_ctl', ['stop', '-D', dataDirectory, '-m', 'immediate', '-w', '-t', '60']);
      } finally {
        liveClusters.delete(cluster);
        await rm(tmpRoot, { recursive: true, force: true });
      }
    },
  };
  liveClusters.set(cluster, { dataDirectory, tmpRoot });

  try {
    if (ownsDataDirectory) {
      if (options.skipInitdb) {
        await mkdir(dataDirectory, { mode: 0o700 });
        await chownToPostgres(dataDirectory);
      } else {
        await asPostgres('initdb', ['-D', dataDirectory, '-U', DB_USER, '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync', ...(options.initdbArgs ?? [])]);
        await writeHarnessConf();
      }
    } else if (await exists(join(dataDirectory, 'PG_VERSION'))) {
      await prepareDataDirectory();
    }
  } catch (e) {
    await cluster.destroy();
    throw e;
  }
  return cluster;
}

// ---------------------------------------------------------------- the marker table

/**
 * The fixtures' table: `marker(id, phase, note)` where note = md5(seed || id) and ids run 1, 2, 3 ...
 * across phases (checked: this reproduces both fixtures' EXPECTED.txt with seeds `dev-plain`, `dev-gpg`).
 */
export async function createMarkerTable(c: PgCluster, database = 'postgres'): Promise<void> {
  await c.query('create table if not exists marker (id bigint primary key, phase text not null, note text not null)', database);
}

/** Appends n rows of `phase`, ids continuing after the current maximum, in one transaction. */
export async function insertMarkers(c: PgCluster, phase: string, n: number, seed = 'walrus', database = 'postgres'): Promise<void> {
  await c.query(
    `insert into marker (id, phase, note)
     select g, ${quoteLiteral(phase)}, md5(${quoteLiteral(seed)} || g)
     from generate_series((select coalesce(max(id), 0) + 1 from marker), (select coalesce(max(id), 0) + ${Math.trunc(n)} from marker)) g
     order by g`,
    database,
  );
}

/** Lines `phase=count:md5(string_agg(note, ',' order by id))`, ordered by phase (as in EXPECTED.txt). */
export async function markerSummary(c: PgCluster, database = 'postgres'): Promise<string[]> {
  const out = await c.query(
    `select phase || '=' || count(*) || ':' || md5(string_agg(note, ',' order by id)) from marker group by phase order by phase collate "C"`,
    database,
  );
  return out.length === 0 ? [] : out.split('\n');
}

/** The marker-summary lines of a fixture's EXPECTED.txt (and its key=value header lines). */
export async function readExpected(path: string): Promise<{ summary: string[]; values: Record<string, string> }> {
  const lines = (await readFile(path, 'utf8')).split('\n');
  const values: Record<string, string> = {};
  const summary: string[] = [];
  let inSummary = false;
  for (const line of lines) {
    if (line.startsWith('marker table summary')) {
      inSummary = true;
      continue;
    }
    if (line.startsWith('backup-list output')) break;
    if (inSummary) {
      if (/^[^=\s]+=\d+:[0-9a-f]{32}$/.test(line)) summary.push(line);
    } else {
      const eq = line.indexOf('=');
      if (eq > 0) values[line.slice(0, eq)] = line.slice(eq + 1);
    }
  }
  return { summary, values };
}
