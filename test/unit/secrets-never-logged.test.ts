/**
 * No secret ever reaches walrus's output. A fleet config takes the GPG passphrase from ${env:},
 * the armored secret key from ${file:}, the S3 credentials from ${env:}; the real bin/walrus runs
 * wal-push, wal-fetch, config check, a wal-fetch with a wrong passphrase and a wal-push with wrong
 * S3 credentials, at --log-level debug and with --debug, in text and JSON log formats. stdout and stderr
 * of every run are searched for each secret, as written and as JSON would escape it.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { createLogger, type LogFormat } from '../../core/log.js';
import { startS3Server, type S3TestServer } from '../helpers/s3-server.js';
import { makeTempDirectory, runWalrus, writeFleetConfig, type WalrusResult } from '../helpers/walrus-cli.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const FIXTURE_KEY = `${SHARED_FIXTURES}/wal-e-gpg`;
const SEGMENT = '000000010000000000000007';
/** s3rver knows only this key pair; the secret equals the key id, so neither may appear. */
const S3_ACCESS_KEY_ID = 'S3RVER';
const S3_SECRET = 'S3RVER';
/** Wrong values, with characters JSON escapes: a leak in a JSON log line would not match them as written. */
const WRONG_PASSPHRASE = `wrong"pass\\phrase-${randomBytes(6).toString('hex')}`;
const WRONG_S3_SECRET = `wrong/S3+secret"${randomBytes(8).toString('base64url')}`;
/** s3rver does not check SigV4 signatures, only that the key id exists: an unknown one makes the request fail. */
const WRONG_S3_ACCESS_KEY_ID = `AKIAWRONG${randomBytes(6).toString('hex').toUpperCase()}`;

let temp: { path: string; cleanup: () => Promise<void> };
let s3: S3TestServer;
let passphrase: string;
let secretKeyLines: string[];
let dataDirectory: string;
let config: string;

before(async () => {
  temp = await makeTempDirectory('secrets');
  s3 = await startS3Server();
  passphrase = (await readFile(join(FIXTURE_KEY, 'passphrase.txt'), 'utf8')).trim();
  const armored = await readFile(join(FIXTURE_KEY, 'secret-key.asc'), 'utf8');
  // the base64 body of the armored key (header and footer lines are not secret)
  secretKeyLines = armored
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length >= 16 && !l.startsWith('-----') && !/^[A-Za-z]+: /.test(l));
  assert.ok(secretKeyLines.length > 20, 'the armored secret key has its body lines');

  dataDirectory = join(temp.path, 'data');
  await mkdir(join(dataDirectory, 'pg_wal'), { recursive: true });
  await writeFile(join(dataDirectory, 'pg_wal', SEGMENT), randomBytes(1024 * 1024));
  const bucket = await s3.bucket();
  config = await writeFleetConfig(join(temp.path, 'fleet.yaml'), {
    version: 1,
    storages: {
      main: {
        plugin: 's3',
        bucket,
        endpoint: s3.endpoint,
        forcePathStyle: true,
        accessKeyId: '${env:TEST_S3_ACCESS_KEY_ID}',
        secretAccessKey: '${env:TEST_S3_SECRET_ACCESS_KEY}',
        maxAttempts: 2,
        requestTimeoutMs: 2000,
      },
    },
    keys: {
      ops: {
        plugin: 'gpg',
        publicKey: `\${file:${FIXTURE_KEY}/public-key.asc}`,
        secretKey: `\${file:${FIXTURE_KEY}/secret-key.asc}`,
        passphrase: '${env:TEST_GPG_PASSPHRASE}',
      },
    },
    defaults: { storage: 'main', compression: 'lzo', encryption: 'ops', poolSize: 1, prefetch: 0 },
    servers: { db1: { dataDirectory, prefix: 'db1' } },
  });
});
after(async () => {
  await s3?.stop();
  await temp?.cleanup();
});

const goodEnv = () => ({ TEST_S3_ACCESS_KEY_ID: S3_ACCESS_KEY_ID, TEST_S3_SECRET_ACCESS_KEY: S3_SECRET, TEST_GPG_PASSPHRASE: passphrase });

/** Each secret as written, and as JSON.stringify would write it inside a string. */
function forms(secret: string): string[] {
  return [...new Set([secret, JSON.stringify(secret).slice(1, -1)])];
}

