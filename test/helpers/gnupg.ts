/**
 * Real GnuPG for tests: a throw-away GNUPGHOME, keys generated or imported into it, and
 * `gpg --batch` encrypt/decrypt of files. Never touches the user's ~/.gnupg.
 *
 * gpg starts a gpg-agent for secret-key work; cleanup() stops it (gpgconf --kill) before
 * removing the directory, so no agent outlives the test.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface GpgResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

export interface GeneratedKey {
  /** 40 hex digits, upper case. */
  fingerprint: string;
  /** Long key ID of the primary key (16 hex digits). */
  keyId: string;
  publicKeyArmored: string;
  secretKeyArmored: string;
  passphrase: string;
}

export interface GnupgHome {
  /** The GNUPGHOME directory. */
  home: string;
  /** A scratch directory inside home for test files. */
  scratch: string;
  /** Runs `gpg --homedir HOME --batch ...args`; rejects when gpg exits non-zero. */
  gpg(args: string[], options?: { input?: Buffer | string; allowFailure?: boolean }): Promise<GpgResult>;
  /** `--quick-gen-key` with an encryption subkey. ed25519/cv25519 by default: fast to make. */
  generateKey(options: { name: string; passphrase: string; algorithm?: 'future-default' | 'rsa3072' }): Promise<GeneratedKey>;
  /** Imports armored public or secret keys (a secret key needs its passphrase only later). */
  importKey(armored: string): Promise<void>;
  /** `gpg -e -z 0 -r recipient` (WAL-E's invocation), binary output. */
  encryptFile(inputPath: string, outputPath: string, recipient: string): Promise<void>;
  /** `gpg -d` with a loopback passphrase; rejects with gpg's stderr on failure. */
  decryptFile(inputPath: string, outputPath: string, passphrase: string): Promise<void>;
  /** Stops the agent and removes the directory. Safe to call twice. */
  cleanup(): Promise<void>;
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv, input?: Buffer | string): Promise<GpgResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => stdout.push(c));
    child.stderr.on('data', (c: Buffer) => stderr.push(c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr).toString() }));
    child.stdin.on('error', () => {}); // gpg may exit before reading all of it; the exit code tells
    child.stdin.end(input ?? '');
  });
}

export async function createGnupgHome(): Promise<GnupgHome> {
  // short path: the agent's socket path must fit in sockaddr_un
  const home = await mkdtemp(join(tmpdir(), 'wgpg-'));
  const scratch = join(home, 'scratch');
  await mkdir(scratch, { mode: 0o700 });
  await writeFile(join(home, 'gpg-agent.conf'), 'allow-loopback-pinentry\n', { mode: 0o600 });
  const env = { ...process.env, GNUPGHOME: home, LC_ALL: 'C' };
  let cleaned = false;

  const gpg: GnupgHome['gpg'] = async (args, options = {}) => {
    const result = await run('gpg', ['--homedir', home, '--batch', '--no-tty', '--yes', ...args], env, options.input);
    if (result.code !== 0 && !options.allowFailure) {
      const shown = args.map((a, i) => (args[i - 1] === '--passphrase' ? '***' : a));
      throw new Error(`gpg ${shown.join(' ')} exited ${result.code}: ${result.stderr.trim()}`);
    }
    return result;
  };

  const exportKeys = async (fingerprint: string, passphrase: string) => {
    const publicKey = await gpg(['--armor', '--export', fingerprint]);
    const secretKey = await gpg(['--pinentry-mode', 'loopback', '--passphrase', passphrase, '--armor', '--export-secret-keys', fingerprint]);
    return { publicKeyArmored: publicKey.stdout.toString(), secretKeyArmored: secretKey.stdout.toString() };
  };

  return {
    home,
    scratch,
    gpg,
    async generateKey({ name, passphrase, algorithm = 'future-default' }) {
      const uid = `${name} <${name.replace(/\W+/g, '-').toLowerCase()}@walrus-test.invalid>`;
      await gpg(['--pinentry-mode', 'loopback', '--passphrase', passphrase, '--quick-gen-key', uid, algorithm, 'cert,sign', 'never']);
      const listing = (await gpg(['--with-colons', '--list-keys', uid])).stdout.toString();
      const fingerprint = /^fpr:+([0-9A-F]{40}):/m.exec(listing)?.[1];
      if (!fingerprint) throw new Error(`no fingerprint for the generated key in: ${listing}`);
      const subkeyAlgorithm = algorithm === 'rsa3072' ? 'rsa3072' : 'cv25519';
      await gpg(['--pinentry-mode', 'loopback', '--passphrase', passphrase, '--quick-add-key', fingerprint, subkeyAlgorithm, 'encr', 'never']);
      return { fingerprint, keyId: fingerprint.slice(-16), passphrase, ...(await exportKeys(fingerprint, passphrase)) };
    },
    async importKey(armored) {
      await gpg(['--import'], { input: armored });
    },
    async encryptFile(inputPath, outputPath, recipient) {
      await gpg(['--trust-model', 'always', '-e', '-z', '0', '-r', recipient, '-o', outputPath, inputPath]);
    },
    async decryptFile(inputPath, outputPath, passphrase) {
      await gpg(['--pinentry-mode', 'loopback', '--passphrase', passphrase, '-d', '-o', outputPath, inputPath]);
    },
    async cleanup() {
      if (cleaned) return;
      cleaned = true;
      await run('gpgconf', ['--homedir', home, '--kill', 'all'], env).catch(() => undefined);
      await rm(home, { recursive: true, force: true });
    },
  };
}
