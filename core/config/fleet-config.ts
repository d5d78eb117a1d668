/**
 * The fleet config: one YAML file, parsed with `yaml`, secrets resolved, validated against
 * schemas/fleet.schema.json, references between sections checked, and each server's settings
 * merged over `defaults`. Every problem names the file, the line and the YAML path.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LineCounter, parseDocument, isMap, isSeq, isScalar, isPair, type Node } from 'yaml';
import { WalrusError } from '../errors.js';
import { compileSchema, schemaProblems } from './schema-validation.js';
import { resolveReferences } from './secrets.js';
import type { ValidateFunction } from 'ajv';

export type YamlPath = Array<string | number>;

export interface ConfigProblem {
  file: string;
  line?: number;
  path: string;
  message: string;
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}${p.line ? `:${p.line}` : ''}: ${p.path ? `${p.path}: ` : ''}${p.message}`;
}

export class ConfigError extends WalrusError {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    const first = problems[0];
    super('USAGE', problems.length === 1 ? `invalid config: ${formatProblem(first)}` : `invalid config: ${problems.length} problems, first: ${formatProblem(first)}`, {
      detail: problems.map(formatProblem).join('\n'),
    });
    this.problems = problems;
  }
}

/** A `storages.<name>` or `keys.<name>` block: which plugin, with which options. */
export interface PluginBlock {
  name: string;
  plugin: string;
  options: Record<string, unknown>;
  /** `storages.prod`: where it stands in the YAML, for error messages. */
  yamlPath: YamlPath;
}

export interface ConnectionSettings {
  host: string;
  port: number;
  user: string;
  database: string;
  password?: string;
}

export interface ServerConfig {
  name: string;
  dataDirectory: string;
  /** Storage key prefix, `''` or ending in `/` (WAL-E adds the trailing slash too). */
  prefix: string;
  connection: ConnectionSettings;
  storage: PluginBlock;
  /** Codec plugin name or spec, or `none`. */
  compression: string;
  /** Where compression was set (the server's own key or defaults'), for error messages. */
  compressionYamlPath: YamlPath;
  encryption: PluginBlock | null;
  poolSize: number;
  prefetch: number;
  /** wal-push starts a push follower for a running server's pg_wal (core/wal-push-follower.ts). */
  pushFollower: boolean;
  osUser: string;
  pgBinDirectory: string;
  logDirectory: string;
  schedule: { backup?: string; retention?: string };
  retention: { keepBackups?: number };
  status: { maxArchiveAgeMinutes?: number; maxBackupAgeHours?: number };
}

export interface FleetConfig {
  /** Absolute path of the YAML file. */
  file: string;
  directory: string;
  storages: Record<string, PluginBlock>;
  keys: Record<string, PluginBlock>;
  servers: Record<string, ServerConfig>;
  /** Resolved `${env:}`/`${file:}` values: mask them in every output. */
  secrets: string[];
  /** 1-based line of a YAML path (for problems found after load, e.g. plugin options). */
  lineOf(path: YamlPath): number | undefined;
  problem(path: YamlPath, message: string): ConfigProblem;
}

const SCHEMA_PATH = fileURLToPath(new URL('../../schemas/fleet.schema.json', import.meta.url));
let fleetValidator: ValidateFunction | undefined;
function validateFleet(): ValidateFunction {
  if (!fleetValidator) {
    // dist/core/config → ../../../schemas when running compiled; try both layouts
    let text: string;
    try {
      text = readFileSync(SCHEMA_PATH, 'utf8');
    } catch {
      text = readFileSync(fileURLToPath(new URL('../../../schemas/fleet.schema.json', import.meta.url)), 'utf8');
    }
    fleetValidator = compileSchema(JSON.parse(text));
  }
  return fleetValidator;
}

export function formatYamlPath(path: YamlPath): string {
  return path.map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? s : `.${s}`)).join('');
}

