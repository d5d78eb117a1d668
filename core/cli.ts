/**
 * The command line: parses, loads the config, dispatches to core/operations/<verb>.ts, and maps
 * every failure to one exit code from core/errors.ts. It does nothing else.
 */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { EXIT, WalrusError, usageError } from './errors.js';
import { createLogger, type LogFormat, type Logger, type LogLevel } from './log.js';
import { GLOBAL_OPTIONS, VERBS, findVerb, type OptionSpec, type VerbSpec } from './verbs.js';
import type { FleetConfig, ServerConfig } from './config/fleet-config.js';
import type { ServerRuntime } from './runtime.js';

export interface VerbContext {
  log: Logger;
  /** stdout: the verb's output (lists, JSON). Logs go to stderr. */
  out: NodeJS.WritableStream;
  json: boolean;
  debug: boolean;
  configPath?: string;
  serverName?: string;
  /** Load the fleet config (cached). */
  fleet(): FleetConfig;
  /** The selected server's config. */
  server(): ServerConfig;
  /** Storage, codec and cipher for the selected server (cached; closed at exit). */
  runtime(server?: ServerConfig): Promise<ServerRuntime>;
  env: NodeJS.ProcessEnv;
}

function version(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      return JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')).version;
    } catch {
      /* try the other layout (dist/) */
    }
  }
  return 'unknown';
}

function optionLines(options: Record<string, OptionSpec>): string[] {
  return Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` ${o.valueName ?? 'VALUE'}` : ''}`;
    return `  ${flag.padEnd(30)} ${o.description}`;
  });
}

export function generalHelp(): string {
  return [
    'walrus — PostgreSQL continuous archiving, base backups and point-in-time restore (WAL-E compatible)',
    '',
    'usage: walrus [--config FILE] [--server NAME] VERB [ARGS] [OPTIONS]',
    '',
    'verbs:',
    ...VERBS.map((v) => `  ${v.name.padEnd(14)} ${v.summary}`),
    '',
    'options:',
    ...optionLines(GLOBAL_OPTIONS),
    '',
    'walrus VERB --help shows a verb\'s arguments and an example. Exit codes: see README "Exit codes".',
  ].join('\n');
}

export function verbHelp(v: VerbSpec): string {
  return [
    `usage: walrus [--config FILE] [--server NAME] ${v.usage}`,
    '',
    v.summary,
    ...(v.description ? ['', v.description] : []),
    ...(v.options && Object.keys(v.options).length ? ['', 'options:', ...optionLines(v.options)] : []),
    '',
    'global options:',
    ...optionLines(GLOBAL_OPTIONS),
    '',
    'examples:',
    ...v.examples.map((e) => `  ${e}`),
  ].join('\n');
}

function toParseArgsOptions(options: Record<string, OptionSpec>) {
  return Object.fromEntries(Object.entries(options).map(([k, o]) => [k, { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) }])) as any;
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  let log: Logger = createLogger({ level: 'info' });
  let debug = false;
  const runtimes = new Map<string, Promise<ServerRuntime>>();
  try {
    // First pass: global options only, to find the verb.
    const first = parseArgs({ args: argv, options: toParseArgsOptions(GLOBAL_OPTIONS), allowPositionals: true, strict: false, tokens: true });
    const verbName = first.positionals[0];
    const g = first.values as Record<string, any>;
    debug = !!g.debug;
    const level = (g['log-level'] ?? env.WALRUS_LOG_LEVEL ?? (debug ? 'debug' : 'info')) as LogLevel;
    const format = (g['log-format'] ?? env.WALRUS_LOG_FORMAT ?? 'text') as LogFormat;
    if (!['error', 'warn', 'info', 'debug'].includes(level)) throw usageError(`--log-level must be error, warn, info or debug (got '${level}')`);
    if (!['text', 'json'].includes(format)) throw usageError(`--log-format must be text or json (got '${format}')`);
    log = createLogger({ level, format });

    if (g.version) {
      out.write(`walrus ${version()}\n`);
      return EXIT.OK;
    }
    if (!verbName) {
      out.write(generalHelp() + '\n');
      return g.help ? EXIT.OK : EXIT.USAGE;
    }
    const verb = findVerb(verbName);
    if (!verb) throw usageError(`unknown verb '${verbName}'`, { hint: `verbs: ${VERBS.map((v) => v.name).join(', ')}; walrus --help` });
    if (g.help) {
      out.write(verbHelp(verb) + '\n');
      return EXIT.OK;
    }

    let parsed;
    try {
      parsed = parseArgs({ args: argv, options: toParseArgsOptions({ ...GLOBAL_OPTIONS, ...(verb.options ?? {}) }), allowPositionals: true, strict: true });
    } catch (e) {
      throw usageError(`${verb.name}: ${(e as Error).message}`, { hint: `walrus ${verb.name} --help` });
    }
    const positionals = parsed.positionals.slice(1);
    if (positionals.length < verb.positionals.min || positionals.length > verb.positionals.max)
      throw usageError(`${verb.name}: expected ${verb.usage.replace(/^\S+\s*/, '') || 'no arguments'}, got ${positionals.length} argument${positionals.length === 1 ? '' : 's'}`, {
        hint: `walrus ${verb.name} --help`,
      });
    const values = parsed.values as Record<string, any>;
    const configPath: string | undefined = values.config ?? env.WALRUS_CONFIG;
    const serverName: string | undefined = values.server ?? env.WALRUS_SERVER;
    if (verb.needsConfig && !configPath) throw usageError(`${verb.name} needs a fleet config: --config FILE or WALRUS_CONFIG`);

    let fleetCache: FleetConfig | undefined;
    const { loadFleetConfig, serverConfig } = verb.needsConfig || configPath ? await import('./config/fleet-config.js') : ({} as any);
    const ctx: VerbContext = {
      log,
      out,
      json: !!values.json,
      debug,
      configPath,
      serverName,
      env,
      fleet() {
        if (!fleetCache) {
          if (!configPath) throw usageError('no fleet config: --config FILE or WALRUS_CONFIG');
          fleetCache = loadFleetConfig(configPath, { env }) as FleetConfig;
          log.addSecrets(fleetCache.secrets);
        }
        return fleetCache;
      },
      server() {
        return serverConfig(ctx.fleet(), serverName);
      },
      runtime(server) {
        const s = server ?? ctx.server();
        let r = runtimes.get(s.name);
        if (!r) {
          r = import('./runtime.js').then((m) => m.openServerRuntime(ctx.fleet(), s, log));
          runtimes.set(s.name, r);
        }
        return r;
      },
    };
    const { run } = await verb.load();
    const code = await run(ctx, positionals, values);
    return code ?? EXIT.OK;
  } catch (e) {
    return reportFailure(e, log, debug);
  } finally {
    for (const r of runtimes.values()) await r.then((rt) => rt.close()).catch(() => {});
    await log.flush();
  }
}

export function reportFailure(e: unknown, log: Logger, debug: boolean): number {
  if (e instanceof WalrusError) {
    log.error(e.message, { detail: debug && e.stack ? [e.detail, e.stack].filter(Boolean).join('\n') : e.detail, hint: e.hint });
    return e.exitCode;
  }
  const err = e as Error;
  log.error(`unexpected error: ${err?.message ?? String(e)}`, { detail: debug ? err?.stack : undefined, hint: debug ? undefined : 'run again with --debug for the stack trace; please report it' });
  return EXIT.INTERNAL;
}
