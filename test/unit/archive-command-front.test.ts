/**
 * archive_command's sh front (bin/walrus-push-hit): a wal-push that finds more segments ready pushes
 * them ahead and records each; PostgreSQL's later call for one of them is answered by sh without
 * node, and only when the record names this very file, the same config (unchanged) and server.
 * Anything else runs the wrapped command unchanged. Through the real bin/walrus and file storage.
 *
 * To tell the paths apart the front is given `/bin/echo FELL-THROUGH` as the command it wraps:
 * output on stdout proves it fell through; none, with exit 0, proves it answered itself.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FELL_THROUGH, logMessages, makeTempDirectory, runShFront, segmentNames, simpleFleet, writeFleetConfig } from '../helpers/walrus-cli.js';


let temp: { path: string; cleanup: () => Promise<void> };
let n = 0;

before(async () => {
  temp = await makeTempDirectory('push-front');
});
after(async () => {
  await temp.cleanup();
});


/** A data directory whose pg_wal holds `count` ready segments (small fake ones), a file storage and a config. */
async function scene(first: string, count: number, poolSize = 2) {
  const dataDirectory = join(temp.path, `data${++n}`);
  const pgWal = join(dataDirectory, 'pg_wal');
  await mkdir(join(pgWal, 'archive_status'), { recursive: true });
  const names = segmentNames(first, count);
  for (const name of names) {
    await writeFile(join(pgWal, name), randomBytes(64 * 1024));
    await writeFile(join(pgWal, 'archive_status', `${name}.ready`), '');
  }
  const store = join(temp.path, `store${n}`);
  const config = await writeFleetConfig(join(temp.path, `fleet${n}.yaml`), simpleFleet({ storage: store, dataDirectory, poolSize, server: 'db1' }));
  const pushed = join(pgWal, '.walrus', 'pushed');
  const archived = async () => (await readdir(join(store, 'wal_005')).catch(() => [] as string[])).sort();
  return { dataDirectory, pgWal, names, store, config, pushed, archived };
}

/** Runs the front as PostgreSQL runs archive_command: in the data directory, %p = pg_wal/NAME. */
const front = (args: string[], cwd: string, command?: string[]) => runShFront('walrus-push-hit', args, cwd, command);

const push = (s: { config: string }, name: string, extra: string[] = []) => [...extra, '--config', s.config, '--server', 'db1', 'wal-push', `pg_wal/${name}`];