const DEFAULTS = {
  compression: 'lzo',
  encryption: 'none',
  poolSize: 4,
  prefetch: 8,
  pushFollower: true,
  osUser: 'postgres',
  pgBinDirectory: '/usr/lib/postgresql/15/bin',
  logDirectory: '/var/log/walrus',
  connection: { host: '/var/run/postgresql', port: 5432, user: 'postgres', database: 'postgres' },
};

/** Walks plain data, resolving references in every string; returns the new tree. */
function resolveTree(value: unknown, path: YamlPath, configDirectory: string, env: NodeJS.ProcessEnv, onProblem: (path: YamlPath, message: string) => void, secrets: string[]): unknown {
  if (typeof value === 'string') {
    if (!value.includes('${')) return value;
    const r = resolveReferences(value, configDirectory, env);
    for (const p of r.problems) onProblem(path, p.message);
    secrets.push(...r.secrets);
    return r.value;
  }
  if (Array.isArray(value)) return value.map((v, i) => resolveTree(v, [...path, i], configDirectory, env, onProblem, secrets));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = resolveTree(v, [...path, k], configDirectory, env, onProblem, secrets);
    return out;
  }
  return value;
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
}

export function loadFleetConfig(file: string, options: LoadOptions = {}): FleetConfig {
  const absolute = resolve(file);
  const directory = dirname(absolute);
  const env = options.env ?? process.env;
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError([{ file, path: '', message: code === 'ENOENT' ? 'config file does not exist' : `config file cannot be read (${code})` }]);
  }

  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  const lineOfOffset = (offset: number) => lineCounter.linePos(offset).line;
  const lineOf = (path: YamlPath): number | undefined => {
    // the deepest node that exists on the path; for a key, the key's own line
    for (let n = path.length; n >= 0; n--) {
      const node = n === 0 ? doc.contents : (doc.getIn(path.slice(0, n), true) as Node | undefined);
      if (n > 0) {
        const parent = n === 1 ? doc.contents : (doc.getIn(path.slice(0, n - 1), true) as Node | undefined);
        if (isMap(parent)) {
          const pair = parent.items.find((it) => isPair(it) && isScalar(it.key) && String(it.key.value) === String(path[n - 1]));
          if (pair && isScalar(pair.key) && pair.key.range) return lineOfOffset(pair.key.range[0]);
        }
      }
      if (node && (isMap(node) || isSeq(node) || isScalar(node)) && node.range) return lineOfOffset(node.range[0]);
    }
    return undefined;
  };
  const problem = (path: YamlPath, message: string): ConfigProblem => ({ file, line: lineOf(path), path: formatYamlPath(path), message });

  if (doc.errors.length) {
    throw new ConfigError(
      doc.errors.map((e) => ({ file, line: e.linePos?.[0]?.line, path: '', message: `YAML syntax error: ${e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}` })),
    );
  }
  const raw = doc.toJS({ maxAliasCount: 100 }) as unknown;
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError([{ file, line: 1, path: '', message: 'must be a mapping with version, storages and servers' }]);
  }

  const problems: ConfigProblem[] = [];
  const secrets: string[] = [];
  const data = resolveTree(raw, [], directory, env, (p, m) => problems.push(problem(p, m)), secrets) as Record<string, any>;

  for (const sp of schemaProblems(validateFleet(), data)) problems.push(problem(sp.path, sp.message));
  if (problems.length) throw new ConfigError(problems);

  const blocks = (section: 'storages' | 'keys'): Record<string, PluginBlock> =>
    Object.fromEntries(
      Object.entries((data[section] ?? {}) as Record<string, Record<string, unknown>>).map(([name, block]) => {
        const { plugin, ...rest } = block;
        return [name, { name, plugin: plugin as string, options: rest, yamlPath: [section, name] }];
      }),
    );
  const storages = blocks('storages');
  const keys = blocks('keys');
  const defaults = (data.defaults ?? {}) as Record<string, any>;

  const servers: Record<string, ServerConfig> = {};
  for (const [name, s] of Object.entries(data.servers as Record<string, Record<string, any>>)) {
    const setting = <T>(key: string, fallback: T): { value: T; path: YamlPath } =>
      s[key] !== undefined ? { value: s[key], path: ['servers', name, key] } : defaults[key] !== undefined ? { value: defaults[key], path: ['defaults', key] } : { value: fallback, path: ['servers', name] };

    const storageName = setting<string | undefined>('storage', undefined);
    let storage: PluginBlock | undefined;
    if (storageName.value === undefined) {
      const names = Object.keys(storages);
      if (names.length === 1) storage = storages[names[0]];
      else problems.push(problem(['servers', name], `no storage chosen: set storage here or in defaults (one of: ${names.join(', ')})`));
    } else if (!storages[storageName.value]) {
      problems.push(problem(storageName.path, `storage '${storageName.value}' is not defined under storages (defined: ${Object.keys(storages).join(', ')})`));
    } else storage = storages[storageName.value];

    const encryptionName = setting<string>('encryption', DEFAULTS.encryption);
    let encryption: PluginBlock | null = null;
    if (encryptionName.value !== 'none') {
      if (!keys[encryptionName.value]) {
        const defined = Object.keys(keys);
        problems.push(problem(encryptionName.path, `key '${encryptionName.value}' is not defined under keys (${defined.length ? `defined: ${defined.join(', ')}` : 'no keys defined'}; or use none)`));
      } else encryption = keys[encryptionName.value];
    }

    const compression = setting('compression', DEFAULTS.compression);
    const prefixValue = (s.prefix as string | undefined) ?? name;
    const prefix = prefixValue === '' ? '' : prefixValue.replace(/\/*$/, '/');
    servers[name] = {
      name,
      dataDirectory: resolve(directory, s.dataDirectory),
      prefix,
      connection: { ...DEFAULTS.connection, ...(s.connection ?? {}) },
      storage: storage!,
      compression: compression.value,
      compressionYamlPath: compression.path,
      encryption,
      poolSize: setting('poolSize', DEFAULTS.poolSize).value,
      prefetch: setting('prefetch', DEFAULTS.prefetch).value,
      pushFollower: setting('pushFollower', DEFAULTS.pushFollower).value,
      osUser: setting('osUser', DEFAULTS.osUser).value,
      pgBinDirectory: setting('pgBinDirectory', DEFAULTS.pgBinDirectory).value,
      logDirectory: setting('logDirectory', DEFAULTS.logDirectory).value,
      schedule: { ...(defaults.schedule ?? {}), ...(s.schedule ?? {}) },
      retention: { ...(defaults.retention ?? {}), ...(s.retention ?? {}) },
      status: { ...(defaults.status ?? {}), ...(s.status ?? {}) },
    };
  }

  // Two servers writing under the same storage and prefix would delete each other's WAL.
  const owners = new Map<string, string>();
  for (const s of Object.values(servers)) {
    if (!s.storage) continue;
    const where = `${s.storage.name}\u0000${s.prefix}`;
    const other = owners.get(where);
    if (other) problems.push(problem(['servers', s.name, 'prefix'], `same storage '${s.storage.name}' and prefix '${s.prefix}' as server ${other}: each server needs its own prefix`));
    else owners.set(where, s.name);
  }

  if (problems.length) throw new ConfigError(problems);
  return { file: absolute, directory, storages, keys, servers, secrets, lineOf, problem };
}

export function serverConfig(fleet: FleetConfig, name: string | undefined): ServerConfig {
  const names = Object.keys(fleet.servers);
  if (!name) {
    if (names.length === 1) return fleet.servers[names[0]];
    throw new WalrusError('USAGE', `which server? ${fleet.file} has ${names.length}: ${names.join(', ')}`, { hint: 'pass --server NAME or set WALRUS_SERVER' });
  }
  const s = fleet.servers[name];
  if (!s) throw new WalrusError('USAGE', `server '${name}' is not in ${fleet.file} (servers: ${names.join(', ')})`);
  return s;
}
