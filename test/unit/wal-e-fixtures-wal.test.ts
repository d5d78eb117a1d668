/**
 * WAL-E interoperability of WAL objects, both ways, through the real bin/walrus:
 * - walrus wal-fetch of every segment WAL-E archived (plain and GnuPG) gives WAL-E's bytes;
 * - WAL objects walrus writes decode with the real `lzop -d` and `gpg -d | lzop -d`.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createGnupgHome, type GnupgHome } from '../helpers/gnupg.js';
import { hasStackTrace, makeTempDirectory, runWalrus, simpleFleet, writeFleetConfig } from '../helpers/walrus-cli.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const FIXTURES = SHARED_FIXTURES;
const SEGMENT_SIZE = 16 * 1024 * 1024;

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function expectedSegments(fixture: string): Promise<Array<{ name: string; sha256: string }>> {
  const text = await readFile(join(FIXTURES, fixture, 'segments.sha256'), 'utf8');
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      const [sha256, name] = l.trim().split(/\s+/);
      return { name, sha256 };
    });
}

/** The fixture's GnuPG key as a `keys.<name>` block, read through ${file:} like a real config. */
function fixtureGpgKey(): Record<string, string> {
  const dir = join(FIXTURES, 'wal-e-gpg');
  return {
    publicKey: `\${file:${dir}/public-key.asc}`,
    secretKey: `\${file:${dir}/secret-key.asc}`,
    passphrase: `\${file:${dir}/passphrase.txt}`,
  };
}

/** Runs `command args` with stdin from `inputPath`; resolves with the SHA-256 and length of stdout. */
function digestOfCommand(command: string, args: string[], env: NodeJS.ProcessEnv, inputPath?: string): Promise<{ sha256: string; bytes: number; code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: [inputPath ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    const hash = createHash('sha256');
    let bytes = 0;
    let stderr = '';
    child.stdout!.on('data', (b: Buffer) => {
      hash.update(b);
      bytes += b.length;
    });
    child.stderr!.on('data', (b) => (stderr += b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ sha256: hash.digest('hex'), bytes, code: code ?? -1, stderr }));
    if (inputPath && child.stdin) {
      child.stdin.on('error', () => {});
      createReadStream(inputPath).pipe(child.stdin);
    }
  });
}

/** A 16 MiB "segment" that compresses somewhat, like real WAL: random runs between zero runs. */
function segmentLikeBytes(): Buffer {
  const b = Buffer.alloc(SEGMENT_SIZE);
  for (let at = 0; at < b.length; at += 64 * 1024) randomBytes(16 * 1024).copy(b, at);
  return b;
}

let temp: { path: string; cleanup: () => Promise<void> };
let gnupg: GnupgHome;

before(async () => {
  temp = await makeTempDirectory('wal-fixtures');
  gnupg = await createGnupgHome();
});
after(async () => {
  await gnupg?.cleanup();
  await temp?.cleanup();
});

for (const fixture of ['wal-e-plain', 'wal-e-gpg']) {
  describe(`walrus wal-fetch of WAL-E's ${fixture} archive`, () => {
    test('every segment restores to the bytes WAL-E returned (segments.sha256)', async () => {
      const work = join(temp.path, fixture);
      const pgWal = join(work, 'data', 'pg_wal');
      await mkdir(pgWal, { recursive: true });
      // The store folder is the prefix root: store/wal_005/<segment>.lzo. Read in place (read-only).
      const config = await writeFleetConfig(
        join(work, 'fleet.yaml'),
        simpleFleet({ storage: join(FIXTURES, fixture, 'store'), dataDirectory: join(work, 'data'), prefix: '', gpgKey: fixture === 'wal-e-gpg' ? fixtureGpgKey() : undefined }),
      );
      const segments = await expectedSegments(fixture);
      assert.ok(segments.length >= 4, 'the fixture lists its segments');
      for (const { name, sha256 } of segments) {
        const r = await runWalrus(['wal-fetch', name, 'pg_wal/' + name], { config, server: 'db1', cwd: join(work, 'data') });
        assert.equal(r.code, 0, `wal-fetch ${name}: ${r.stderr}`);
        assert.match(r.stderr, /completed download of a WAL file/);
        assert.equal(await sha256File(join(pgWal, name)), sha256, `${name} differs from what WAL-E's wal-fetch returned`);
      }
      // nothing but the restored segments: no temp files, no prefetch folder (prefetch 0)
      assert.deepEqual((await readdir(pgWal)).sort(), segments.map((s) => s.name).sort());
    });
  });
}

