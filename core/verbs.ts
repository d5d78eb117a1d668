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
];

export function findVerb(name: string): VerbSpec | undefined {
  return VERBS.find((v) => v.name === name);
}
