/**
 * The plugin registry: resolves `plugin: s3` to a built-in, `plugin: ./my-storage.js` (relative to
 * the config file) or a package name to a user plugin; checks the manifest's shape and kind, and
 * validates the options against the plugin's own schema. The core never imports a plugin by path.
 */
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ValidateFunction } from 'ajv';
import { WalrusError } from './errors.js';
import { compileSchema, schemaProblems } from './config/schema-validation.js';
import { ConfigError, formatYamlPath, type ConfigProblem, type FleetConfig, type PluginBlock, type YamlPath } from './config/fleet-config.js';
import type { Logger } from './log.js';
import type { PluginInstance, PluginKind, PluginManifest } from './types.js';

const BUILT_IN: Record<string, () => Promise<unknown>> = {
  file: () => import('../plugins/file/index.js'),
  s3: () => import('../plugins/s3/index.js'),
  lzo: () => import('../plugins/lzo/index.js'),
  lz4: () => import('../plugins/lz4/index.js'),
  zstd: () => import('../plugins/zstd/index.js'),
  gpg: () => import('../plugins/gpg/index.js'),
  postgres: () => import('../plugins/postgres/index.js'),
  'cron-export': () => import('../plugins/cron-export/index.js'),
};

export const BUILT_IN_PLUGINS = Object.keys(BUILT_IN);
const KINDS: PluginKind[] = ['storage', 'codec', 'cipher', 'source', 'exporter'];


function brokenPlugin(where: string, message: string, hint?: string): WalrusError {
  return new WalrusError('USAGE', `plugin ${where}: ${message}`, { hint });
}

function checkManifest(value: unknown, where: string): PluginManifest {
  const hint = 'a plugin module exports `manifest = { name, kind, optionsSchema, create(options, context) }` (see README: writing a storage plugin)';
  if (!value || typeof value !== 'object') throw brokenPlugin(where, 'does not export a manifest', hint);
  const m = value as Record<string, unknown>;
  if (typeof m.name !== 'string' || !m.name) throw brokenPlugin(where, 'manifest has no name', hint);
  if (!KINDS.includes(m.kind as PluginKind)) throw brokenPlugin(where, `manifest kind '${String(m.kind)}' is not one of ${KINDS.join(', ')}`, hint);
  if (!m.optionsSchema || typeof m.optionsSchema !== 'object') throw brokenPlugin(where, 'manifest has no optionsSchema (a JSON Schema object)', hint);
  if (typeof m.create !== 'function') throw brokenPlugin(where, 'manifest has no create(options, context) function', hint);
  return m as unknown as PluginManifest;
}

const manifestCache = new Map<string, Promise<PluginManifest>>();

/** Load a plugin's manifest. `where` names it in errors (`storages.prod.plugin (./x.js)`). */
export function loadManifest(spec: string, configDirectory: string, where = spec): Promise<PluginManifest> {
  const cacheKey = `${configDirectory}\u0000${spec}`;
  let loading = manifestCache.get(cacheKey);
  if (!loading) {
    loading = (async () => {
      let module: any;
      const builtIn = BUILT_IN[spec];
      if (builtIn) module = await builtIn();
      else {
        let url: string;
        if (spec.startsWith('.') || isAbsolute(spec)) url = pathToFileURL(resolve(configDirectory, spec)).href;
        else {
          try {
            url = pathToFileURL(createRequire(join(configDirectory, 'walrus-config.js')).resolve(spec)).href;
          } catch {
            throw brokenPlugin(where, `unknown plugin '${spec}': not built in (${BUILT_IN_PLUGINS.join(', ')}) and no such package or file`, 'a path must start with ./ or / and is relative to the config file');
          }
        }
        try {
          module = await import(url);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ERR_MODULE_NOT_FOUND' && String((e as Error).message).includes(resolve(configDirectory, spec)))
            throw brokenPlugin(where, `file ${resolve(configDirectory, spec)} does not exist`);
          throw brokenPlugin(where, `failed to load: ${(e as Error).message.split('\n')[0]}`);
        }
      }
      return checkManifest(module.manifest ?? module.default?.manifest ?? module.default, where);
    })();
    manifestCache.set(cacheKey, loading);
    loading.catch(() => manifestCache.delete(cacheKey));
  }
  return loading;
}

const validators = new WeakMap<object, ValidateFunction>();

/** Problems with a plugin block's options, as config problems (file, line, path). */
export function pluginOptionProblems(fleet: FleetConfig | undefined, manifest: PluginManifest, options: Record<string, unknown>, yamlPath: YamlPath) {
  let validate = validators.get(manifest.optionsSchema);
  if (!validate) {
    try {
      validate = compileSchema(manifest.optionsSchema);
    } catch (e) {
      throw brokenPlugin(manifest.name, `optionsSchema is not a valid JSON Schema: ${(e as Error).message}`);
    }
    validators.set(manifest.optionsSchema, validate);
  }
  return schemaProblems(validate, options).map((p) => {
    const path = [...yamlPath, ...p.path];
    return fleet ? fleet.problem(path, p.message) : { file: '(options)', path: formatYamlPath(path), message: p.message };
  });
}

