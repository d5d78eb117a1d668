/**
 * bin/walrus's prefetch-hit fast path for wal-fetch: it moves a prefetched segment into place
 * without loading the CLI only when wal-fetch's own full run left matching settings (same config
 * file, unchanged, same server) and the prefetch queue is still at least half full; otherwise the
 * full CLI runs. Through the real bin/walrus, file storage, fake 16 MiB segments.
 *
 * To tell the two paths apart, some tests give the fast path a config file the full CLI cannot
 * load: success there proves the fast path ran, a config error proves it fell through.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join, relative as relativePath } from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { nextSegmentName } from '../../core/layout.js';
import { prefetchDirectory, recordFastPathSettings } from '../../core/wal-archive.js';
import { FELL_THROUGH, logMessages, makeTempDirectory, runShFront, runWalrus, segmentNames, simpleFleet, waitForWalrusProcesses, writeFleetConfig } from '../helpers/walrus-cli.js';

let temp: { path: string; cleanup: () => Promise<void> };
let n = 0;


/** A fresh data directory whose pg_wal/.walrus/prefetch/ holds `prefetched` (small fake segments). */
async function scene(prefetched: string[]) {
  const dataDirectory = join(temp.path, `data${++n}`);
  const pgWal = join(dataDirectory, 'pg_wal');
  const dir = prefetchDirectory(pgWal);
  await mkdir(dir, { recursive: true });
  const contents = new Map<string, Buffer>();
  for (const name of prefetched) {
    const c = randomBytes(4096);
    contents.set(name, c);
    await writeFile(join(dir, name), c);
  }
  return { dataDirectory, pgWal, dir, contents };
}

/** A config file the full CLI refuses (not YAML of a fleet): only the fast path can succeed with it. */
async function unloadableConfig(): Promise<string> {
  const path = join(temp.path, `broken${++n}.yaml`);
  await writeFile(path, 'this: [is not a fleet\n');
  return path;
}

before(async () => {
  temp = await makeTempDirectory('fast-paths');
});
after(async () => {
  if (temp) await waitForWalrusProcesses(temp.path);
  await temp?.cleanup();
});

