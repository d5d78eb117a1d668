/**
 * How PostgreSQL, cron and systemd call walrus: absolute paths only (none of them has our PATH or
 * working directory), each argument shell-quoted, and the postgresql.conf lines that carry
 * archive_command / restore_command. `export-pg`, `export-cron` and `restore` build their command
 * lines here so that the quoting is written, and tested, once.
 */
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WalrusError } from './errors.js';
import type { FleetConfig, ServerConfig } from './config/fleet-config.js';

/** The program and script that start walrus: `node` by absolute path, then bin/walrus. */
export interface WalrusInvocation {
  /** Absolute path of the node binary (cron's and PostgreSQL's PATH may not hold it). */
  node: string;
  /** Absolute path of bin/walrus in this installation. */
  script: string;
}

/**
 * This installation's bin/walrus, found from this module's own location: `core/` when run from
 * sources, `dist/core/` when compiled.
 */
export function walrusScriptPath(): string {
  for (const relative of ['../bin/walrus', '../../bin/walrus']) {
    const candidate = fileURLToPath(new URL(relative, import.meta.url));
    if (existsSync(candidate)) return candidate;
  }
  throw new WalrusError('INTERNAL', `bin/walrus not found beside ${fileURLToPath(import.meta.url)}`, { hint: 'reinstall walrus: the package is incomplete' });
}

export function currentInvocation(): WalrusInvocation {
  // Running the script through node by absolute path skips `#!/usr/bin/env node`, which needs node on PATH.
  return { node: process.execPath, script: walrusScriptPath() };
}

/**
 * POSIX sh quoting: words of safe characters stay bare (readable output), anything else goes in
 * single quotes, where nothing is special except the quote itself (written '\'').
 */
export function shellQuote(word: string): string {
  if (word !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * PostgreSQL expands %p, %f, %r and %% in archive_command/restore_command; a literal % in a path
 * must be written %% so that a path like `/srv/100%/walrus` is not read as a placeholder.
 */
export function escapePercentForPostgres(text: string): string {
  return text.replace(/%/g, '%%');
}

/**
 * A postgresql.conf string value: single quotes, a quote doubled, and backslash escapes as the
 * conf parser reads them (it decodes \\, \n, \r, \t like an E'' literal, and a raw newline ends the
 * line).
 */
export function quoteConfString(value: string): string {
  const escaped = value.replace(/\\/g, '\\\\').replace(/'/g, "''").replace(/\n/g, '\\n').replace(/\r/g, '\\r');
  return `'${escaped}'`;
}

/** The config file as cron and PostgreSQL must name it: absolute. */
export function absoluteConfigPath(fleet: FleetConfig): string {
  return resolve(fleet.file);
}

/** A directory from the config, absolute (relative ones are relative to the config file). */
export function absoluteConfigDirectory(fleet: FleetConfig, directory: string): string {
  return isAbsolute(directory) ? directory : resolve(fleet.directory, directory);
}

/**
 * The argument vector of a walrus command for one server, unquoted:
 * `[node, bin/walrus, --config, FILE, --server, NAME, ...verbArgs]`.
 */
export function walrusArgv(configPath: string, serverName: string, verbArgs: string[], invocation: WalrusInvocation = currentInvocation()): string[] {
  return [invocation.node, invocation.script, '--config', configPath, '--server', serverName, ...verbArgs];
}


/**
 * A shell command with PostgreSQL placeholders appended: every word of ours is shell-quoted and
 * has its % doubled; the placeholders stay bare, as PostgreSQL substitutes them with a segment
 * name (hex digits) and a path relative to the data directory (`pg_wal/<name>`): nothing to quote.
 */
function postgresCommand(configPath: string, server: ServerConfig, verb: string, placeholders: string[], invocation?: WalrusInvocation): string {
  const words = walrusArgv(configPath, server.name, [verb], invocation).map((w) => escapePercentForPostgres(shellQuote(w)));
  return [...words, ...placeholders].join(' ');
}

/**
 * archive_command for a server: `/bin/sh bin/walrus-push-hit node bin/walrus --config FILE
 * --server NAME wal-push %p`. The sh front answers for a segment an earlier wal-push already
 * pushed ahead without starting node, and otherwise runs the walrus command.
 */
export function archiveCommandFor(configPath: string, server: ServerConfig, invocation: WalrusInvocation = currentInvocation()): string {
  return [...shFront(PUSH_HIT_FRONT, invocation), postgresCommand(configPath, server, 'wal-push', ['%p'], invocation)].join(' ');
}

function shFront(script: string, invocation: WalrusInvocation): string[] {
  return ['/bin/sh', join(dirname(invocation.script), script)].map((w) => escapePercentForPostgres(shellQuote(w)));
}

/**
 * restore_command for a server: `/bin/sh bin/walrus-prefetch-hit node bin/walrus --config FILE
 * --server NAME wal-fetch %f %p`. The sh front moves a segment the follower prefetched into place
 * without starting node (recovery waits for every call) and otherwise runs the walrus command.
 */
export function restoreCommandFor(configPath: string, server: ServerConfig, invocation: WalrusInvocation = currentInvocation()): string {
  return [...shFront(PREFETCH_HIT_FRONT, invocation), postgresCommand(configPath, server, 'wal-fetch', ['%f', '%p'], invocation)].join(' ');
}

/** bin/walrus-prefetch-hit: restore_command's sh front (see the script). */
export const PREFETCH_HIT_FRONT = 'walrus-prefetch-hit';
/** bin/walrus-push-hit: archive_command's sh front (see the script). */
export const PUSH_HIT_FRONT = 'walrus-push-hit';

export interface PostgresqlConfOptions {
  invocation?: WalrusInvocation;
  /** archive_timeout in seconds (default 60; 0 leaves it out). */
  archiveTimeoutSeconds?: number;
}

/** The postgresql.conf lines (with comments) that make PostgreSQL archive to, and restore from, walrus. */
export function postgresqlConfLines(configPath: string, server: ServerConfig, options: PostgresqlConfOptions = {}): string[] {
  const timeout = options.archiveTimeoutSeconds ?? 60;
  const lines = [
    `# walrus: WAL archiving for server '${server.name}' of ${configPath.replace(/[\r\n]/g, '?')}`,
    `# (generated by walrus export-pg; PostgreSQL runs these commands as its own OS user, '${server.osUser}', who must be able to read the config)`,
    'wal_level = replica',
    'archive_mode = on',
    `archive_command = ${quoteConfString(archiveCommandFor(configPath, server, options.invocation))}`,
    '# read only during archive recovery (a restore or a standby); a running primary ignores it',
    `restore_command = ${quoteConfString(restoreCommandFor(configPath, server, options.invocation))}`,
  ];
  if (timeout > 0) {
    lines.push(
      '# Suggested: switch segments at least this often when there is activity, so that the archive is at',
      '# most about a minute behind (WAL not yet archived is lost with the machine). Each forced switch',
      '# archives a whole 16 MB segment; compressed, the unused part costs almost nothing.',
      `archive_timeout = ${timeout}`,
    );
  }
  return lines;
}
