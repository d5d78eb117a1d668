/**
 * The s3 storage plugin against a real S3 API server (s3rver in a child process):
 * the shared storage contract, then failures specific to S3.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, Socket as NetSocket, type Server, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import { storageContract, readAll, generatedStream } from './storage.js';
import { startS3Server, S3RVER_CREDENTIALS, type S3TestServer } from '../helpers/s3-server.js';
import { manifest, type S3StorageOptions } from '../../plugins/s3/index.js';
import { silentLogger, type Logger } from '../../core/log.js';
import { WalrusError } from '../../core/errors.js';
import type { Storage } from '../../core/types.js';

let server: S3TestServer | undefined;
let starting: Promise<S3TestServer> | undefined;
/** One server for the whole file, started by whichever suite needs it first. */
const s3Server = () => (starting ??= startS3Server().then((s) => (server = s)));
after(async () => {
  await server?.stop();
});

async function createS3(options: Partial<S3StorageOptions> & { bucket: string }, log: Logger = silentLogger): Promise<Storage> {
  return manifest.create(
    { region: 'us-east-1', forcePathStyle: true, ...S3RVER_CREDENTIALS, ...options },
    { log, configDirectory: process.cwd(), instanceName: 'test' },
  );
}

storageContract('s3', async () => {
  const s3 = await s3Server();
  const bucket = await s3.bucket();
  // 5 MB parts, 2 at a time: the suite's 40 MB memory bound on a 50 MB put must hold.
  const storage = await createS3({ bucket, endpoint: s3.endpoint, partSizeMB: 5, uploadConcurrency: 2 });
  return { storage, cleanup: async () => {} };
});

/** A TCP server that accepts connections and then does whatever `onConnection` says. */
async function tcpServer(onConnection: (socket: Socket) => void): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    onConnection(socket);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        srv.close(() => resolve());
      }),
  };
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const t = await tcpServer(() => {});
  await t.close();
  return t.port;
}

async function assertStorageError(promise: Promise<unknown>, pattern: RegExp): Promise<WalrusError> {
  let caught: unknown;
  await assert.rejects(promise, (e) => ((caught = e), true));
  assert.ok(caught instanceof WalrusError, `expected a WalrusError, got ${String(caught)}`);
  assert.equal(caught.kind, 'STORAGE', caught.message);
  assert.match(caught.message, pattern);
  return caught;
}