describe('wal-fetch prefetch-hit fast path (bin/walrus)', () => {
  test('takes a prefetched segment without loading the config: DEST has its bytes, .last-requested names it, INFO line', async () => {
    const names = segmentNames('000000010000000000000020', 9);
    const s = await scene(names);
    const config = await unloadableConfig();
    await recordFastPathSettings(s.pgWal, config, 'db1', 'db1', 8);
    const r = await runWalrus(['wal-fetch', names[0], 'pg_wal/RECOVERYXLOG'], { config, server: 'db1', cwd: s.dataDirectory });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await readFile(join(s.pgWal, 'RECOVERYXLOG')), s.contents.get(names[0]));
    assert.ok(!existsSync(join(s.dir, names[0])), 'the prefetched copy was moved, not copied');
    assert.equal(await readFile(join(s.dir, '.last-requested'), 'utf8'), names[0]);
    assert.deepEqual(logMessages(r.stderr), [['INFO', 'promoted a prefetched WAL segment']]);
    assert.match(r.stderr, new RegExp(`STRUCTURED: time=\\S+ pid=\\d+ action=wal-fetch seg=${names[0]} state=complete prefetch=hit`));
    assert.deepEqual((await readdir(s.dir)).filter((e) => e.startsWith('.last-requested.')), [], 'no temp file left');
  });

  test('--log-level warn: no line; --log-format json: one JSON record', async () => {
    const names = segmentNames('000000010000000000000030', 10);
    const s = await scene(names);
    const config = await unloadableConfig();
    await recordFastPathSettings(s.pgWal, config, 'db1', 'db1', 8);
    const quiet = await runWalrus(['--log-level', 'warn', 'wal-fetch', names[0], 'pg_wal/RECOVERYXLOG'], { config, server: 'db1', cwd: s.dataDirectory });
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stderr, '');
    const json = await runWalrus(['--log-format=json', 'wal-fetch', names[1], 'pg_wal/RECOVERYXLOG'], { config, server: 'db1', cwd: s.dataDirectory });
    assert.equal(json.code, 0, json.stderr);
    const record = JSON.parse(json.stderr.trim());
    assert.equal(record.level, 'info');
    assert.equal(record.seg, names[1]);
    assert.equal(record.prefetch, 'hit');
    assert.deepEqual(await readFile(join(s.pgWal, 'RECOVERYXLOG')), s.contents.get(names[1]));
  });

  for (const [why, change] of [
    ['the config file changed since wal-fetch recorded it', { touch: true }],
    ['another server is named', { server: 'db2' }],
    ['--debug is given', { debug: true }],
    ['no settings were recorded', { noSettings: true }],
  ] as const) {
    test(`falls through to the full CLI when ${why}`, async () => {
      const names = segmentNames('000000010000000000000040', 9);
      const s = await scene(names);
      const config = await unloadableConfig();
      if (!('noSettings' in change)) await recordFastPathSettings(s.pgWal, config, 'db1', 'db1', 8);
      if ('touch' in change) await utimes(config, new Date(), new Date(Date.now() + 5000));
      const r = await runWalrus([...('debug' in change ? ['--debug'] : []), 'wal-fetch', names[0], 'pg_wal/RECOVERYXLOG'], {
        config,
        server: 'server' in change ? change.server : 'db1',
        cwd: s.dataDirectory,
      });
      assert.notEqual(r.code, 0, `the full CLI ran and refused the broken config:\n${r.stderr}`);
      assert.ok(existsSync(join(s.dir, names[0])), 'the prefetched segment is still there');
      assert.ok(!existsSync(join(s.pgWal, 'RECOVERYXLOG')));
    });
  }

  test('with no follower running it still takes the segment and starts one', async () => {
    const names = segmentNames('000000010000000000000070', 9);
    const s = await scene(names.slice(0, 6));
    const config = await unloadableConfig();
    await recordFastPathSettings(s.pgWal, config, 'db1', 'db1', 8);
    const r = await runWalrus(['wal-fetch', names[0], 'pg_wal/RECOVERYXLOG'], { config, server: 'db1', cwd: s.dataDirectory });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await readFile(join(s.pgWal, 'RECOVERYXLOG')), s.contents.get(names[0]));
    const started = join(s.dir, '.fast-path-started');
    assert.ok(existsSync(started), 'a prefetcher was started');
    assert.match(await readFile(started, 'utf8'), /^\d+$/, 'it names the wal-fetch that started it');
    await waitForWalrusProcesses(temp.path);
  });

  test('a segment that is not prefetched falls through (full CLI)', async () => {
    const names = segmentNames('000000010000000000000050', 9);
    const s = await scene(names.slice(1));
    const config = await unloadableConfig();
    await recordFastPathSettings(s.pgWal, config, 'db1', 'db1', 8);
    const r = await runWalrus(['wal-fetch', names[0], 'pg_wal/RECOVERYXLOG'], { config, server: 'db1', cwd: s.dataDirectory });
    assert.notEqual(r.code, 0);
    assert.ok(!existsSync(join(s.pgWal, 'RECOVERYXLOG')));
  });

  test('the full wal-fetch records the settings, and the next hit with the same arguments takes the fast path', async () => {
    const dataDirectory = join(temp.path, 'full');
    const pgWal = join(dataDirectory, 'pg_wal');
    const store = join(temp.path, 'full-store');
    await mkdir(join(pgWal, 'archive_status'), { recursive: true });
    const config = await writeFleetConfig(join(temp.path, 'full.yaml'), simpleFleet({ storage: store, dataDirectory, prefix: 'db1', prefetch: 8, poolSize: 2 }));
    // a whole-second mtime, so the test can put it back exactly after rewriting the file below
    const mtime = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
    await utimes(config, mtime, mtime);
    const names = segmentNames('000000010000000000000060', 12);
    const contents = new Map<string, Buffer>();
    for (const name of names) {
      const c = randomBytes(16 * 1024 * 1024);
      contents.set(name, c);
      await writeFile(join(pgWal, name), c);
      const pushed = await runWalrus(['wal-push', `pg_wal/${name}`], { config, server: 'db1', cwd: dataDirectory });
      assert.equal(pushed.code, 0, pushed.stderr);
    }
    for (const name of names) await rm(join(pgWal, name));

    const first = await runWalrus(['wal-fetch', names[0], 'pg_wal/RECOVERYXLOG'], { config, server: 'db1', cwd: dataDirectory });
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(await readFile(join(pgWal, 'RECOVERYXLOG')), contents.get(names[0]));
    const settings = JSON.parse(await readFile(join(prefetchDirectory(pgWal), '.fast-path'), 'utf8'));
    assert.equal(settings.config, config);
    assert.equal(settings.server, 'db1');
    assert.equal(settings.prefetch, 8);

    // Every later segment is a hit once the follower the full path started brought it: the fast
    // path takes each (the full path would rewrite .fast-path); one follower serves them all.
    const settingsMtime = (await stat(join(prefetchDirectory(pgWal), '.fast-path'))).mtimeMs;
    for (const name of names.slice(1)) {
      const deadline = Date.now() + 60_000;
      while (!existsSync(join(prefetchDirectory(pgWal), name)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const hit = await runWalrus(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { config, server: 'db1', cwd: dataDirectory });
      assert.equal(hit.code, 0, hit.stderr);
      assert.deepEqual(await readFile(join(pgWal, 'RECOVERYXLOG')), contents.get(name), name);
    }
    assert.equal((await stat(join(prefetchDirectory(pgWal), '.fast-path'))).mtimeMs, settingsMtime, 'no call took the full path');
    assert.ok(!existsSync(join(prefetchDirectory(pgWal), '.fast-path-started')), 'the fast path never had to start a prefetcher');
    const follower = Number(await readFile(join(prefetchDirectory(pgWal), 'follower.pid'), 'utf8'));
    assert.doesNotThrow(() => process.kill(follower, 0), 'the follower is still running');
    process.kill(follower, 'SIGTERM'); // no recovery.signal here: it would stay until idle
    await waitForWalrusProcesses(temp.path);
    assert.ok(!existsSync(join(prefetchDirectory(pgWal), 'follower.pid')), 'a follower that ends removes its pid file');

    // the same config, now unloadable but with the recorded mtime and size kept: only the fast path succeeds
    const more = segmentNames(nextSegmentName(names[names.length - 1]), 1)[0];
    await writeFile(join(prefetchDirectory(pgWal), more), contents.get(names[0])!);
    const text = await readFile(config);
    await writeFile(config, Buffer.alloc(text.length, '#'));
    await utimes(config, mtime, mtime);
    const hit = await runWalrus(['wal-fetch', more, 'pg_wal/RECOVERYXLOG'], { config, server: 'db1', cwd: dataDirectory });
    assert.equal(hit.code, 0, hit.stderr);
    assert.deepEqual(await readFile(join(pgWal, 'RECOVERYXLOG')), contents.get(names[0]));
    await waitForWalrusProcesses(temp.path);
  });
});