function assertNoSecrets(r: WalrusResult, what: string) {
  const output = r.stdout + r.stderr;
  const secrets: Array<[string, string]> = [
    ['GPG passphrase', passphrase],
    ['wrong GPG passphrase', WRONG_PASSPHRASE],
    ['S3 secret', S3_SECRET],
    ['wrong S3 secret', WRONG_S3_SECRET],
    ...secretKeyLines.map((l, i): [string, string] => [`secret key line ${i + 1}`, l]),
  ];
  for (const [name, value] of secrets)
    for (const form of forms(value)) assert.ok(!output.includes(form), `${what}: the ${name} appears in the output:\n${output}`);
}

const MODES: Array<{ name: string; flags: string[] }> = [
  { name: 'text, --log-level debug', flags: ['--log-level', 'debug'] },
  { name: 'json, --log-level debug', flags: ['--log-format', 'json', '--log-level', 'debug'] },
  { name: 'text, --debug', flags: ['--debug'] },
  { name: 'json, --debug', flags: ['--log-format', 'json', '--debug'] },
];

// two modes at a time: the runs mostly wait on child processes
describe('secrets never appear in stdout or stderr', { concurrency: 2 }, () => {
  for (const mode of MODES) {
    test(mode.name, async () => {
      const run = (args: string[], env = goodEnv()) => runWalrus([...mode.flags, ...args], { config, server: 'db1', cwd: dataDirectory, env });
      const results: Array<[string, WalrusResult]> = [];

      // the first push archives; later ones find it archived and read it back to compare (decrypts)
      const push = await run(['wal-push', `pg_wal/${SEGMENT}`]);
      assert.equal(push.code, 0, push.stderr);
      results.push(['wal-push', push]);

      const dest = `pg_wal/RESTORED_${mode.flags.join('_').replace(/\W+/g, '')}`;
      const fetch = await run(['wal-fetch', SEGMENT, dest]);
      assert.equal(fetch.code, 0, fetch.stderr);
      assert.deepEqual(await readFile(join(dataDirectory, dest)), await readFile(join(dataDirectory, 'pg_wal', SEGMENT)));
      results.push(['wal-fetch', fetch]);

      const check = await run(['config', 'check']);
      assert.equal(check.code, 0, check.stderr);
      assert.match(check.stdout, /valid, 1 server/);
      results.push(['config check', check]);
      const checkJson = await run(['config', 'check', '--json']);
      assert.equal(checkJson.code, 0, checkJson.stderr);
      results.push(['config check --json', checkJson]);

      const wrongPassphrase = await run(['wal-fetch', SEGMENT, `${dest}_wrong`], { ...goodEnv(), TEST_GPG_PASSPHRASE: WRONG_PASSPHRASE });
      assert.equal(wrongPassphrase.code, 6, `wrong passphrase is a KEY error (exit 6): ${wrongPassphrase.stderr}`);
      results.push(['wal-fetch with a wrong passphrase', wrongPassphrase]);

      const wrongS3Secret = await run(['wal-push', `pg_wal/${SEGMENT}`], { ...goodEnv(), TEST_S3_ACCESS_KEY_ID: WRONG_S3_ACCESS_KEY_ID, TEST_S3_SECRET_ACCESS_KEY: WRONG_S3_SECRET });
      assert.equal(wrongS3Secret.code, 3, `wrong S3 credentials are a STORAGE error (exit 3): ${wrongS3Secret.stderr}`);
      results.push(['wal-push with wrong S3 credentials', wrongS3Secret]);

      for (const [what, r] of results) {
        assert.ok(r.stdout.length + r.stderr.length > 0, `${what} wrote something`);
        assertNoSecrets(r, `${mode.name}: ${what}`);
      }
    });
  }
});

describe('the logger masks registered secrets in every field, in both formats', () => {
  // characters JSON escapes, and a multi-line value: masking after encoding would miss them
  const secrets = ['pa"ss\\word-1', 'tab\tand\nnewline-secret-value', 'plain-secret-value'];
  for (const format of ['text', 'json'] as LogFormat[]) {
    test(format, async () => {
      const stream = new PassThrough();
      let output = '';
      stream.on('data', (d) => (output += d));
      const log = createLogger({ format, level: 'debug', stream });
      log.addSecrets(secrets);
      for (const secret of secrets) {
        log.error(`failed with ${secret} inside`, { detail: `detail ${secret}`, hint: `hint ${secret}`, structured: { action: 'test', value: secret } });
        log.debug(secret);
      }
      await new Promise((resolve) => setImmediate(resolve));
      assert.match(output, /\*{8}/, 'the mask is there');
      for (const secret of secrets)
        for (const form of [...forms(secret), ...secret.split('\n')])
          assert.ok(!output.includes(form), `${format}: ${JSON.stringify(secret)} appears as ${JSON.stringify(form)}:\n${output}`);
    });
  }
});