describe('s3 storage: failures', { timeout: 60_000 }, () => {
  it('an unreachable endpoint is a STORAGE error after the configured attempts', async () => {
    const port = await closedPort();
    const s = await createS3({ bucket: 'walrus-unreachable', endpoint: `http://127.0.0.1:${port}`, maxAttempts: 2 });
    try {
      const e = await assertStorageError(s.head('db1/wal_005/x.lzo'), /s3:\/\/walrus-unreachable\/db1\/wal_005\/x\.lzo/);
      assert.match(e.message, /ECONNREFUSED/);
      assert.match(e.message, /after 2 attempt/);
      await assertStorageError(s.put('k', Readable.from([Buffer.from('x')])), /upload of s3:\/\/walrus-unreachable\/k failed/);
      await assertStorageError(s.get('k'), /download/);
      await assertStorageError(readAllKeys(s, 'p/'), /list/);
      await assertStorageError(s.delete(['a', 'b']), /delete/);
    } finally {
      await s.close?.();
    }
  });

  it('a server that accepts but never answers fails after requestTimeoutMs instead of hanging', async () => {
    let connections = 0;
    const silent = await tcpServer(() => connections++);
    const s = await createS3({ bucket: 'walrus-stalled', endpoint: `http://127.0.0.1:${silent.port}`, maxAttempts: 2, requestTimeoutMs: 300 });
    try {
      const e = await assertStorageError(s.head('k'), /s3:\/\/walrus-stalled\/k/);
      assert.match(e.message, /TimeoutError/);
      assert.equal(connections, 2, 'the stalled request was retried once (maxAttempts 2)');
    } finally {
      await s.close?.();
      await silent.close();
    }
  });

  it('a missing bucket is a STORAGE error that names the bucket', async () => {
    const s3 = await s3Server();
    const s = await createS3({ bucket: `walrus-missing-${randomBytes(3).toString('hex')}`, endpoint: s3.endpoint });
    try {
      const e = await assertStorageError(s.put('db1/x', Readable.from([Buffer.from('x')])), /bucket 'walrus-missing-[0-9a-f]+' does not exist/);
      assert.match(e.hint ?? '', /bucket name/);
      await assertStorageError(s.get('db1/x'), /does not exist/);
      await assertStorageError(readAllKeys(s, 'db1/'), /does not exist/);
    } finally {
      await s.close?.();
    }
  });

  it('wrong credentials are a STORAGE error without the secret in it', async () => {
    const s3 = await s3Server();
    const bucket = await s3.bucket();
    const secret = 'not-the-right-secret-0123456789';
    // s3rver checks the access key id of a SigV4 request but not its signature: a wrong key id it is.
    const s = await createS3({ bucket, endpoint: s3.endpoint, accessKeyId: 'WALRUSWRONGKEY', secretAccessKey: secret, maxAttempts: 1 });
    try {
      const e = await assertStorageError(s.put('k', Readable.from([Buffer.from('x')])), /upload of/);
      assert.match(e.message, /InvalidAccessKeyId/);
      assert.match(e.hint ?? '', /credentials/);
      assert.ok(!`${e.message} ${e.detail ?? ''} ${e.hint ?? ''}`.includes(secret), 'the secret appears in the error');
    } finally {
      await s.close?.();
    }
  });

  it('a download that breaks off mid-body is resumed, and one that cannot be resumed is an error, not a short success', async () => {
    const s3 = await s3Server();
    const bucket = await s3.bucket();
    const size = 6 * 1024 * 1024; // 1 MB per cut connection x 3 attempts < 6 MB
    const direct = await createS3({ bucket, endpoint: s3.endpoint });
    const { stream, digest } = generatedStream(size, 7);
    await direct.put('big', stream);
    const expected = await digest;
    await direct.close?.();

    // A proxy that cuts the next `cuts` responses after ~1 MB of each. Counted per response, not
    // per connection: the SDK reuses keep-alive connections.
    let cuts = 0;
    const proxy = await tcpServer((client) => {
      const upstream = new NetSocket();
      upstream.connect(s3.port, '127.0.0.1');
      let responseBytes = 0;
      client.on('data', (d: Buffer) => {
        responseBytes = 0; // a new request on this connection
        upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => {
        responseBytes += d.length;
        client.write(d);
        if (cuts > 0 && responseBytes > 1024 * 1024) {
          cuts--;
          client.destroy();
          upstream.destroy();
        }
      });
      upstream.on('end', () => client.end());
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
    });
    const s = await createS3({ bucket, endpoint: `http://127.0.0.1:${proxy.port}`, maxAttempts: 3 });
    try {
      cuts = 1;
      const body = await s.get('big');
      assert.ok(body);
      const data = await readAll(body);
      assert.equal(data.length, size);
      assert.equal(createHash('sha256').update(data).digest('hex'), expected);

      cuts = 100; // every connection is cut: the retries run out
      const failing = await s.get('big');
      assert.ok(failing);
      await assertStorageError(readAll(failing), /download of s3:\/\/.*\/big failed/);
    } finally {
      await s.close?.();
      await proxy.close();
    }
  });
});

async function readAllKeys(s: Storage, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of s.list(prefix)) keys.push(o.key);
  return keys;
}

describe('s3 storage: process warnings', () => {
  it("silences only the SDK's NodeVersionSupportWarning, not other warnings", async () => {
    const { spawnSync } = await import('node:child_process');
    const { fileURLToPath } = await import('node:url');
    const pluginUrl = new URL('../../plugins/s3/index.ts', import.meta.url).href;
    const logUrl = new URL('../../core/log.ts', import.meta.url).href;
    const script = `
      const { manifest } = await import(${JSON.stringify(pluginUrl)});
      const { silentLogger } = await import(${JSON.stringify(logUrl)});
      const s = await manifest.create({ bucket: 'walrus-warnings', region: 'us-east-1' }, { log: silentLogger, configDirectory: '.', instanceName: 't' });
      await s.close();
      process.emitWarning('walrus-test-other-warning');
    `;
    const env = { ...process.env };
    delete env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      env,
      encoding: 'utf8',
    });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stderr, /walrus-test-other-warning/);
    if (Number(process.versions.node.split('.')[0]) < 22) assert.doesNotMatch(run.stderr, /NodeVersionSupportWarning/);
  });
});