describe('backup partitions walrus writes', () => {
  test('at most 256 MiB of members and 256 members each; a bigger file alone; WAL-E limits unchanged for reading', async () => {
    const { WALRUS_PARTITION_LIMITS, WAL_E_PARTITION_LIMITS, planPartitions } = await import('../../core/tar-partition.js');
    assert.equal(WALRUS_PARTITION_LIMITS.maxBytes, 256 * 1024 * 1024);
    assert.equal(WALRUS_PARTITION_LIMITS.maxMembers, 256);
    assert.equal(WAL_E_PARTITION_LIMITS.maxMembers, 6144);
    assert.equal(WAL_E_PARTITION_LIMITS.maxBytes, 1610612736);
    const GiB = 1024 * 1024 * 1024;
    // 600 MB of 1 GiB-segment-sized relation files and small ones, like a pgbench scale 20 cluster
    const files = [
      ...Array.from({ length: 7000 }, (_, i) => ({ relativePath: `base/1/${10000 + i}`, type: 'file' as const, size: 8192, mode: 0o600, mtime: new Date(0) })),
      { relativePath: 'base/5/16400', type: 'file' as const, size: 300 * 1024 * 1024, mode: 0o600, mtime: new Date(0) },
      { relativePath: 'base/5/16401', type: 'file' as const, size: 200 * 1024 * 1024, mode: 0o600, mtime: new Date(0) },
      { relativePath: 'base/5/16402', type: 'file' as const, size: GiB / 8, mode: 0o600, mtime: new Date(0) },
    ];
    const partitions = await planPartitions(files as never, WALRUS_PARTITION_LIMITS);
    assert.ok(partitions.length >= 7000 / 256 + 3, `${partitions.length} partitions`);
    for (const p of partitions) {
      assert.ok(p.files.length <= 256);
      if (p.files.length > 1) assert.ok(p.bytes <= WALRUS_PARTITION_LIMITS.maxBytes, `partition ${p.number}: ${p.bytes} bytes`);
    }
    assert.deepEqual(partitions.find((p) => p.files.some((f) => f.relativePath === 'base/5/16400'))!.files.map((f) => f.relativePath), ['base/5/16400']);
    assert.equal(partitions.reduce((s, p) => s + p.files.length, 0), files.length);
  });
});

