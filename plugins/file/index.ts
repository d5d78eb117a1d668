/**
 * `file`: the embedded default storage. Objects are plain files under `path`; keys map to
 * relative paths. A put writes a hidden temp file in the target directory, fsyncs it, renames it
 * into place and fsyncs the directory: a reader sees the whole object or nothing.
 */
import type { PluginManifest, Storage } from '../../core/types.js';

export interface FileStorageOptions {
  /** Root folder of the storage (created if missing). Relative paths are relative to the config file. */
  path: string;
  /** Call fsync on every put (default true). Off only for throwaway tests. */
  fsync?: boolean;
}

export const manifest: PluginManifest<'storage', FileStorageOptions, Storage> = {
  name: 'file',
  kind: 'storage',
  optionsSchema: {
    type: 'object',
    additionalProperties: false,
    required: ['path'],
    properties: {
      path: { type: 'string', minLength: 1, description: 'Root folder of the storage; relative to the config file.' },
      fsync: { type: 'boolean', default: true, description: 'fsync each object and its directory on put.' },
    },
  },
  async create(options, context) {
    const { FileStorage } = await import('./file-storage.js');
    return new FileStorage(options, context);
  },
};
