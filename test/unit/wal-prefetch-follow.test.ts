/**
 * `wal-prefetch --follow`: the one long-lived prefetcher of a recovery. Through the real bin/walrus
 * on file storage with small fake segments: it keeps `--count` segments ready after the last one
 * requested, there is one per pg_wal, it ends when recovery ends (recovery.signal removed) and
 * when its config file changes (dropping what it fetched under the old one).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { nextSegmentName } from '../../core/layout.js';
import { prefetchDirectory } from '../../core/wal-archive.js';
import { WALRUS_BIN, makeTempDirectory, runWalrus, simpleFleet, waitForWalrusProcesses, writeFleetConfig } from '../helpers/walrus-cli.js';

let temp: { path: string; cleanup: () => Promise<void> };
const children: ChildProcess[] = [];
before(async () => {
  temp = await makeTempDirectory('prefetch-follow');
});
after(async () => {
  for (const c of children) c.kill('SIGKILL');
  await waitForWalrusProcesses(temp.path);
  await temp?.cleanup();
});

let n = 0;
/** A data directory in recovery (recovery.signal) and an archive of 12 small segments from `first`. */
async function archive(first: string) {
  const dataDirectory = join(temp.path, `data${++n}`);
  const pgWal = join(dataDirectory, 'pg_wal');
  await mkdir(join(pgWal, 'archive_status'), { recursive: true });
  await writeFile(join(dataDirectory, 'recovery.signal'), '');
  const config = await writeFleetConfig(join(temp.path, `fleet${n}.yaml`), simpleFleet({ storage: join(temp.path, `store${n}`), dataDirectory, prefix: 'db1', prefetch: 3, poolSize: 2 }));
  const names = [first];
  while (names.length < 12) names.push(nextSegmentName(names[names.length - 1]));
  const contents = new Map<string, Buffer>();
  for (const name of names) {
    contents.set(name, randomBytes(64 * 1024));
    await writeFile(join(pgWal, name), contents.get(name)!);
    const pushed = await runWalrus(['wal-push', `pg_wal/${name}`], { config, server: 'db1', cwd: dataDirectory });
    assert.equal(pushed.code, 0, pushed.stderr);
    await rm(join(pgWal, name));
  }
  return { dataDirectory, pgWal, dir: prefetchDirectory(pgWal), config, names, contents };
}

function follow(a: { config: string; pgWal: string }, first: string): { child: ChildProcess; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [WALRUS_BIN, '--config', a.config, '--server', 'db1', 'wal-prefetch', a.pgWal, first, '--count', '3', '--follow'], { stdio: 'ignore', env: { ...process.env, NODE_OPTIONS: '' } });
  children.push(child);
  return { child, exited: new Promise((r) => child.on('exit', (code) => r(code))) };
}

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const readySegments = async (dir: string) => (await readdir(dir)).filter((e) => /^[0-9A-F]{24}$/.test(e)).sort();

test('keeps --count segments ready after each request; a second follower of the same pg_wal leaves at once; ends with recovery', async () => {
  const a = await archive('000000010000000000000010');
  const f = follow(a, a.names[0]);
  await until('the first three are ready', async () => (await readySegments(a.dir).catch(() => [])).length === 3);
  assert.deepEqual(await readySegments(a.dir), a.names.slice(0, 3));
  assert.equal(await readFile(join(a.dir, 'follower.pid'), 'utf8'), String(f.child.pid));

  const second = follow(a, a.names[0]);
  assert.equal(await second.exited, 0, 'the lock is held: the second one ends');
  assert.equal(await readFile(join(a.dir, 'follower.pid'), 'utf8'), String(f.child.pid));

  // recovery asks for names[4] (as wal-fetch notes it): the window moves to names[5..7]
  await writeFile(join(a.dir, '.last-requested'), a.names[4]);
  await until('the window after the request is ready', async () => (await readySegments(a.dir)).includes(a.names[7]));
  for (const name of a.names.slice(5, 8)) assert.deepEqual(await readFile(join(a.dir, name)), a.contents.get(name), name);

  await rm(join(a.dataDirectory, 'recovery.signal')); // PostgreSQL ends recovery
  await writeFile(join(a.dir, '.last-requested'), a.names[5]);
  assert.equal(await f.exited, 0);
  assert.ok(!existsSync(join(a.dir, 'follower.pid')), 'its lock is released');
});

test('the fetched segments are the archived ones, byte for byte (wal-fetch takes them)', async () => {
  const a = await archive('000000010000000000000030');
  const f = follow(a, a.names[0]);
  await until('ready', async () => (await readySegments(a.dir).catch(() => [])).length === 3);
  for (const name of a.names.slice(0, 3)) {
    const fetched = await runWalrus(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { config: a.config, server: 'db1', cwd: a.dataDirectory });
    assert.equal(fetched.code, 0, fetched.stderr);
    assert.match(fetched.stderr, /promoted a prefetched WAL segment/);
    assert.deepEqual(await readFile(join(a.pgWal, 'RECOVERYXLOG')), a.contents.get(name), name);
  }
  f.child.kill('SIGTERM');
  assert.equal(await f.exited, 0, 'SIGTERM: a clean exit');
  assert.ok(!existsSync(join(a.dir, 'follower.pid')));
});

test('a change to its config file ends it and drops the segments it fetched', async () => {
  const a = await archive('000000010000000000000050');
  const f = follow(a, a.names[0]);
  await until('ready', async () => (await readySegments(a.dir).catch(() => [])).length === 3);
  await appendFile(a.config, '# changed\n');
  await writeFile(join(a.dir, '.last-requested'), a.names[0]); // wake it
  assert.equal(await f.exited, 0);
  assert.deepEqual(await readySegments(a.dir), [], 'nothing fetched under the old config is left');
});

test('a dead follower\'s lock is taken over', async () => {
  const a = await archive('000000010000000000000070');
  await mkdir(a.dir, { recursive: true });
  const dead = spawn('true');
  await new Promise((r) => dead.on('exit', r));
  await writeFile(join(a.dir, 'follower.pid'), String(dead.pid));
  const f = follow(a, a.names[0]);
  await until('ready', async () => (await readySegments(a.dir).catch(() => [])).length === 3);
  assert.equal(await readFile(join(a.dir, 'follower.pid'), 'utf8'), String(f.child.pid));
  f.child.kill('SIGTERM');
  await f.exited;
});
