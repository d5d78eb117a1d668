/**
 * A real S3 API server for tests: s3rver in a child process on 127.0.0.1.
 *
 * A child process, not in-process, because ListObjectsV2 past 1000 keys needs
 * `node --openssl-legacy-provider` (s3rver's continuation token uses a cipher OpenSSL 3
 * disables) and that flag must not leak into the process under test. The child exits when
 * its stdin closes, so a test runner that dies without calling stop() does not leave it behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** s3rver's built-in credentials. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export interface S3TestServer {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  port: number;
  /** Creates a bucket (a fresh random name when none is given) and returns its name. */
  bucket(name?: string): Promise<string>;
  /** Kills the server and removes its data directory. Safe to call twice. */
  stop(): Promise<void>;
}

const SERVER_SCRIPT = `
const S3rver = require(process.env.S3RVER_MODULE);
const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: process.env.S3RVER_DIRECTORY });
server.run().then(
  (address) => process.stdout.write(JSON.stringify({ port: address.port }) + '\\n'),
  (error) => { process.stderr.write(String(error && error.stack || error) + '\\n'); process.exit(1); },
);
// the parent holds our stdin open; EOF means it is gone (maybe killed): clean up after it
const orphaned = () => {
  try { require('node:fs').rmSync(process.env.S3RVER_DIRECTORY, { recursive: true, force: true }); } catch {}
  process.exit(0);
};
process.stdin.on('end', orphaned);
process.stdin.on('error', orphaned);
process.stdin.resume();
`;

const STARTUP_TIMEOUT_MS = 15_000;

export async function startS3Server(): Promise<S3TestServer> {
  const directory = await mkdtemp(join(tmpdir(), 'walrus-s3rver-'));
  const s3rverModule = createRequire(import.meta.url).resolve('s3rver');
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '-e', SERVER_SCRIPT], {
    env: { ...process.env, S3RVER_MODULE: s3rverModule, S3RVER_DIRECTORY: directory, NODE_OPTIONS: '' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  // If this process exits without stop() (a crashed test), take the child with it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  let port: number;
  try {
    port = await waitForPort(child);
  } catch (error) {
    child.kill('SIGKILL');
    process.removeListener('exit', killOnExit);
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
  const endpoint = `http://127.0.0.1:${port}`;

  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      process.removeListener('exit', killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      await rm(directory, { recursive: true, force: true });
    })());

  const bucket = async (name?: string): Promise<string> => {
    const bucketName = name ?? `walrus-test-${randomBytes(4).toString('hex')}`;
    const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
    // The SDK's Node-version notice is noise in test output (the plugin silences it the same way).
    const switchName = 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED';
    const previous = process.env[switchName];
    process.env[switchName] = 'true';
    const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3RVER_CREDENTIALS });
    if (previous === undefined) delete process.env[switchName];
    else process.env[switchName] = previous;
    try {
      await client.send(new CreateBucketCommand({ Bucket: bucketName }));
    } finally {
      client.destroy();
    }
    return bucketName;
  };

  return { endpoint, port, bucket, stop };
}

function waitForPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => fail(new Error(`s3rver did not start within ${STARTUP_TIMEOUT_MS} ms: ${stderr.trim()}`)), STARTUP_TIMEOUT_MS);
    const fail = (error: Error) => {
      clearTimeout(timer);
      reject(error);
    };
    child.stderr!.on('data', (d) => (stderr += d));
    child.stdout!.on('data', (d) => {
      stdout += d;
      const line = stdout.split('\n')[0];
      if (stdout.includes('\n')) {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(line).port);
        } catch {
          reject(new Error(`s3rver printed an unexpected line: ${line}`));
        }
      }
    });
    child.once('error', fail);
    child.once('exit', (code, signal) => fail(new Error(`s3rver exited during start-up (code ${code}, signal ${signal}): ${stderr.trim()}`)));
  });
}
