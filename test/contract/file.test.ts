import { it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
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

it('file storage: delete leaves no empty folders behind (they would look like leftovers)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'walrus-file-rmdir-'));
  try {
    const storage = await manifest.create({ path: join(dir, 'store') }, { log: silentLogger, configDirectory: dir, instanceName: 'file' });
    await storage.put('db1/basebackups_005/base_X/tar_partitions/part_0.tar.lzo', Readable.from([Buffer.from('x')]));
    await storage.put('db1/wal_005/keep.lzo', Readable.from([Buffer.from('y')]));
    await storage.delete(['db1/basebackups_005/base_X/tar_partitions/part_0.tar.lzo']);
    assert.deepEqual(await readdir(join(dir, 'store', 'db1')), ['wal_005']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