describe('adler32 (lzop block checksums)', () => {
  /** The definition, one byte at a time with a modulo each step. */
  function reference(data: Uint8Array, initial = 1): number {
    let a = initial & 0xffff;
    let b = initial >>> 16;
    for (const x of data) {
      a = (a + x) % 65521;
      b = (b + a) % 65521;
    }
    return ((b << 16) | a) >>> 0;
  }

  test('equals the definition for every alignment and length, random and all-0xff data, chained initial values', async () => {
    const { adler32 } = await import('../../plugins/lzo/lzop-format.js');
    const random = randomBytes(300_000);
    const ones = Buffer.alloc(300_000, 0xff);
    for (const source of [random, ones]) {
      for (const offset of [0, 1, 2, 3, 5]) {
        for (const length of [0, 1, 3, 4, 7, 8, 9, 2047, 2048, 2049, 4096 + 5, 262_144, 300_000 - 8]) {
          const view = source.subarray(offset, offset + length);
          assert.equal(adler32(view), reference(view), `offset ${offset} length ${length}`);
        }
      }
    }
    assert.equal(adler32(Buffer.from('Wikipedia')), 0x11e60398);
    const split = 12_345;
    assert.equal(adler32(random.subarray(split, 100_000), adler32(random.subarray(0, split))), reference(random.subarray(0, 100_000)));
  });
});

