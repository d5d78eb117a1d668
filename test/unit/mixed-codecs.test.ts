/**
 * An archive whose compression was changed keeps objects of both codecs, and every one must stay
 * readable: objects are read with the codec their name says (.lzo, .lz4, .zst, none), not with
 * the server's current compression. Through the real bin/walrus on file storage.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { nextSegmentName } from '../../core/layout.js';
import { makeTempDirectory, runWalrus, simpleFleet, writeFleetConfig } from '../helpers/walrus-cli.js';

let temp: { path: string; cleanup: () => Promise<void> };
before(async () => {
  temp = await makeTempDirectory('mixed-codecs');
});
after(() => temp?.cleanup());

/** A 16 MiB segment of WAL-like content: compressible but not trivial (verify checks the size). */
function segmentContent(): Buffer {
  const page = randomBytes(512);
  const out = Buffer.alloc(16 * 1024 * 1024);
  for (let at = 0; at < out.length; at += 8192) page.copy(out, at, 0, Math.min(512, out.length - at));
  return out;
}

test('segments pushed with lzo, lz4, zstd and none are all fetched and verified after the compression changed', async () => {
  const dataDirectory = join(temp.path, 'data');
  const pgWal = join(dataDirectory, 'pg_wal');
  await mkdir(join(pgWal, 'archive_status'), { recursive: true });
  const store = join(temp.path, 'store');
  const configFor = (compression: string) => writeFleetConfig(join(temp.path, `${compression}.yaml`), simpleFleet({ storage: store, dataDirectory, prefix: 'db1', compression }));
  const codecs = ['lzo', 'lz4', 'zstd', 'none'];
  const contents = new Map<string, Buffer>();
  let name = '000000010000000000000001';
  for (const compression of codecs) {
    const config = await configFor(compression);
    const content = segmentContent();
    await writeFile(join(pgWal, name), content);
    const pushed = await runWalrus(['wal-push', `pg_wal/${name}`], { config, server: 'db1', cwd: dataDirectory });
    assert.equal(pushed.code, 0, pushed.stderr);
    contents.set(name, content);
    name = nextSegmentName(name);
  }
  const stored = (await readdir(join(store, 'db1', 'wal_005'))).sort();
  assert.deepEqual(stored, ['000000010000000000000001.lzo', '000000010000000000000002.lz4', '000000010000000000000003.zst', '000000010000000000000004']);

  // Whatever the compression is now, every segment comes back byte for byte.
  for (const compression of codecs) {
    const config = await configFor(compression);
    for (const [segment, content] of contents) {
      const fetched = await runWalrus(['wal-fetch', segment, 'pg_wal/RECOVERYXLOG'], { config, server: 'db1', cwd: dataDirectory });
      assert.equal(fetched.code, 0, `${compression}: ${segment}: ${fetched.stderr}`);
      assert.deepEqual(await readFile(join(pgWal, 'RECOVERYXLOG')), content, `${compression}: ${segment}`);
    }
    const missing = await runWalrus(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { config, server: 'db1', cwd: dataDirectory });
    assert.equal(missing.code, 1, `a segment under no suffix is not found: ${missing.stderr}`);
  }

  const verified = await runWalrus(['verify', '--json'], { config: await configFor('lz4'), server: 'db1', cwd: dataDirectory });
  assert.equal(verified.code, 0, verified.stderr + verified.stdout);
});
