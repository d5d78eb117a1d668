/**
 * Every verb, declared once: its usage, help, example and options. The CLI parses with this table,
 * `--help` prints from it, and the README's verb list is written from it. A verb's code lives in
 * core/operations/<verb>.ts and is imported only when that verb runs.
 */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  description: string;
  /** Shown in help as --name VALUE */
  valueName?: string;
  multiple?: boolean;
}

export interface VerbSpec {
  name: string;
  summary: string;
  usage: string;
  description?: string;
  examples: string[];
  options?: Record<string, OptionSpec>;
  positionals: { min: number; max: number };
  /** Needs --config (and a server, unless `fleetWide`). */
  needsConfig: boolean;
  fleetWide?: boolean;
  load: () => Promise<{ run: VerbRunner }>;
}

import type { VerbContext } from './cli.js';
export type VerbRunner = (ctx: VerbContext, positionals: string[], options: Record<string, string | boolean | string[] | undefined>) => Promise<number | void>;

const JSON_OPTION: OptionSpec = { type: 'boolean', description: 'machine-readable JSON on stdout' };

export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  config: { type: 'string', short: 'c', valueName: 'FILE', description: 'fleet config (YAML); default $WALRUS_CONFIG' },
  server: { type: 'string', short: 's', valueName: 'NAME', description: 'server of the fleet; default $WALRUS_SERVER, or the only one' },
  'log-format': { type: 'string', valueName: 'text|json', description: 'log lines on stderr: WAL-E-style text (default) or JSON' },
  'log-level': { type: 'string', valueName: 'LEVEL', description: 'error, warn, info (default), debug' },
  debug: { type: 'boolean', description: 'debug logging and stack traces on errors' },
  help: { type: 'boolean', short: 'h', description: 'help for walrus or for a verb' },
  version: { type: 'boolean', description: 'print the version' },
};

export const VERBS: VerbSpec[] = [
  {
    name: 'config',
    summary: 'check a fleet config: walrus config check FILE',
    usage: 'config check [FILE]',
    description:
      'Loads and validates the fleet config (schema, references, secrets, plugin options) and prints each server\'s resolved storage, compression, encryption and schedules, never a secret. Exits 2 with one line per problem on a bad file.',
    examples: ['walrus config check configs/example-fleet.yaml', 'walrus --config fleet.yaml config check --json'],
    options: { json: JSON_OPTION },
    positionals: { min: 1, max: 2 },
    needsConfig: false,
    load: () => import('./operations/config-check.js'),
  },
  {
    name: 'wal-push',
    summary: "archive one WAL file (PostgreSQL's archive_command)",
    usage: 'wal-push WAL_PATH',
    description:
      'Compresses, encrypts and uploads one file PostgreSQL finished (segment, .history, .backup, .partial) and exits 0 only once the object is complete in storage. ' +
      'An already archived file with the same content succeeds; with different content it is refused (exit 5). With poolSize > 1, the next .ready segments are pushed in parallel ' +
      'and recorded in pg_wal/.walrus/pushed/ so that PostgreSQL\'s calls for them return at once; archive_status/ is never touched.',
    examples: ["archive_command = '/opt/walrus/bin/walrus --config /etc/walrus/fleet.yaml --server db1 wal-push %p'"],
    options: { 'pool-size': { type: 'string', valueName: 'N', description: 'segments pushed at once (default: poolSize from the config)' } },
    positionals: { min: 1, max: 1 },
    needsConfig: true,
    load: () => import('./operations/wal-push.js'),
  },
  {
    name: 'wal-fetch',
    summary: "restore one WAL file (PostgreSQL's restore_command)",
    usage: 'wal-fetch WAL_NAME DESTINATION',
    description:
      'Downloads, decrypts and decompresses one archived file to DESTINATION: written beside it, fsynced, renamed, so DESTINATION is whole or absent. ' +
      'A file that is not archived exits 1 (PostgreSQL asks for such files routinely). During archive recovery a storage, key or integrity failure exits above 125 ' +
      '(203, 204, 206) so that PostgreSQL stops instead of promoting past a hole. Starts a background prefetch of the next segments (prefetch in the config).',
    examples: ["restore_command = '/opt/walrus/bin/walrus --config /etc/walrus/fleet.yaml --server db1 wal-fetch %f %p'"],
    positionals: { min: 2, max: 2 },
    needsConfig: true,
    load: () => import('./operations/wal-fetch.js'),
  },
  {
    name: 'wal-prefetch',
    summary: 'download WAL segments ahead of recovery (started by wal-fetch; kept for WAL-E users)',
    usage: 'wal-prefetch WAL_DIRECTORY SEGMENT [--count N]',
    description: 'Downloads SEGMENT and the ones after it into WAL_DIRECTORY/.walrus/prefetch/, where wal-fetch picks them up. Stops at the first segment not archived yet.',
    examples: ['walrus --config fleet.yaml --server db1 wal-prefetch /var/lib/postgresql/15/main/pg_wal 000000010000000000000042 --count 8'],
    options: { count: { type: 'string', valueName: 'N', description: 'segments to fetch (default: prefetch from the config)' } },
    positionals: { min: 2, max: 2 },
    needsConfig: true,
    load: () => import('./operations/wal-prefetch.js'),
  },
];

export function findVerb(name: string): VerbSpec | undefined {
  return VERBS.find((v) => v.name === name);
}
