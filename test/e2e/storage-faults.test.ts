/**
 * walrus's verbs through a faulty network: bin/walrus against a real S3 API server (s3rver) behind
 * test/helpers/fault-proxy.ts, which fails a share of the requests (500 InternalError, 503 SlowDown,
 * connection reset mid-body, stall past the client timeout).
 * - Some requests faulted: every command still succeeds (the SDK's retries, the plugin's resumed
 *   downloads) and the bytes come back identical.
 * - Every request faulted: every command fails in bounded time with exit 3 (STORAGE), leaving
 *   nothing in the bucket that looks complete and nothing at the destination.
 *
 * Verbs are rows of VERB_CASES (what to run, what must exist afterwards). backup-push / backup-fetch
 * need a PostgreSQL cluster and a fault switched on mid-transfer: test/e2e/backup-faults.test.ts.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startS3Server, S3RVER_CREDENTIALS, type S3TestServer } from '../helpers/s3-server.js';
import { FAULT_KINDS, startFaultProxy, type FaultKind, type FaultProxy, type ProxiedRequest } from '../helpers/fault-proxy.js';
import { makeTempDirectory, runWalrus, simpleFleet, writeFleetConfig, type WalrusResult } from '../helpers/walrus-cli.js';
import { manifest as s3Manifest } from '../../plugins/s3/index.js';
import { silentLogger } from '../../core/log.js';
import type { Storage, StorageObjectInfo } from '../../core/types.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const SEGMENT_SIZE = 16 * 1024 * 1024;
/**
 * Copied field by field: s3-server.ts hands S3RVER_CREDENTIALS itself to an S3Client, and the SDK
 * tags that object with a `$source` property, which a spread would carry into the fleet config.
 */
const CREDENTIALS = { accessKeyId: S3RVER_CREDENTIALS.accessKeyId, secretAccessKey: S3RVER_CREDENTIALS.secretAccessKey };
const FIXTURE_KEY = `${SHARED_FIXTURES}/wal-e-gpg`;
/** Small on purpose: a stall costs one timeout, a failing command maxAttempts of them. */
const FAST_S3 = { requestTimeoutMs: 1000, connectTimeoutMs: 1000, maxAttempts: 6 };
/** A failing command must end by then: a bound against hanging, not a benchmark. */
const FAILURE_BOUND_MS = 60_000;

let temp: { path: string; cleanup: () => Promise<void> };
let s3: S3TestServer;
const proxies: FaultProxy[] = [];
const direct: Storage[] = [];

before(async () => {
  temp = await makeTempDirectory('storage-faults');
  s3 = await startS3Server();
});
after(async () => {
  for (const p of proxies) await p.stop();
  for (const d of direct) await d.close?.();
  await s3?.stop();
  await temp?.cleanup();
});

async function proxy(options: Parameters<typeof startFaultProxy>[0]): Promise<FaultProxy> {
  const p = await startFaultProxy(options);
  proxies.push(p);
  return p;
}

