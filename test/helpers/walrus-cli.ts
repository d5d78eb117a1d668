/**
 * Run the real `bin/walrus` as a child process, the way PostgreSQL and cron run it: a fleet config
 * file on disk, a working directory, an environment, an exit code. For tests of whole verbs.
 *
 * bin/walrus runs dist/ when it exists, else the TypeScript sources through tsx. A dist/ older
 * than the sources would test old code, so the first run checks that and fails with what to do.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { nextSegmentName } from '../../core/layout.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url)).replace(/\/$/, '');
export const WALRUS_BIN = join(REPO_ROOT, 'bin', 'walrus');

export interface WalrusResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunWalrusOptions {
  /** Fleet config path: passed as `--config` before the verb. */
  config?: string;
  /** Server name: passed as `--server` before the verb. */
  server?: string;
  cwd?: string;
  /** Extra environment (merged over process.env). */
  env?: NodeJS.ProcessEnv;
  /** Kill the child after this long and reject (a hung verb is a failure, not a slow test). Default 60 s. */
  timeoutMs?: number;
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(path));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

let distChecked = false;
/** Throws when dist/ exists but is older than core/ or plugins/ sources. */
export function assertDistCurrent(): void {
  if (distChecked) return;
  const compiled = join(REPO_ROOT, 'dist', 'core', 'main.js');
  if (existsSync(compiled)) {
    const built = statSync(compiled).mtimeMs;
    const sources = Math.max(newestMtime(join(REPO_ROOT, 'core')), newestMtime(join(REPO_ROOT, 'plugins')));
    if (sources > built)
      throw new Error(`dist/ is older than the sources, so bin/walrus would run old code: run \`npx tsc -p tsconfig.build.json\` (or remove dist/) first`);
  }
  distChecked = true;
}

/** `bin/walrus [--config C] [--server S] ...args`; resolves with the exit code and both outputs. */
export function runWalrus(args: string[], options: RunWalrusOptions = {}): Promise<WalrusResult> {
  assertDistCurrent();
  const full = [...(options.config ? ['--config', options.config] : []), ...(options.server ? ['--server', options.server] : []), ...args];
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WALRUS_BIN, ...full], {
      cwd: options.cwd ?? REPO_ROOT,
      // NODE_OPTIONS of the test runner (--import tsx, --test ...) must not leak into the CLI
      env: { ...process.env, NODE_OPTIONS: '', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`walrus ${full.join(' ')} did not finish within ${timeoutMs} ms; stderr so far:\n${Buffer.concat(err).toString()}`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

/** Writes `config` (an object, serialized as YAML, or YAML text) to `path`; returns `path`. */
export async function writeFleetConfig(path: string, config: object | string, mode = 0o644): Promise<string> {
  await writeFile(path, typeof config === 'string' ? config : stringify(config), { mode });
  return path;
}

/** A file-storage fleet with one server: the common shape for CLI tests. */
export interface SimpleFleet {
  /** Storage root (the `path` of a file storage), or a whole storage block (s3 ...). */
  storage: string | Record<string, unknown>;
  dataDirectory: string;
  server?: string;
  prefix?: string;
  compression?: string;
  /** A gpg key block ({ publicKey, secretKey, passphrase, keyId }); absent: no encryption. */
  gpgKey?: Record<string, string>;
  poolSize?: number;
  prefetch?: number;
}

export function simpleFleet(f: SimpleFleet): object {
  const storage = typeof f.storage === 'string' ? { plugin: 'file', path: f.storage } : f.storage;
  return {
    version: 1,
    storages: { main: storage },
    ...(f.gpgKey ? { keys: { ops: { plugin: 'gpg', ...f.gpgKey } } } : {}),
    defaults: {
      storage: 'main',
      compression: f.compression ?? 'lzo',
      encryption: f.gpgKey ? 'ops' : 'none',
      poolSize: f.poolSize ?? 1,
      prefetch: f.prefetch ?? 0,
    },
    servers: { [f.server ?? 'db1']: { dataDirectory: f.dataDirectory, prefix: f.prefix ?? '' } },
  };
}

/**
 * archive_command as walrus writes it (export-pg): archive_command's sh front before this checkout's
 * bin/walrus (NODE_OPTIONS cleared: a test runner's tsx loader must not leak into it).
 */
export function walrusArchiveCommand(config: string, server: string): string {
  return `env NODE_OPTIONS= /bin/sh ${join(REPO_ROOT, 'bin', 'walrus-push-hit')} ${process.execPath} ${WALRUS_BIN} --config ${config} --server ${server} wal-push %p`;
}

/** A stack frame line (`    at fn (file:1:2)`): the CLI prints these only with --debug. */
export function hasStackTrace(text: string): boolean {
  return /^\s+at .+(:\d+:\d+\)?|\(native\))$/m.test(text);
}

/** The `MSG:` lines of walrus's text log, level and message: `['INFO', 'completed archiving to a file']`. */
export function logMessages(stderr: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const m of stderr.matchAll(/^walrus (\w+)\s+MSG: (.*)$/gm)) out.push([m[1], m[2]]);
  return out;
}

/** A temp directory removed by the returned cleanup (idempotent). */
export async function makeTempDirectory(label: string): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `walrus-${label}-`));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

/**
 * Pids of walrus processes (bin/walrus) whose command line contains `text`, e.g. a test's temp
 * directory: wal-fetch starts detached prefetchers that outlive it, and a test must not remove
 * their directories under them or leave them behind.
 */
export function walrusProcessesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let args: string[];
    try {
      args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // exited meanwhile
    }
    if (args.some((a) => a === WALRUS_BIN) && args.some((a) => a.includes(text))) pids.push(Number(entry));
  }
  return pids;
}

/**
 * Waits until no walrus process mentions `text`. Resolves with the pids still running at the
 * deadline after killing exactly those (SIGKILL): the caller decides whether that is a failure.
 */
export async function waitForWalrusProcesses(text: string, timeoutMs = 30_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = walrusProcessesMentioning(text);
    if (pids.length === 0) return [];
    if (Date.now() > deadline) {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      return pids;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Segment names from `first` on, `count` of them. */
export function segmentNames(first: string, count: number): string[] {
  const out = [first];
  while (out.length < count) out.push(nextSegmentName(out[out.length - 1]));
  return out;
}

/** What the sh fronts are given to wrap when a test must tell whether they fell through. */
export const FELL_THROUGH = ['/bin/echo', 'FELL-THROUGH'];

/**
 * Runs one of bin/'s sh fronts (walrus-prefetch-hit, walrus-push-hit) as PostgreSQL runs the
 * command: `/bin/sh FRONT COMMAND... ARGS...` in `cwd` (the data directory). `command` is what it
 * wraps: this checkout's bin/walrus by default, or FELL_THROUGH.
 */
export function runShFront(front: string, args: string[], cwd: string, command: string[] = [process.execPath, WALRUS_BIN], env: NodeJS.ProcessEnv = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolveRun) => {
    const child = spawn('/bin/sh', [join(REPO_ROOT, 'bin', front), ...command, ...args], { cwd, env: { PATH: process.env.PATH, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolveRun({ code, stdout, stderr }));
  });
}
