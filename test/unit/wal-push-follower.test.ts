/**
 * The push follower (`wal-push --follow PG_WAL`, core/wal-push-follower.ts): wal-push starts one
 * for a running server's pg_wal; it pushes segments as they are marked ready and records them;
 * archive_command's sh front (bin/walrus-push-hit) takes the records, or asks the follower and
 * waits; a push it cannot make sends the front to the full wal-push. Through the real bin/walrus,
 * file storage and a stand-in postmaster (a `sleep` whose pid is in postmaster.pid).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FELL_THROUGH, logMessages, makeTempDirectory, runShFront, runWalrus, segmentNames, simpleFleet, waitForWalrusProcesses, walrusProcessesMentioning, writeFleetConfig } from '../helpers/walrus-cli.js';

let temp: { path: string; cleanup: () => Promise<void> };
let n = 0;
const postmasters: ChildProcess[] = [];

before(async () => {
  temp = await makeTempDirectory('push-follower');
});
after(async () => {
  for (const p of postmasters) p.kill();
  await waitForWalrusProcesses(temp.path, 10_000);
  await temp.cleanup();
});

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A data directory of a "running server" (postmaster.pid names a live process) with `ready` ready segments. */
async function scene(first: string, ready: number, options: { pushFollower?: boolean } = {}) {
  const dataDirectory = join(temp.path, `data${++n}`);
  const pgWal = join(dataDirectory, 'pg_wal');
  await mkdir(join(pgWal, 'archive_status'), { recursive: true });
  const postmaster = spawn('sleep', ['600'], { stdio: 'ignore' });
  postmasters.push(postmaster);
  await writeFile(join(dataDirectory, 'postmaster.pid'), `${postmaster.pid}\n${dataDirectory}\n`);
  const store = join(temp.path, `store${n}`);
  const fleet = simpleFleet({ storage: store, dataDirectory, poolSize: 2, server: 'db1' }) as { defaults: Record<string, unknown> };
  if (options.pushFollower !== undefined) fleet.defaults.pushFollower = options.pushFollower;
  const config = await writeFleetConfig(join(temp.path, `fleet${n}.yaml`), fleet);
  const pushed = join(pgWal, '.walrus', 'pushed');
  const names = segmentNames(first, 8);
  /** PostgreSQL finishing a segment: the file, then its .ready. */
  const finish = async (name: string, markReady = true) => {
    await writeFile(join(pgWal, name), randomBytes(64 * 1024));
    if (markReady) await writeFile(join(pgWal, 'archive_status', `${name}.ready`), '');
  };
  for (const name of names.slice(0, ready)) await finish(name);
  const archived = async () => (await readdir(join(store, 'wal_005')).catch(() => [] as string[])).sort();
  const followerPid = async () => Number(await readFile(join(pushed, 'follower.pid'), 'utf8').catch(() => '')) || undefined;
  return { dataDirectory, pgWal, names, store, config, pushed, finish, archived, followerPid, postmaster };
}

const front = (args: string[], cwd: string, command?: string[]) => runShFront('walrus-push-hit', args, cwd, command);
const push = (s: { config: string }, name: string) => ['--config', s.config, '--server', 'db1', 'wal-push', `pg_wal/${name}`];

test('wal-push starts one follower for a running server; it pushes segments as they are marked ready, and the calls for them end in sh', async () => {
  const s = await scene('000000010000000000000010', 1);
  const first = await front(push(s, s.names[0]), s.dataDirectory);
  assert.equal(first.code, 0, first.stderr);
  const pid = await until('the follower', s.followerPid);
  assert.ok(existsSync(join(s.pushed, s.names[0])), 'the asked-for segment is recorded too: the follower does not push it again');

  for (const name of s.names.slice(1, 5)) await s.finish(name);
  const expected = s.names.slice(0, 5).map((x) => `${x}.lzo`);
  await until('the ready segments archived and recorded', async () => (await s.archived()).join() === expected.join() && s.names.slice(1, 5).every((x) => existsSync(join(s.pushed, x))));
  for (const name of s.names.slice(1, 5)) {
    const r = await front(push(s, name), s.dataDirectory, FELL_THROUGH);
    assert.deepEqual([r.code, r.stdout], [0, ''], `${name} answered in sh: ${r.stderr}`);
    assert.deepEqual(logMessages(r.stderr), [['INFO', 'WAL file was already archived by a parallel push']]);
    assert.ok(!existsSync(join(s.pushed, name)), 'its record is taken');
  }
  // a full wal-push leaves the running follower alone
  await s.finish(s.names[5], false);
  const full = await runWalrus(['--config', s.config, '--server', 'db1', 'wal-push', join(s.pgWal, s.names[5])]);
  assert.equal(full.code, 0, full.stderr);
  assert.equal(await s.followerPid(), pid);
  assert.equal(walrusProcessesMentioning(`${s.pgWal}`).length, 1, 'one follower per pg_wal');
});

