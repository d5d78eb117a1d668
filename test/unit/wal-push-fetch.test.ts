/**
 * wal-push / wal-fetch / prefetch through the real bin/walrus, against a fake data directory
 * (pg_wal/ with random 16 MiB "segments", archive_status/) and file storage. Exit codes are the
 * contract PostgreSQL's archive_command and restore_command rely on.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { nextSegmentName } from '../../core/layout.js';
import { hasStackTrace, logMessages, makeTempDirectory, runWalrus, simpleFleet, waitForWalrusProcesses, writeFleetConfig, type WalrusResult } from '../helpers/walrus-cli.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const SEGMENT_SIZE = 16 * 1024 * 1024;
const FIXTURE_GPG = `${SHARED_FIXTURES}/wal-e-gpg`;

let temp: { path: string; cleanup: () => Promise<void> };
let dataDirectory: string;
let pgWal: string;
let store: string;
/** lzo, no encryption, prefetch 0, poolSize 1 */
let plainConfig: string;

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const objectPath = (name: string) => join(store, 'db1', 'wal_005', `${name}.lzo`);

/** Segment names from a distinct starting point per test, so tests share one storage. */
function segments(first: string, count: number): string[] {
  const out = [first];
  while (out.length < count) out.push(nextSegmentName(out[out.length - 1]));
  return out;
}

async function writeSegment(name: string): Promise<Buffer> {
  const content = randomBytes(SEGMENT_SIZE);
  await writeFile(join(pgWal, name), content);
  return content;
}

async function walrus(args: string[], config = plainConfig, env?: NodeJS.ProcessEnv): Promise<WalrusResult> {
  const r = await runWalrus(args, { config, server: 'db1', cwd: dataDirectory, env });
  assert.ok(!hasStackTrace(r.stderr), `no stack trace without --debug:\n${r.stderr}`);
  return r;
}

const errors = (r: WalrusResult) => logMessages(r.stderr).filter(([level]) => level === 'ERROR');

