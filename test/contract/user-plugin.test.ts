import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPlugin } from '../../core/registry.js';
import { silentLogger } from '../../core/log.js';
import { storageContract } from './storage.js';

// Loaded from a path through the registry, exactly as `plugin: ./flat-dir-storage.js` in a config.
const pluginDirectory = fileURLToPath(new URL('../fixtures/user-storage-plugin/', import.meta.url));

storageContract('user plugin ./flat-dir-storage.js', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'walrus-user-plugin-'));
  const storage = await createPlugin(
    'storage',
    { name: 'mine', plugin: './flat-dir-storage.js', options: { folder: join(dir, 'objects') }, yamlPath: ['storages', 'mine'] },
    { configDirectory: pluginDirectory, log: silentLogger },
  );
  return { storage, cleanup: () => rm(dir, { recursive: true, force: true }) };
});
