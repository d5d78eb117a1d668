import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manifest } from '../../plugins/file/index.js';
import { silentLogger } from '../../core/log.js';
import { storageContract } from './storage.js';

storageContract('file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'walrus-file-contract-'));
  const storage = await manifest.create({ path: join(dir, 'store') }, { log: silentLogger, configDirectory: dir, instanceName: 'file' });
  return { storage, cleanup: () => rm(dir, { recursive: true, force: true }) };
});
