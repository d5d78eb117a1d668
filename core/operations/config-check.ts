/** `walrus config check FILE`: validate a fleet config and print what each server resolves to. */
import { usageError } from '../errors.js';
import { ConfigError, loadFleetConfig } from '../config/fleet-config.js';
import { createCodec, createPlugin, fleetPluginProblems } from '../registry.js';
import type { VerbRunner } from '../verbs.js';

export const run: VerbRunner = async (ctx, positionals) => {
  if (positionals[0] !== 'check') throw usageError(`config: unknown action '${positionals[0]}' (only: config check [FILE])`);
  const file = positionals[1] ?? ctx.configPath;
  if (!file) throw usageError('config check: which file? walrus config check FILE');
  const fleet = loadFleetConfig(file, { env: ctx.env });
  ctx.log.addSecrets(fleet.secrets);
  const problems = await fleetPluginProblems(fleet);
  if (problems.length) throw new ConfigError(problems);

  const servers = [];
  for (const s of Object.values(fleet.servers)) {
    const o = { fleet, configDirectory: fleet.directory, log: ctx.log };
    const storage = await createPlugin('storage', s.storage, o);
    const codec = await createCodec(s.compression, o, s.compressionYamlPath);
    servers.push({
      server: s.name,
      dataDirectory: s.dataDirectory,
      storage: `${s.storage.name} (${s.storage.plugin}) ${storage.describe(s.prefix)}`,
      compression: codec ? `${codec.name} (${codec.suffix})` : 'none',
      encryption: s.encryption ? `${s.encryption.name} (${s.encryption.plugin}${s.encryption.options.keyId ? ` key ${s.encryption.options.keyId}` : ''})` : 'none',
      poolSize: s.poolSize,
      prefetch: s.prefetch,
      schedule: s.schedule,
      retention: s.retention,
      connection: { host: s.connection.host, port: s.connection.port, user: s.connection.user, database: s.connection.database },
    });
    await storage.close?.();
  }
  if (ctx.json) {
    ctx.out.write(JSON.stringify({ file: fleet.file, valid: true, servers }, null, 2) + '\n');
    return;
  }
  const lines = [`${fleet.file}: valid, ${servers.length} server${servers.length === 1 ? '' : 's'}`];
  for (const s of servers) {
    lines.push(
      '',
      `${s.server}`,
      `  data directory  ${s.dataDirectory}`,
      `  connection      ${s.connection.user}@${s.connection.host}:${s.connection.port}/${s.connection.database}`,
      `  storage         ${s.storage}`,
      `  compression     ${s.compression}`,
      `  encryption      ${s.encryption}`,
      `  pool size       ${s.poolSize}, prefetch ${s.prefetch}`,
      `  backup          ${s.schedule.backup ?? '(not scheduled)'}`,
      `  retention       ${s.schedule.retention ?? '(not scheduled)'}${s.retention.keepBackups ? `, keep ${s.retention.keepBackups} backups` : ''}`,
    );
  }
  ctx.out.write(lines.join('\n') + '\n');
};