describe('WAL objects walrus writes, read back with the real lzop and gpg', () => {
  test('lzo: `lzop -d` restores the segment', async () => {
    const work = join(temp.path, 'push-lzo');
    const pgWal = join(work, 'data', 'pg_wal');
    await mkdir(pgWal, { recursive: true });
    const name = '00000001000000000000002A';
    const content = segmentLikeBytes();
    await writeFile(join(pgWal, name), content);
    const config = await writeFleetConfig(join(work, 'fleet.yaml'), simpleFleet({ storage: join(work, 'store'), dataDirectory: join(work, 'data'), prefix: 'db1' }));
    const r = await runWalrus(['wal-push', `pg_wal/${name}`], { config, server: 'db1', cwd: join(work, 'data') });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /completed archiving to a file/);
    const object = join(work, 'store', 'db1', 'wal_005', `${name}.lzo`);
    const decoded = await digestOfCommand('lzop', ['-d', '-c'], process.env, object);
    assert.equal(decoded.code, 0, decoded.stderr);
    assert.equal(decoded.bytes, SEGMENT_SIZE);
    assert.equal(decoded.sha256, createHash('sha256').update(content).digest('hex'));
    // lzop's own integrity test passes too (checksums of every block)
    const tested = await digestOfCommand('lzop', ['-t', object], process.env);
    assert.equal(tested.code, 0, tested.stderr);
  });

  test('lzo + gpg: `gpg -d | lzop -d` restores the segment (fixture key in a temp GNUPGHOME)', async () => {
    const work = join(temp.path, 'push-gpg');
    const pgWal = join(work, 'data', 'pg_wal');
    await mkdir(pgWal, { recursive: true });
    const name = '00000001000000000000002B';
    const content = segmentLikeBytes();
    await writeFile(join(pgWal, name), content);
    const config = await writeFleetConfig(
      join(work, 'fleet.yaml'),
      simpleFleet({ storage: join(work, 'store'), dataDirectory: join(work, 'data'), prefix: 'db1', gpgKey: { publicKey: fixtureGpgKey().publicKey } }),
    );
    const r = await runWalrus(['wal-push', `pg_wal/${name}`], { config, server: 'db1', cwd: join(work, 'data') });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!hasStackTrace(r.stderr));
    const object = join(work, 'store', 'db1', 'wal_005', `${name}.lzo`);
    const head = (await readFile(object)).subarray(0, 9);
    assert.notDeepEqual(head, Buffer.from([0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a]), 'the object is encrypted, not a bare lzop stream');

    await gnupg.importKey(await readFile(join(FIXTURES, 'wal-e-gpg', 'secret-key.asc'), 'utf8'));
    // WAL-E's own read pipeline, as a shell pipe
    const decoded = await digestOfCommand(
      'bash',
      ['-c', 'set -o pipefail; gpg --homedir "$1" --batch --no-tty --pinentry-mode loopback --passphrase-file "$2" -d "$3" | lzop -d -c', 'pipe', gnupg.home, join(FIXTURES, 'wal-e-gpg', 'passphrase.txt'), object],
      { ...process.env, LC_ALL: 'C' },
    );
    assert.equal(decoded.code, 0, decoded.stderr);
    assert.equal(decoded.bytes, SEGMENT_SIZE);
    assert.equal(decoded.sha256, createHash('sha256').update(content).digest('hex'));
  });
});
