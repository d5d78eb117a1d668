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
import { prefetchDirectory, recordFastPathSettings } from '../../core/wal-archive.js';
import { REPO_ROOT, WALRUS_BIN, logMessages, makeTempDirectory, runWalrus, simpleFleet, waitForWalrusProcesses, writeFleetConfig } from '../helpers/walrus-cli.js';

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

/** restore_command as walrus writes it: the sh front, wrapping a command that proves it ran (the full path). */
function front(a: { config: string; dataDirectory: string }, name: string) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolveRun) => {
    const args = [join(REPO_ROOT, 'bin', 'walrus-prefetch-hit'), '/bin/echo', 'FELL-THROUGH', '--config', a.config, '--server', 'db1', 'wal-fetch', name, 'pg_wal/RECOVERYXLOG'];
    const child = spawn('/bin/sh', args, { cwd: a.dataDirectory, env: { PATH: process.env.PATH } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolveRun({ code, stdout, stderr }));
  });
}

test('answers the sh front\'s asks without node: a history file, a segment asked again, and "not in the archive" looked up after the ask', async () => {
  const a = await archive('000000010000000000000090');
  const history = Buffer.from('1\t0/90000000\tno recovery target specified\n');
  await writeFile(join(a.pgWal, '00000002.history'), history);
  const pushed = await runWalrus(['wal-push', 'pg_wal/00000002.history'], { config: a.config, server: 'db1', cwd: a.dataDirectory });
  assert.equal(pushed.code, 0, pushed.stderr);
  await rm(join(a.pgWal, '00000002.history'));
  const f = follow(a, a.names[0]);
  await until('ready', async () => (await readySegments(a.dir).catch(() => [])).length === 3);
  await recordFastPathSettings(a.pgWal, a.config, 'db1', 'db1', 3); // what the full wal-fetch records for the front

  // a stale copy in the prefetch directory is never taken for a history file: only the answer
  await writeFile(join(a.dir, '00000002.history'), 'stale');
  const found = await front(a, '00000002.history');
  assert.deepEqual([found.code, found.stdout], [0, ''], found.stderr);
  assert.deepEqual(await readFile(join(a.pgWal, 'RECOVERYXLOG')), history);

  for (const name of [a.names[0], a.names[1], a.names[0]]) { // names[0] asked again once taken, as at the end of recovery
    const r = await front(a, name);
    assert.deepEqual([r.code, r.stdout], [0, ''], `${name}: ${r.stderr}`);
    assert.deepEqual(await readFile(join(a.pgWal, 'RECOVERYXLOG')), a.contents.get(name), name);
  }

  // past the end of the archive, and the next timeline's history: exit 1 (not found), no node started
  const pastEnd = nextSegmentName(a.names[11]);
  for (const name of [pastEnd, '00000003.history']) {
    const r = await front(a, name);
    assert.deepEqual([r.code, r.stdout], [1, ''], `${name}: ${r.stderr}`);
    assert.deepEqual(logMessages(r.stderr), [['INFO', `WAL file ${name} is not in the archive (looked up by the follower just now)`]]);
  }
  // archived after the follower found it missing: the next ask is looked up again, and finds it
  await writeFile(join(a.pgWal, pastEnd), randomBytes(64 * 1024));
  const late = await runWalrus(['wal-push', `pg_wal/${pastEnd}`], { config: a.config, server: 'db1', cwd: a.dataDirectory });
  assert.equal(late.code, 0, late.stderr);
  const expected = await readFile(join(a.pgWal, pastEnd));
  await rm(join(a.pgWal, pastEnd));
  const r = await front(a, pastEnd);
  assert.deepEqual([r.code, r.stdout], [0, ''], r.stderr);
  assert.deepEqual(await readFile(join(a.pgWal, 'RECOVERYXLOG')), expected);
  assert.deepEqual((await readdir(a.dir)).filter((e) => e.startsWith('.ask-') || e.startsWith('.absent-')), [], 'no ask or answer left behind');

  // the follower gone: the wrapped command runs
  f.child.kill('SIGTERM');
  await f.exited;
  const fell = await front(a, a.names[5]);
  assert.match(fell.stdout, /^FELL-THROUGH /);
});