test('a segment not recorded yet: the front asks the follower, which pushes it now, and takes the record without node', async () => {
  const s = await scene('000000010000000000000020', 1);
  assert.equal((await front(push(s, s.names[0]), s.dataDirectory)).code, 0);
  await until('the follower', s.followerPid);
  await s.finish(s.names[1], false); // not marked ready: only the ask makes the follower push it
  const r = await front(push(s, s.names[1]), s.dataDirectory, FELL_THROUGH);
  assert.deepEqual([r.code, r.stdout], [0, ''], r.stderr);
  assert.ok((await s.archived()).includes(`${s.names[1]}.lzo`));
  assert.deepEqual((await readdir(s.pushed)).filter((e) => e.startsWith('.ask-') || e.startsWith('.failed-')), [], 'no ask or answer left');
});

test('a push the follower cannot make: the front runs the full wal-push, which reports the error and its exit code', async () => {
  const s = await scene('000000010000000000000030', 1);
  assert.equal((await front(push(s, s.names[0]), s.dataDirectory)).code, 0);
  await until('the follower', s.followerPid);
  // the storage breaks: its WAL folder becomes a file (root ignores permissions, not this)
  await rm(join(s.store, 'wal_005'), { recursive: true });
  await writeFile(join(s.store, 'wal_005'), '');
  await s.finish(s.names[1]);
  const through = await front(push(s, s.names[1]), s.dataDirectory, FELL_THROUGH);
  assert.equal(through.stdout, `FELL-THROUGH ${push(s, s.names[1]).join(' ')}\n`, 'the front fell through to the wrapped command');
  const full = await front(push(s, s.names[1]), s.dataDirectory);
  assert.notEqual(full.code, 0);
  assert.match(full.stderr, /ERROR/);
  assert.deepEqual((await readdir(s.pushed)).filter((e) => e.startsWith('.ask-') || e.startsWith('.failed-')), [], 'no ask or answer left');
  assert.ok(!existsSync(join(s.pushed, s.names[1])), 'nothing recorded for it');
});

test('the follower ends when the server stops, and when its config file changes; a dead one is not waited for', async () => {
  const s = await scene('000000010000000000000040', 1);
  assert.equal((await front(push(s, s.names[0]), s.dataDirectory)).code, 0);
  const pid = await until('the follower', s.followerPid);
  const later = new Date(Date.now() + 5000);
  await utimes(s.config, later, later);
  await until('the follower to end after the config change', async () => !existsSync(join(s.pushed, 'follower.pid')) && walrusProcessesMentioning(s.pgWal).length === 0);

  await s.finish(s.names[1]);
  assert.equal((await front(push(s, s.names[1]), s.dataDirectory)).code, 0);
  const second = await until('a new follower', s.followerPid);
  assert.notEqual(second, pid);
  s.postmaster.kill();
  await until('the follower to end with the server', async () => !existsSync(join(s.pushed, 'follower.pid')) && walrusProcessesMentioning(s.pgWal).length === 0);

  // a pid file left by a killed follower: the front does not ask it
  await writeFile(join(s.pushed, 'follower.pid'), '999999');
  await s.finish(s.names[2], false);
  const r = await front(push(s, s.names[2]), s.dataDirectory, FELL_THROUGH);
  assert.match(r.stdout, /^FELL-THROUGH /);
  assert.ok(!existsSync(join(s.pushed, `.ask-${s.names[2]}`)));
});

test('pushFollower: false starts none, and --follow refuses a directory without a running server', async () => {
  const s = await scene('000000010000000000000050', 1, { pushFollower: false });
  assert.equal((await front(push(s, s.names[0]), s.dataDirectory)).code, 0);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await s.followerPid(), undefined);
  assert.equal(walrusProcessesMentioning(s.pgWal).length, 0);

  const stopped = join(temp.path, 'stopped', 'pg_wal');
  await mkdir(stopped, { recursive: true });
  const r = await runWalrus(['--config', s.config, '--server', 'db1', 'wal-push', '--follow', stopped]);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /is not the pg_wal of a running server/);
});

test('a follower killed while the front waits on it: the front runs the full wal-push, and the next wal-push starts a new follower', async () => {
  const s = await scene('000000010000000000000060', 1);
  assert.equal((await front(push(s, s.names[0]), s.dataDirectory)).code, 0);
  const pid = await until('the follower', s.followerPid);
  process.kill(pid, 'SIGSTOP'); // it can take no ask now
  await s.finish(s.names[1], false);
  const waiting = front(push(s, s.names[1]), s.dataDirectory, FELL_THROUGH);
  await until('the ask', async () => existsSync(join(s.pushed, `.ask-${s.names[1]}`)));
  process.kill(pid, 'SIGKILL');
  const r = await waiting;
  assert.match(r.stdout, /^FELL-THROUGH /, 'fell through once the follower was dead');
  assert.ok(!existsSync(join(s.pushed, `.ask-${s.names[1]}`)), 'its ask removed');
  assert.ok(!(await s.archived()).includes(`${s.names[1]}.lzo`), 'nothing pushed by the dead follower');

  const full = await front(push(s, s.names[1]), s.dataDirectory);
  assert.equal(full.code, 0, full.stderr);
  assert.ok((await s.archived()).includes(`${s.names[1]}.lzo`));
  const second = await until('a new follower, over the dead one\'s lock', async () => {
    const p = await s.followerPid();
    return p !== pid && p;
  });
  assert.ok(walrusProcessesMentioning(s.pgWal).includes(second as number));
});