describe("restore_command's sh front (bin/walrus-prefetch-hit)", () => {
  let fakeFollower: ChildProcess;
  before(() => {
    fakeFollower = spawn('sleep', ['600'], { stdio: 'ignore' });
  });
  after(() => {
    fakeFollower?.kill();
  });

  /** Runs the front as restore_command does (FELL_THROUGH as `command` proves it ran the wrapped command). */
  const front = (args: string[], cwd: string, command?: string[], env?: NodeJS.ProcessEnv) => runShFront('walrus-prefetch-hit', args, cwd, command, env);

  /** Deletes `ask` as soon as it exists (a follower that could not answer); true when it did within 10 s. */
  async function removeAskWhenMade(ask: string): Promise<boolean> {
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 5))) {
      if (existsSync(ask)) {
        await rm(ask, { force: true });
        return true;
      }
    }
    return false;
  }

  /** A prefetched scene whose follower (a stand-in process) is alive, with the settings recorded. */
  async function followed(first: string, server: string | null = 'db1') {
    const names = segmentNames(first, 3);
    const s = await scene(names);
    const config = await unloadableConfig();
    await recordFastPathSettings(s.pgWal, config, server, 'db1', 8);
    await writeFile(join(s.dir, 'follower.pid'), String(fakeFollower.pid));
    return { ...s, names, config };
  }

  test('takes a prefetched segment in sh: DEST has its bytes, .last-requested names it, the INFO line of bin/walrus', async () => {
    const s = await followed('000000010000000000000120');
    const r = await front(['--config', s.config, '--server', 'db1', 'wal-fetch', s.names[0], 'pg_wal/RECOVERYXLOG'], s.dataDirectory, FELL_THROUGH);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '', 'the wrapped command did not run');
    assert.deepEqual(await readFile(join(s.pgWal, 'RECOVERYXLOG')), s.contents.get(s.names[0]));
    assert.ok(!existsSync(join(s.dir, s.names[0])), 'moved, not copied');
    assert.equal(await readFile(join(s.dir, '.last-requested'), 'utf8'), s.names[0]);
    assert.deepEqual(logMessages(r.stderr), [['INFO', 'promoted a prefetched WAL segment']]);
    assert.match(r.stderr, new RegExp(`DETAIL: ${s.names[0]} → pg_wal/RECOVERYXLOG\\n\\s+STRUCTURED: time=\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z pid=\\d+ action=wal-fetch seg=${s.names[0]} state=complete prefetch=hit`));
  });

  test('--config=FILE relative to the data directory, WALRUS_SERVER, --log-format json, --log-level warn', async () => {
    const s = await followed('000000010000000000000130');
    // a config inside the data directory, named relative to it (a path with .. is not normalized: full path)
    await writeFile(join(s.dataDirectory, 'fleet.yaml'), 'this: [is not a fleet\n');
    await recordFastPathSettings(s.pgWal, join(s.dataDirectory, 'fleet.yaml'), 'db1', 'db1', 8);
    const dotted = await front([`--config=../${relativePath(temp.path, s.dataDirectory)}/fleet.yaml`, 'wal-fetch', s.names[0], 'pg_wal/RECOVERYXLOG'], s.dataDirectory, FELL_THROUGH, { WALRUS_SERVER: 'db1' });
    assert.match(dotted.stdout, /^FELL-THROUGH /);
    const json = await front([`--config=fleet.yaml`, '--log-format=json', 'wal-fetch', s.names[0], 'pg_wal/RECOVERYXLOG'], s.dataDirectory, FELL_THROUGH, { WALRUS_SERVER: 'db1' });
    assert.equal(json.code, 0, json.stderr);
    assert.equal(json.stdout, '');
    const record = JSON.parse(json.stderr.trim());
    assert.deepEqual([record.level, record.message, record.seg, record.prefetch, record.detail], ['info', 'promoted a prefetched WAL segment', s.names[0], 'hit', `${s.names[0]} → pg_wal/RECOVERYXLOG`]);
    const quiet = await front(['--config', join(s.dataDirectory, 'fleet.yaml'), '--server', 'db1', '--log-level', 'warn', 'wal-fetch', s.names[1], 'pg_wal/RECOVERYXLOG'], s.dataDirectory, FELL_THROUGH);
    assert.deepEqual([quiet.code, quiet.stdout, quiet.stderr], [0, '', '']);
    assert.deepEqual(await readFile(join(s.pgWal, 'RECOVERYXLOG')), s.contents.get(s.names[1]));
  });

  for (const [why, change] of [
    ['the follower is not running', { deadFollower: true }],
    ['the config file changed after the settings were recorded', { touch: true }],
    ['another server is named', { server: 'db2' }],
    ['no server was named when the settings were recorded', { recordedServer: null }],
    ['an option it does not know is given (--debug)', { debug: true }],
    ['no settings for the sh front were recorded', { noShSettings: true }],
    ['the segment is not prefetched and the follower removes the ask unanswered (a storage error)', { other: true }],
    ['the verb is not wal-fetch', { verb: 'wal-push' }],
  ] as const) {
    test(`runs the wrapped command when ${why}`, async () => {
      const s = await followed(`0000000100000000000001${(40 + Object.keys(change).join().length).toString(16).toUpperCase().padStart(2, '0')}`, 'recordedServer' in change ? null : 'db1');
      if ('deadFollower' in change) {
        const dead = spawn('true');
        await new Promise((r) => dead.on('close', r));
        await writeFile(join(s.dir, 'follower.pid'), String(dead.pid));
      }
      if ('touch' in change) await utimes(s.config, new Date(), new Date(Date.now() + 5000));
      if ('noShSettings' in change) await rm(join(s.dir, '.fast-path.sh'));
      const name = 'other' in change ? nextSegmentName(s.names[2]) : s.names[0];
      const args = [...('debug' in change ? ['--debug'] : []), '--config', s.config, '--server', 'server' in change ? change.server : 'db1', 'verb' in change ? change.verb : 'wal-fetch', name, 'pg_wal/RECOVERYXLOG'];
      // the stand-in follower's part: take the ask away without an answer
      const unanswered = 'other' in change ? removeAskWhenMade(join(s.dir, `.ask-${name}`)) : null;
      const r = await front(args, s.dataDirectory, FELL_THROUGH);
      if (unanswered) assert.ok(await unanswered, 'the front asked the follower first');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `FELL-THROUGH ${args.join(' ')}\n`, 'the wrapped command ran with the arguments unchanged');
      assert.ok(!existsSync(join(s.pgWal, 'RECOVERYXLOG')), 'nothing was moved');
      if (!('other' in change)) assert.ok(existsSync(join(s.dir, s.names[0])), 'the prefetched segment is still there');
    });
  }

  test('a name that is neither a segment nor a history file is never taken from the prefetch directory', async () => {
    const s = await followed('000000010000000000000160');
    for (const name of ['00000001000000000000016', '../../../etc/passwd', '0000000100000000000001G0', '0000000G.history', '00000002.backup']) {
      if (!name.includes('/')) await writeFile(join(s.dir, name), 'x');
      const r = await front(['--config', s.config, '--server', 'db1', 'wal-fetch', name, 'pg_wal/RECOVERYXLOG'], s.dataDirectory, FELL_THROUGH);
      assert.match(r.stdout, /^FELL-THROUGH /, name);
    }
    assert.ok(!existsSync(join(s.pgWal, 'RECOVERYXLOG')));
  });

  test('a history file already in the prefetch directory is not taken: it is removed and the follower asked', async () => {
    const s = await followed('000000010000000000000180');
    await writeFile(join(s.dir, '00000002.history'), 'stale');
    const unanswered = removeAskWhenMade(join(s.dir, '.ask-00000002.history'));
    const r = await front(['--config', s.config, '--server', 'db1', 'wal-fetch', '00000002.history', 'pg_wal/RECOVERYXLOG'], s.dataDirectory, FELL_THROUGH);
    assert.ok(await unanswered, 'asked');
    assert.match(r.stdout, /^FELL-THROUGH /);
    assert.ok(!existsSync(join(s.dir, '00000002.history')) && !existsSync(join(s.pgWal, 'RECOVERYXLOG')));
  });

  test('falls through to bin/walrus itself, whose full path reports the config error', async () => {
    const s = await followed('000000010000000000000170');
    await writeFile(join(s.dir, 'follower.pid'), '0');
    const r = await front(['--config', s.config, '--server', 'db1', 'wal-fetch', nextSegmentName(s.names[2]), 'pg_wal/RECOVERYXLOG'], s.dataDirectory);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /config/);
  });
});