export interface CreateOptions {
  fleet?: FleetConfig;
  configDirectory: string;
  log: Logger;
}

/** Resolve, check and instantiate one plugin block of the expected kind. */
export async function createPlugin<K extends PluginKind>(kind: K, block: PluginBlock, o: CreateOptions): Promise<PluginInstance<K>> {
  const where = `${formatYamlPath([...block.yamlPath, 'plugin'])} (${block.plugin})`;
  let manifest: PluginManifest;
  try {
    manifest = await loadManifest(block.plugin, o.configDirectory, where);
  } catch (e) {
    if (o.fleet && e instanceof WalrusError) throw new ConfigError([o.fleet.problem([...block.yamlPath, 'plugin'], e.message.replace(/^plugin [^:]+: /, ''))]);
    throw e;
  }
  if (manifest.kind !== kind) {
    const message = `plugin '${block.plugin}' is a ${manifest.kind} plugin; a ${kind} plugin is needed here`;
    if (o.fleet) throw new ConfigError([o.fleet.problem([...block.yamlPath, 'plugin'], message)]);
    throw brokenPlugin(where, message);
  }
  const problems = pluginOptionProblems(o.fleet, manifest, block.options, block.yamlPath);
  if (problems.length) throw new ConfigError(problems);
  return (await manifest.create(block.options, { log: o.log, configDirectory: o.configDirectory, instanceName: block.name })) as PluginInstance<K>;
}

/** A codec by name: `lzo`, `lz4`, `zstd`, `none` (null), or a user plugin. `yamlPath` is where the name was set. */
export async function createCodec(spec: string, o: CreateOptions, yamlPath: YamlPath) {
  if (spec === 'none') return null;
  const fail = (message: string) => (o.fleet ? new ConfigError([o.fleet.problem(yamlPath, message)]) : brokenPlugin(spec, message));
  let manifest: PluginManifest;
  try {
    manifest = await loadManifest(spec, o.configDirectory, `${formatYamlPath(yamlPath)} (${spec})`);
  } catch (e) {
    throw e instanceof WalrusError ? fail(e.message.replace(/^plugin [^:]+: /, '')) : e;
  }
  if (manifest.kind !== 'codec') throw fail(`plugin '${spec}' is a ${manifest.kind} plugin; compression needs a codec plugin (lzo, lz4, zstd, none)`);
  return (await manifest.create({}, { log: o.log, configDirectory: o.configDirectory, instanceName: spec })) as PluginInstance<'codec'>;
}

/** Every plugin block's manifest, kind and options, and every server's codec: all problems at once. */
export async function fleetPluginProblems(fleet: FleetConfig): Promise<ConfigProblem[]> {
  const problems: ConfigProblem[] = [];
  const blocks = [
    ...Object.values(fleet.storages).map((b) => ({ b, kind: 'storage' as const })),
    ...Object.values(fleet.keys).map((b) => ({ b, kind: 'cipher' as const })),
  ];
  for (const { b, kind } of blocks) {
    try {
      const manifest = await loadManifest(b.plugin, fleet.directory, b.plugin);
      if (manifest.kind !== kind) problems.push(fleet.problem([...b.yamlPath, 'plugin'], `plugin '${b.plugin}' is a ${manifest.kind} plugin; a ${kind} plugin is needed here`));
      else problems.push(...pluginOptionProblems(fleet, manifest, b.options, b.yamlPath));
    } catch (e) {
      problems.push(fleet.problem([...b.yamlPath, 'plugin'], (e as Error).message.replace(/^plugin [^:]+: /, '')));
    }
  }
  const codecs = new Map<string, { spec: string; path: YamlPath }>();
  for (const server of Object.values(fleet.servers))
    if (server.compression !== 'none') codecs.set(formatYamlPath(server.compressionYamlPath), { spec: server.compression, path: server.compressionYamlPath });
  for (const { spec, path } of codecs.values()) {
    try {
      const manifest = await loadManifest(spec, fleet.directory, spec);
      if (manifest.kind !== 'codec') problems.push(fleet.problem(path, `plugin '${spec}' is a ${manifest.kind} plugin; compression needs a codec plugin (lzo, lz4, zstd, none)`));
    } catch (e) {
      problems.push(fleet.problem(path, (e as Error).message.replace(/^plugin [^:]+: /, '')));
    }
  }
  return problems;
}