describe("archive_command's sh front (bin/walrus-push-hit)", () => {
  test('wal-push pushes the ready segments ahead and records them; the next calls are answered in sh, each record then removed', async () => {
    const s = await scene('000000010000000000000010', 5, 2);
    const first = await front(push(s, s.names[0]), s.dataDirectory);
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(await s.archived(), s.names.map((x) => `${x}.lzo`), 'the asked-for segment and the 4 ready after it (poolSize 2: up to 7 ahead)');
    assert.deepEqual((await readdir(s.pushed)).sort(), ['.fast-path.sh', ...s.names.slice(1)]);
    assert.equal(await readFile(join(s.pushed, '.fast-path.sh'), 'utf8'), `${s.config}\ndb1\n`);
    for (const name of s.names.slice(1)) {
      const r = await front(push(s, name), s.dataDirectory, FELL_THROUGH);
      assert.deepEqual([r.code, r.stdout], [0, ''], `${name} answered in sh: ${r.stderr}`);
      assert.deepEqual(logMessages(r.stderr), [['INFO', 'WAL file was already archived by a parallel push']]);
      assert.match(r.stderr, new RegExp(`STRUCTURED: time=\\S+ pid=\\d+ action=push-wal seg=${name} state=complete ahead=true`));
      assert.ok(!existsSync(join(s.pushed, name)), 'its record is removed');
    }
    // a record is used once: asked again, the full path checks the archive itself
    const again = await front(push(s, s.names[1]), s.dataDirectory, FELL_THROUGH);
    assert.match(again.stdout, /^FELL-THROUGH /);
  });

  test('--log-format json prints one JSON record; --log-level warn prints nothing', async () => {
    const s = await scene('000000010000000000000020', 3, 2);
    assert.equal((await front(push(s, s.names[0]), s.dataDirectory)).code, 0);
    const json = await front(push(s, s.names[1], ['--log-format=json']), s.dataDirectory, FELL_THROUGH);
    assert.deepEqual([json.code, json.stdout], [0, '']);
    const record = JSON.parse(json.stderr.trim());
    assert.deepEqual([record.level, record.message, record.action, record.seg, record.state, record.ahead], ['info', 'WAL file was already archived by a parallel push', 'push-wal', s.names[1], 'complete', true]);
    const quiet = await front(push(s, s.names[2], ['--log-level', 'warn']), s.dataDirectory, FELL_THROUGH);
    assert.deepEqual([quiet.code, quiet.stdout, quiet.stderr], [0, '', '']);
  });

  test('poolSize 1 pushes nothing ahead and records nothing: every call is the full wal-push', async () => {
    const s = await scene('000000010000000000000030', 3, 1);
    assert.equal((await front(push(s, s.names[0]), s.dataDirectory)).code, 0);
    assert.deepEqual(await s.archived(), [`${s.names[0]}.lzo`]);
    assert.ok(!existsSync(s.pushed));
    assert.match((await front(push(s, s.names[1]), s.dataDirectory, FELL_THROUGH)).stdout, /^FELL-THROUGH /);
  });

  for (const [why, change] of [
    ['the segment file is not the one pushed (another size)', { rewrite: true }],
    ['the segment file was modified after it was pushed', { touchSegment: true }],
    ['the config file changed after the segment was pushed', { touchConfig: true }],
    ['another server is named', { server: 'db2' }],
    ['another config file is named', { otherConfig: true }],
    ['an option it does not know is given (--debug)', { debug: true }],
    ['the verb is not wal-push', { verb: 'wal-fetch' }],
    ['there is no record for the segment', { noRecord: true }],
    ['the record is not in the line format (an older walrus wrote JSON)', { json: true }],
    ['no settings for the sh front were recorded', { noSettings: true }],
  ] as const) {
    test(`runs the wrapped command unchanged when ${why}`, async () => {
      const s = await scene(`0000000100000000000001${(n + 10).toString(16).toUpperCase().padStart(2, '0')}`, 2, 2);
      assert.equal((await front(push(s, s.names[0]), s.dataDirectory)).code, 0);
      const name = s.names[1];
      assert.ok(existsSync(join(s.pushed, name)), 'recorded');
      const later = new Date(Date.now() + 5000);
      if ('rewrite' in change) await writeFile(join(s.pgWal, name), randomBytes(1000));
      if ('touchSegment' in change) await utimes(join(s.pgWal, name), later, later);
      if ('touchConfig' in change) await utimes(s.config, later, later);
      if ('noRecord' in change) await rm(join(s.pushed, name));
      if ('json' in change) await writeFile(join(s.pushed, name), JSON.stringify({ ino: 1, size: 2, mtimeMs: 3, sha256: '', key: 'k' }));
      if ('noSettings' in change) await rm(join(s.pushed, '.fast-path.sh'));
      let config = s.config;
      if ('otherConfig' in change) {
        config = join(temp.path, `other${n}.yaml`);
        await writeFile(config, await readFile(s.config));
      }
      const args = [...('debug' in change ? ['--debug'] : []), '--config', config, '--server', 'server' in change ? change.server : 'db1', 'verb' in change ? change.verb : 'wal-push', `pg_wal/${name}`];
      const r = await front(args, s.dataDirectory, FELL_THROUGH);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `FELL-THROUGH ${args.join(' ')}\n`, 'the wrapped command ran with the arguments unchanged');
      if (!('noRecord' in change)) assert.ok(existsSync(join(s.pushed, name)), 'the record is left for the full path to judge');
    });
  }

  test('names that are not segments (history, backup label, partial, paths) always run the wrapped command', async () => {
    const s = await scene('000000010000000000000040', 2, 2);
    assert.equal((await front(push(s, s.names[0]), s.dataDirectory)).code, 0);
    for (const name of ['00000002.history', `${s.names[1]}.00000028.backup`, `${s.names[1]}.partial`, '0000000100000000000000G1', '00000001000000000000004']) {
      await writeFile(join(s.pushed, name), await readFile(join(s.pushed, s.names[1])));
      const r = await front(push(s, name), s.dataDirectory, FELL_THROUGH);
      assert.match(r.stdout, /^FELL-THROUGH /, name);
    }
  });

  test('a record whose file changed falls through to bin/walrus, which archives nothing wrong: it refuses the different content', async () => {
    const s = await scene('000000010000000000000050', 2, 2);
    assert.equal((await front(push(s, s.names[0]), s.dataDirectory)).code, 0);
    await writeFile(join(s.pgWal, s.names[1]), randomBytes(64 * 1024)); // same size, other content, new mtime
    const r = await front(push(s, s.names[1]), s.dataDirectory);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /already archived .* with different content/);
  });
});