/** Names in pg_wal/ that look like temp files of an interrupted write. */
async function leftovers(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith('.') && n !== '.walrus');
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out waiting for ${what}`);
}

before(async () => {
  temp = await makeTempDirectory('wal-push-fetch');
  dataDirectory = join(temp.path, 'data');
  pgWal = join(dataDirectory, 'pg_wal');
  store = join(temp.path, 'store');
  await mkdir(join(pgWal, 'archive_status'), { recursive: true });
  plainConfig = await writeFleetConfig(join(temp.path, 'plain.yaml'), simpleFleet({ storage: store, dataDirectory, prefix: 'db1' }));
});
after(async () => {
  // a detached prefetcher may still be running: never remove its directories under it
  if (temp) await waitForWalrusProcesses(temp.path);
  await temp?.cleanup();
});

describe('wal-push', () => {
  test('a second push of the same content succeeds and says so; different content is refused (exit 5)', async () => {
    const [name] = segments('000000010000000000000010', 1);
    const content = await writeSegment(name);
    const first = await walrus(['wal-push', `pg_wal/${name}`]);
    assert.equal(first.code, 0, first.stderr);
    assert.ok(existsSync(objectPath(name)));

    const again = await walrus(['wal-push', `pg_wal/${name}`]);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(logMessages(again.stderr), [['INFO', 'WAL file is already archived with the same content']]);

    const before = await readFile(objectPath(name));
    const changed = Buffer.from(content);
    changed[SEGMENT_SIZE / 2] ^= 0xff;
    await writeFile(join(pgWal, name), changed);
    const refused = await walrus(['wal-push', `pg_wal/${name}`]);
    assert.equal(refused.code, 5, refused.stderr);
    assert.equal(errors(refused).length, 1);
    assert.match(errors(refused)[0][1], new RegExp(`${name} is already archived .* with different content`));
    assert.deepEqual(await readFile(objectPath(name)), before, 'the archived copy is left as it was');
  });

  test('an encrypting host without the secret key: a duplicate is judged by its encoded size', async () => {
    const config = await writeFleetConfig(
      join(temp.path, 'public-only.yaml'),
      simpleFleet({ storage: join(temp.path, 'store-public-only'), dataDirectory, prefix: 'db1', gpgKey: { publicKey: `\${file:${FIXTURE_GPG}/public-key.asc}` } }),
    );
    const [name] = segments('000000010000000000000018', 1);
    const content = await writeSegment(name);
    assert.equal((await walrus(['wal-push', `pg_wal/${name}`], config)).code, 0);
    const again = await walrus(['wal-push', `pg_wal/${name}`], config);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /no secret key here to read it back; its size matches an encoding of/);
    // a file whose encoding differs in size (random data: the compressed size follows the length) is refused
    await writeFile(join(pgWal, name), content.subarray(0, SEGMENT_SIZE - 4096));
    const refused = await walrus(['wal-push', `pg_wal/${name}`], config);
    assert.equal(refused.code, 5, refused.stderr);
    await writeFile(join(pgWal, name), content);
  });

  test('a path that does not exist: exit 1, one error line', async () => {
    const r = await walrus(['wal-push', 'pg_wal/000000010000000000000099']);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(logMessages(r.stderr).length, 1);
    assert.match(errors(r)[0][1], /WAL file pg_wal\/000000010000000000000099 does not exist/);
  });

  test('a file that is not a WAL file name: exit 2', async () => {
    await writeFile(join(pgWal, 'foo.txt'), 'not WAL');
    const r = await walrus(['wal-push', 'pg_wal/foo.txt']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(errors(r)[0][1], /'pg_wal\/foo.txt' is not a WAL file name/);
    assert.equal((await readdir(store, { recursive: true })).filter((n) => n.includes('foo')).length, 0);
  });

  test('poolSize 3 pushes the next two .ready segments too, without touching archive_status/', async () => {
    const names = segments('000000010000000000000020', 3);
    const contents = new Map<string, Buffer>();
    for (const name of names) {
      contents.set(name, await writeSegment(name));
      await writeFile(join(pgWal, 'archive_status', `${name}.ready`), '');
    }
    const statusBefore = await statusSnapshot();
    const config = await writeFleetConfig(join(temp.path, 'pool3.yaml'), simpleFleet({ storage: store, dataDirectory, prefix: 'db1', poolSize: 3 }));

    const first = await walrus(['wal-push', `pg_wal/${names[0]}`], config);
    assert.equal(first.code, 0, first.stderr);
    for (const name of names) assert.ok(existsSync(objectPath(name)), `${name} archived by the first call`);
    assert.deepEqual(await statusSnapshot(), statusBefore, 'archive_status/ is PostgreSQL\'s: same files, same times');

    for (const name of names.slice(1)) {
      const later = await walrus(['wal-push', `pg_wal/${name}`], config);
      assert.equal(later.code, 0, later.stderr);
      assert.deepEqual(logMessages(later.stderr), [['INFO', 'WAL file was already archived by a parallel push']]);
    }
    // and what was pushed ahead is the right content
    for (const name of names) {
      const dest = join(temp.path, `check-${name}`);
      const r = await walrus(['wal-fetch', name, dest]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha256(await readFile(dest)), sha256(contents.get(name)!));
    }
  });
});

async function statusSnapshot(): Promise<string[]> {
  const dir = join(pgWal, 'archive_status');
  const out: string[] = [];
  for (const n of (await readdir(dir)).sort()) out.push(`${n} ${(await stat(join(dir, n))).mtimeMs}`);
  return out;
}

describe('wal-fetch', () => {
  test('round trip: the fetched file has the pushed bytes', async () => {
    const [name] = segments('000000010000000000000030', 1);
    const content = await writeSegment(name);
    assert.equal((await walrus(['wal-push', `pg_wal/${name}`])).code, 0);
    const r = await walrus(['wal-fetch', name, 'pg_wal/RECOVERYXLOG']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(await readFile(join(pgWal, 'RECOVERYXLOG'))), sha256(content));
  });

  test('a temp file left by a killed wal-fetch is removed by a later one once it is old', async () => {
    const [name] = segments('000000010000000000000038', 1);
    await writeSegment(name);
    assert.equal((await walrus(['wal-push', `pg_wal/${name}`])).code, 0);
    const stale = join(pgWal, '.RECOVERYXLOG.walrus-partial-deadbeef');
    const fresh = join(pgWal, '.RECOVERYXLOG.walrus-partial-0badcafe');
    await writeFile(stale, 'half a segment');
    await writeFile(fresh, 'a fetch still running');
    const hourAgo = new Date(Date.now() - 60 * 60 * 1000);
    await utimes(stale, hourAgo, hourAgo);
    const r = await walrus(['wal-fetch', name, 'pg_wal/RECOVERYXLOG']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!existsSync(stale), 'the old partial file is gone');
    assert.ok(existsSync(fresh), 'a recent one may belong to a running fetch: kept');
    await rm(fresh, { force: true });
  });

  test('a segment that is not archived: exit 1, nothing at DEST', async () => {
    const dest = join(pgWal, 'RECOVERYXLOG-missing');
    const r = await walrus(['wal-fetch', '0000000100000000000000EE', dest]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(errors(r).length, 0, 'not found is routine for restore_command, not an error');
    assert.ok(!existsSync(dest));
    assert.deepEqual(await leftovers(pgWal), []);
  });

  test('a corrupt object: exit 4, nothing at DEST, no temp file; 204 during archive recovery', async () => {
    const [name] = segments('000000010000000000000040', 1);
    await writeSegment(name);
    assert.equal((await walrus(['wal-push', `pg_wal/${name}`])).code, 0);
    const object = await readFile(objectPath(name));
    object[Math.floor(object.length / 2)] ^= 0x01;
    await writeFile(objectPath(name), object);

    const dest = join(pgWal, 'RECOVERYXLOG-corrupt');
    const r = await walrus(['wal-fetch', name, dest]);
    assert.equal(r.code, 4, r.stderr);
    assert.ok(errors(r).length >= 1);
    assert.ok(!existsSync(dest));
    assert.deepEqual(await leftovers(pgWal), []);

    await writeFile(join(dataDirectory, 'recovery.signal'), '');
    try {
      const inRecovery = await walrus(['wal-fetch', name, 'pg_wal/RECOVERYXLOG-corrupt']);
      assert.equal(inRecovery.code, 204, inRecovery.stderr);
      assert.match(inRecovery.stderr, /stopping archive recovery/);
      assert.ok(!existsSync(dest));
      assert.deepEqual(await leftovers(pgWal), []);
      // a standby (standby.signal too) is not archive recovery: the ordinary code
      await writeFile(join(dataDirectory, 'standby.signal'), '');
      const standby = await walrus(['wal-fetch', name, 'pg_wal/RECOVERYXLOG-corrupt']);
      assert.equal(standby.code, 4, standby.stderr);
    } finally {
      await rm(join(dataDirectory, 'recovery.signal'), { force: true });
      await rm(join(dataDirectory, 'standby.signal'), { force: true });
    }
  });

  test('the wrong passphrase: exit 6, nothing at DEST', async () => {
    const [name] = segments('000000010000000000000050', 1);
    await writeSegment(name);
    const key = (passphraseVariable: string) => ({
      publicKey: `\${file:${FIXTURE_GPG}/public-key.asc}`,
      secretKey: `\${file:${FIXTURE_GPG}/secret-key.asc}`,
      passphrase: `\${env:${passphraseVariable}}`,
    });
    const config = await writeFleetConfig(join(temp.path, 'gpg.yaml'), simpleFleet({ storage: join(temp.path, 'store-gpg'), dataDirectory, prefix: 'db1', gpgKey: key('WALRUS_TEST_PASSPHRASE') }));
    const right = { WALRUS_TEST_PASSPHRASE: (await readFile(join(FIXTURE_GPG, 'passphrase.txt'), 'utf8')).trim() };
    const wrong = { WALRUS_TEST_PASSPHRASE: 'not-the-passphrase' };

    assert.equal((await walrus(['wal-push', `pg_wal/${name}`], config, right)).code, 0);
    const dest = join(pgWal, 'RECOVERYXLOG-key');
    const r = await walrus(['wal-fetch', name, dest], config, wrong);
    assert.equal(r.code, 6, r.stderr);
    assert.ok(!r.stderr.includes('not-the-passphrase'), 'the passphrase is never printed');
    assert.ok(!existsSync(dest));
    assert.deepEqual(await leftovers(pgWal), []);
    const ok = await walrus(['wal-fetch', name, dest], config, right);
    assert.equal(ok.code, 0, ok.stderr);
  });

  test('a destination directory that does not exist: exit 2', async () => {
    const [name] = segments('000000010000000000000030', 1); // archived by the round-trip test or not: the directory is checked first
    const r = await walrus(['wal-fetch', name, join(temp.path, 'no-such-dir', 'RECOVERYXLOG')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(errors(r)[0][1], /destination directory .*no-such-dir does not exist/);
  });

  test('prefetch: the next segments arrive in pg_wal/.walrus/prefetch/ and the next wal-fetch promotes one', async () => {
    const names = segments('000000010000000000000060', 5);
    const contents = new Map<string, Buffer>();
    for (const name of names) {
      contents.set(name, await writeSegment(name));
      assert.equal((await walrus(['wal-push', `pg_wal/${name}`])).code, 0);
    }
    const config = await writeFleetConfig(join(temp.path, 'prefetch.yaml'), simpleFleet({ storage: store, dataDirectory, prefix: 'db1', prefetch: 3 }));
    const restoreDirectory = join(temp.path, 'restore', 'pg_wal');
    await mkdir(restoreDirectory, { recursive: true });
    const prefetched = join(restoreDirectory, '.walrus', 'prefetch');

    const first = await walrus(['wal-fetch', names[0], join(restoreDirectory, 'RECOVERYXLOG')], config);
    assert.equal(first.code, 0, first.stderr);
    await waitFor(`${names.slice(1, 4).join(', ')} in ${prefetched}`, async () => {
      const have = existsSync(prefetched) ? await readdir(prefetched) : [];
      return names.slice(1, 4).every((n) => have.includes(n));
    });
    assert.ok(!(await readdir(prefetched)).includes(names[4]), 'no further than prefetch: 3');

    const second = await walrus(['wal-fetch', names[1], join(restoreDirectory, 'RECOVERYXLOG')], config);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /promoted a prefetched WAL segment/);
    assert.equal(sha256(await readFile(join(restoreDirectory, 'RECOVERYXLOG'))), sha256(contents.get(names[1])!));
    assert.ok(!(await readdir(prefetched)).includes(names[1]), 'the promoted copy moved out of the prefetch folder');
    // the prefetchers (detached) exit on their own once the archive has nothing more for them
    assert.deepEqual(await waitForWalrusProcesses(temp.path, 30_000), [], 'prefetchers still running after 30 s (killed)');
    assert.deepEqual(await readdir(join(prefetched, 'running')), [], 'no claims left behind');
  });
});
