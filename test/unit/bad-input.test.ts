/**
 * Bad input at the edges of the CLI, through the real bin/walrus: each mistake gets its exit code
 * (core/errors.ts) and one log record (an ERROR `MSG:` line, maybe with its DETAIL/HINT lines,
 * nothing else), and no stack trace unless --debug. With --debug, an internal error (a bug in a
 * storage plugin) shows its stack.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { hasStackTrace, logMessages, makeTempDirectory, runWalrus, simpleFleet, writeFleetConfig, type WalrusResult } from '../helpers/walrus-cli.js';

const SEGMENT = '000000010000000000000003';

let temp: { path: string; cleanup: () => Promise<void> };
let dataDirectory: string;
let fileConfig: string;
let unreachableConfig: string;
let buggyConfig: string;

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

before(async () => {
  temp = await makeTempDirectory('bad-input');
  dataDirectory = join(temp.path, 'data');
  await mkdir(join(dataDirectory, 'pg_wal'), { recursive: true });
  await writeFile(join(dataDirectory, 'pg_wal', SEGMENT), randomBytes(64 * 1024));
  await writeFile(join(dataDirectory, 'pg_wal', 'not-a-wal-file'), 'x');
  fileConfig = await writeFleetConfig(join(temp.path, 'file.yaml'), simpleFleet({ storage: join(temp.path, 'store'), dataDirectory }));
  unreachableConfig = await writeFleetConfig(
    join(temp.path, 'unreachable.yaml'),
    simpleFleet({
      storage: { plugin: 's3', bucket: 'walrus-nowhere', endpoint: `http://127.0.0.1:${await closedPort()}`, forcePathStyle: true, accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'not-a-real-secret', maxAttempts: 2, connectTimeoutMs: 1000 },
      dataDirectory,
    }),
  );
  // a user storage plugin with a bug: its head() throws a TypeError, not a WalrusError
  await writeFile(
    join(temp.path, 'buggy-storage.js'),
    `export const manifest = { name: 'buggy', kind: 'storage', optionsSchema: { type: 'object', additionalProperties: false, properties: {} },
  create() { return {
    put: async () => {}, get: async () => null, list: async function* () {}, delete: async () => {}, describe: (k = '') => 'buggy://' + k,
    head: async () => { const o = undefined; return o.size; },
  }; } };\n`,
  );
  buggyConfig = await writeFleetConfig(join(temp.path, 'buggy.yaml'), simpleFleet({ storage: { plugin: './buggy-storage.js' }, dataDirectory }));
});
after(async () => {
  await temp?.cleanup();
});

function walrus(args: string[], config?: string): Promise<WalrusResult> {
  // no WALRUS_CONFIG / WALRUS_SERVER from the environment running the tests
  return runWalrus(args, { config, cwd: dataDirectory, env: { WALRUS_CONFIG: '', WALRUS_SERVER: '' } });
}

/** Exactly one log record, an ERROR, matching `message`; no stack trace. */
function assertOneError(r: WalrusResult, code: number, message: RegExp) {
  assert.equal(r.code, code, `exit ${code} expected:\n${r.stderr}`);
  const records = logMessages(r.stderr);
  assert.equal(records.length, 1, `one log record:\n${r.stderr}`);
  assert.equal(records[0][0], 'ERROR');
  assert.match(records[0][1], message);
  // every stderr line belongs to that record: its MSG line or an indented DETAIL/HINT line
  for (const line of r.stderr.split('\n').filter(Boolean)) assert.match(line, /^walrus ERROR\s+MSG: |^\s+(DETAIL|HINT): |^\s{16}/, `unexpected stderr line: ${line}`);
  assert.equal(hasStackTrace(r.stderr), false, `no stack trace without --debug:\n${r.stderr}`);
  assert.equal(r.stdout, '', 'nothing on stdout');
}

describe('bad input: exit code, one ERROR record, no stack trace', () => {
  test('wal-push of a path that does not exist: exit 1 (not found)', async () => {
    assertOneError(await walrus(['wal-push', 'pg_wal/000000010000000000000099'], fileConfig), 1, /000000010000000000000099 does not exist/);
  });

  test('wal-push of a file that is not a WAL file: exit 2', async () => {
    assertOneError(await walrus(['wal-push', 'pg_wal/not-a-wal-file'], fileConfig), 2, /not a WAL file name/);
  });

  test('wal-fetch into a directory that does not exist: exit 2', async () => {
    assertOneError(await walrus(['wal-fetch', SEGMENT, 'no/such/dir/' + SEGMENT], fileConfig), 2, /no\/such\/dir does not exist/);
  });

  test('storage unreachable (S3 endpoint on a closed port, maxAttempts 2): exit 3', async () => {
    const push = await walrus(['wal-push', `pg_wal/${SEGMENT}`], unreachableConfig);
    assertOneError(push, 3, /s3:\/\/walrus-nowhere\/.*ECONNREFUSED|s3:\/\/walrus-nowhere\/.*after 2 attempt/);
    const fetch = await walrus(['wal-fetch', SEGMENT, `pg_wal/RESTORED`], unreachableConfig);
    assertOneError(fetch, 3, /s3:\/\/walrus-nowhere\//);
  });

  test('unknown verb: exit 2', async () => {
    assertOneError(await walrus(['wal-pushh', `pg_wal/${SEGMENT}`], fileConfig), 2, /unknown verb 'wal-pushh'/);
  });

  test('no --config (and no WALRUS_CONFIG): exit 2', async () => {
    assertOneError(await walrus(['wal-push', `pg_wal/${SEGMENT}`]), 2, /needs a fleet config/);
  });

  test('a bug (TypeError in a storage plugin): exit 9, the stack only with --debug', async () => {
    const plain = await walrus(['wal-push', `pg_wal/${SEGMENT}`], buggyConfig);
    assertOneError(plain, 9, /unexpected error: .*undefined/);
    assert.match(plain.stderr, /--debug/, 'the hint says how to see the stack');

    const debug = await walrus(['--debug', 'wal-push', `pg_wal/${SEGMENT}`], buggyConfig);
    assert.equal(debug.code, 9, debug.stderr);
    assert.equal(hasStackTrace(debug.stderr), true, `a stack trace with --debug:\n${debug.stderr}`);
    assert.match(debug.stderr, /buggy-storage\.js/, 'the stack points into the plugin');
  });

  test('--debug adds the stack to a usage error too; the exit code stays 2', async () => {
    const r = await walrus(['--debug', 'wal-push', 'pg_wal/not-a-wal-file'], fileConfig);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(hasStackTrace(r.stderr), true, `--debug shows where the error came from:\n${r.stderr}`);
  });
});
