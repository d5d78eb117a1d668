/** `export-pg SERVER`: the postgresql.conf lines that archive a server's WAL through walrus. */
import { serverConfig } from '../config/fleet-config.js';
import { absoluteConfigPath, postgresqlConfLines } from '../pg-settings.js';
import type { VerbRunner } from '../verbs.js';

export const run: VerbRunner = async (ctx, [serverName]) => {
  const fleet = ctx.fleet();
  const server = serverConfig(fleet, serverName);
  ctx.out.write(postgresqlConfLines(absoluteConfigPath(fleet), server).join('\n') + '\n');
};