/** The bucket as s3rver has it, without the proxy: what a reader would see. */
async function directStorage(bucket: string): Promise<Storage> {
  const storage = await s3Manifest.create(
    { bucket, endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', ...CREDENTIALS },
    { log: silentLogger, configDirectory: temp.path, instanceName: 'direct' },
  );
  direct.push(storage);
  return storage;
}

async function listAll(storage: Storage, prefix = ''): Promise<StorageObjectInfo[]> {
  const out: StorageObjectInfo[] = [];
  for await (const o of storage.list(prefix)) out.push(o);
  return out.sort((a, b) => a.key.localeCompare(b.key));
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function segmentName(n: number): string {
  return `00000001000000000000${n.toString(16).toUpperCase().padStart(4, '0')}`;
}

interface Site {
  work: string;
  dataDirectory: string;
  pgWal: string;
  config: string;
  bucket: string;
}

/** A fake data directory with pg_wal/, a fleet config using the s3 plugin at `endpoint`, lzo + gpg (the WAL-E fixture key). */
async function site(label: string, endpoint: string, bucket?: string): Promise<Site> {
  const work = join(temp.path, label);
  const dataDirectory = join(work, 'data');
  const pgWal = join(dataDirectory, 'pg_wal');
  await mkdir(pgWal, { recursive: true });
  const b = bucket ?? (await s3.bucket());
  const config = await writeFleetConfig(
    join(work, 'fleet.yaml'),
    simpleFleet({
      storage: { plugin: 's3', bucket: b, endpoint, forcePathStyle: true, ...CREDENTIALS, ...FAST_S3 },
      dataDirectory,
      prefix: 'db1',
      gpgKey: { publicKey: `\${file:${FIXTURE_KEY}/public-key.asc}`, secretKey: `\${file:${FIXTURE_KEY}/secret-key.asc}`, passphrase: `\${file:${FIXTURE_KEY}/passphrase.txt}` },
    }),
  );
  return { work, dataDirectory, pgWal, config, bucket: b };
}

/** Random bytes: lzo cannot shrink them, so each object is a multipart upload of several parts. */
async function writeSegment(s: Site, name: string): Promise<string> {
  const content = randomBytes(SEGMENT_SIZE);
  await writeFile(join(s.pgWal, name), content);
  return createHash('sha256').update(content).digest('hex');
}

function walrus(s: Site, args: string[]): Promise<WalrusResult> {
  return runWalrus(['--log-level', 'debug', ...args], { config: s.config, server: 'db1', cwd: s.dataDirectory, timeoutMs: FAILURE_BOUND_MS });
}

/** One verb under faults: how to run it against a site, and how to check what it left behind. */
interface VerbCase {
  verb: string;
  /** Writes to storage (a push): the 'uploads-only' faults apply to it. */
  writes: boolean;
  /** Set up what the verb needs (a segment to push, an archived object to fetch); returns the args. */
  prepare(s: Site, healthy: Site): Promise<string[]>;
  /** After a failure: nothing complete in storage, nothing at the destination. */
  assertNothingLeft(s: Site, args: string[]): Promise<void>;
}

/** UploadPart of part 2 or later, or CompleteMultipartUpload. */
function isLaterPartOrCompletion(r: ProxiedRequest): boolean {
  const query = new URLSearchParams(r.url.split('?')[1] ?? '');
  if (!query.has('uploadId')) return false;
  if (r.method === 'POST') return true;
  return r.method === 'PUT' && Number(query.get('partNumber')) >= 2;
}

const walObjectKey = (name: string) => `db1/wal_005/${name}.lzo`;
let nextSegment = 0x10;

const VERB_CASES: VerbCase[] = [
  {
    verb: 'wal-push',
    writes: true,
    async prepare(s) {
      const name = segmentName(nextSegment++);
      await writeSegment(s, name);
      return ['wal-push', `pg_wal/${name}`];
    },
    async assertNothingLeft(s, args) {
      const name = args[1].split('/').pop()!;
      const storage = await directStorage(s.bucket);
      assert.equal(await storage.head(walObjectKey(name)), null, `${name}: no object visible after a failed push`);
      assert.deepEqual(await listAll(storage, 'db1/'), [], 'nothing listed under the prefix');
    },
  },
  {
    verb: 'wal-fetch',
    writes: false,
    async prepare(s, healthy) {
      // archived through a healthy path into the same bucket, fetched through the faulty one; a
      // small timeline history file: what fails here is the storage, the size does not matter
      const name = `${(nextSegment++).toString(16).toUpperCase().padStart(8, '0')}.history`;
      await writeFile(join(healthy.pgWal, name), '1\t0/3000000\tno recovery target specified\n');
      const pushed = await walrus(healthy, ['wal-push', `pg_wal/${name}`]);
      assert.equal(pushed.code, 0, pushed.stderr);
      return ['wal-fetch', name, `pg_wal/RESTORED_${name}`];
    },
    async assertNothingLeft(s, args) {
      assert.notEqual(await (await directStorage(s.bucket)).head(walObjectKey(args[1])), null, 'the archived object is untouched');
      const dest = join(s.dataDirectory, args[2]);
      assert.equal(existsSync(dest), false, `${args[2]} must not exist after a failed fetch`);
      const leftovers = (await readdir(s.pgWal)).filter((f) => f.includes('walrus-partial'));
      assert.deepEqual(leftovers, [], 'the temp file beside DEST was removed');
    },
  },
  // backup-push / backup-fetch: test/e2e/backup-faults.test.ts (they need a cluster, and faults that
  // start once the transfer is under way).
];

// The two suites, and the cases of the second, run at the same time: most of their time is spent
// waiting (backoff, stalls), and the file must stay well under a minute.
describe('storage faults', { concurrency: true }, () => {
describe('WAL verbs with 15 % of S3 requests faulted (500, 503, reset mid-body, stall)', () => {
  test('every wal-push and wal-fetch succeeds, the bytes come back identical, and the log shows the retries', async () => {
    // Seeds picked so that each phase meets the faults it is about (the PRNG sequence is fixed):
    // the pushes all four kinds, the fetches a reset mid-body first (resumed with a Range request).
    const faulty = await proxy({ target: s3.endpoint, faultFraction: 0.15, seed: 27, stallMs: 3000 });
    const s = await site('some-faults', faulty.endpoint);
    const segments: Array<{ name: string; sha256: string }> = [];
    for (let i = 0; i < 3; i++) {
      const name = segmentName(i + 1);
      segments.push({ name, sha256: await writeSegment(s, name) });
    }
    let pushLog = '';
    for (const { name } of segments) {
      const r = await walrus(s, ['wal-push', `pg_wal/${name}`]);
      pushLog += r.stderr;
      assert.equal(r.code, 0, `wal-push ${name}: ${r.stderr}`);
      assert.match(r.stderr, /completed archiving to a file/);
    }
    const pushed = { ...faulty.stats, byKind: { ...faulty.stats.byKind } };
    for (const kind of FAULT_KINDS) assert.ok(pushed.byKind[kind] >= 1, `pushes met a ${kind} fault (${JSON.stringify(pushed.byKind)})`);
    assert.match(pushLog, /succeeded after \d+ attempts|retries of its completion/, 'the log mentions the retries');

    const storage = await directStorage(s.bucket);
    const listed = await listAll(storage, 'db1/');
    assert.deepEqual(listed.map((o) => o.key), segments.map((g) => walObjectKey(g.name)));
    assert.ok(listed.every((o) => o.size > SEGMENT_SIZE), 'random segments do not compress; each object holds a whole segment');

    faulty.resetStats();
    faulty.configure({ seed: 19, kinds: ['reset', 'error500', 'slowdown503', 'stall'] });
    let fetchLog = '';
    for (const { name, sha256 } of segments) {
      const r = await walrus(s, ['wal-fetch', name, `pg_wal/RESTORED_${name}`]);
      fetchLog += r.stderr;
      assert.equal(r.code, 0, `wal-fetch ${name}: ${r.stderr}`);
      assert.equal(await sha256File(join(s.pgWal, `RESTORED_${name}`)), sha256, `${name} came back different`);
    }
    assert.deepEqual((await readdir(s.pgWal)).filter((f) => f.startsWith('.') && f !== '.walrus'), [], 'no temp files left');
    assert.ok(faulty.stats.byKind.reset >= 1, `a download was cut mid-body (${JSON.stringify(faulty.stats.byKind)})`);
    assert.match(fetchLog, /broke off, resuming/, 'the log mentions the resumed download');

    const requests = pushed.requests + faulty.stats.requests;
    const faults = pushed.faults + faulty.stats.faults;
    assert.ok(faults / requests >= 0.1 && faults / requests <= 0.25, `10-20 % faulted: ${faults} of ${requests}`);
    process.stderr.write(`# some faults: ${requests} requests, ${faults} faulted; pushes ${JSON.stringify(pushed.byKind)}, fetches ${JSON.stringify(faulty.stats.byKind)}\n`);
  });
});

describe('WAL verbs with every S3 request faulted', { concurrency: true }, () => {
  const kinds: Array<FaultKind | 'later-parts'> = [...FAULT_KINDS, 'later-parts'];
  for (const kind of kinds) {
    test(`${kind}: each verb fails in bounded time with exit 3, nothing complete in the bucket, nothing at DEST`, async () => {
      // 'later-parts': a multipart upload starts and its first part is stored, then every other part
      // and the completion fail (all kinds in turn): the push fails with parts already in the bucket
      const faulty =
        kind === 'later-parts'
          ? await proxy({ target: s3.endpoint, faultFraction: 1, kinds: FAULT_KINDS, match: isLaterPartOrCompletion, stallMs: 3000 })
          : await proxy({ target: s3.endpoint, faultFraction: 1, kinds: [kind], stallMs: 3000 });
      // with only uploads failing, reading verbs would succeed: they are not part of that case
      const cases = kind === 'later-parts' ? VERB_CASES.filter((c) => c.writes) : VERB_CASES;
      const runs = cases.map(async (c) => {
        const bucket = await s3.bucket();
        const s = await site(`all-${kind}-${c.verb}`, faulty.endpoint, bucket);
        const healthy = await site(`all-${kind}-${c.verb}-healthy`, s3.endpoint, bucket);
        const args = await c.prepare(s, healthy);
        const before = faulty.stats.requests;
        const r = await walrus(s, args); // rejects past FAILURE_BOUND_MS
        assert.equal(r.code, 3, `${c.verb} under ${kind}: expected exit 3 (STORAGE), got ${r.code}: ${r.stderr}`);
        assert.match(r.stderr, /walrus ERROR\s+MSG: .*s3:\/\//, 'one ERROR naming the object');
        assert.match(r.stderr, /after 6 attempt/, 'every attempt was made');
        assert.ok(faulty.stats.requests > before, 'the requests went through the proxy');
        await c.assertNothingLeft(s, args);
      });
      await Promise.all(runs);
    });
  }
});
});
