/**
 * The `postgres` source plugin: a held connection that starts and stops a non-exclusive base
 * backup, and the WAL-E-compatible listing of the data directory. `pg` loads only on connect.
 */
import type { PluginManifest } from '../../core/types.js';
import type { BackupSource } from '../../core/types.js';
import { connectSource, type PostgresConnection } from './source.js';

export { connectSource, describeConnection, stopSegmentOf, type PostgresConnection } from './source.js';
export { listDataFiles, readTablespaces } from './data-files.js';
export { offlineIdentity, parseControlData, type OfflineIdentity } from './controldata.js';

export interface PostgresSourceOptions {
  /** Normally the server config's `connection`, passed in by the core. */
  connection?: PostgresConnection;
}

export const manifest: PluginManifest<'source', PostgresSourceOptions, Promise<BackupSource>> = {
  name: 'postgres',
  kind: 'source',
  optionsSchema: {
    type: 'object',
    additionalProperties: false,
    properties: {
      connection: {
        type: 'object',
        additionalProperties: false,
        properties: {
          host: { type: 'string', minLength: 1, description: 'host name, IP, or unix-socket directory' },
          port: { type: 'integer', minimum: 1, maximum: 65535 },
          user: { type: 'string', minLength: 1 },
          database: { type: 'string', minLength: 1 },
          password: { type: 'string' },
        },
      },
    },
  },
  create(options, context) {
    return connectSource(options.connection ?? {}, context.log);
  },
};
