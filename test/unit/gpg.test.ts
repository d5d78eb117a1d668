/**
 * The gpg cipher against real GnuPG 2.2 (temp GNUPGHOME) and the WAL-E-written fixture.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { manifest, type GpgOptions } from '../../plugins/gpg/index.js';
import { WalrusError, type ErrorKind } from '../../core/errors.js';
import { silentLogger } from '../../core/log.js';
import type { Cipher } from '../../core/types.js';
import { createGnupgHome, type GeneratedKey, type GnupgHome } from '../helpers/gnupg.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const FIXTURE = `${SHARED_FIXTURES}/wal-e-gpg`;
const LZOP_MAGIC = Buffer.from([0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a]);
const FIXTURE_KEY_ID = '8789FD1E29A9FA7D';
const FIXTURE_ENCRYPTION_SUBKEY_ID = 'D683F3B7E19AB1B8';

async function cipherWith(options: GpgOptions): Promise<Cipher> {
  return manifest.create(options, { log: silentLogger, configDirectory: '/', instanceName: 'ops' });
}

/** Pushes `input` through `transform` and collects the output. */
async function through(transform: Duplex, input: Buffer | Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await pipeline(input instanceof Readable ? input : Readable.from([input]), transform, new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk);
      done();
    },
  }));
  return Buffer.concat(chunks);
}

function isWalrusError(kind: ErrorKind, messagePattern?: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof WalrusError, `expected a WalrusError, got ${String(error)}`);
    assert.equal(error.kind, kind, `kind of "${error.message}"`);
    if (messagePattern) assert.match(error.message, messagePattern);
    assert.doesNotMatch(error.message, /\n/, 'one-line message');
    return true;
  };
}

function runLzopDecompress(input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('lzop', ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`lzop -dc exited ${code}: ${err}`))));
    child.stdin.end(input);
  });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('gpg cipher', () => {
  let gnupg: GnupgHome;
  let fixture: { publicKey: string; secretKey: string; passphrase: string };
  let other: GeneratedKey;
  let cipher: Cipher;

  before(async () => {
    gnupg = await createGnupgHome();
    fixture = {
      publicKey: await readFile(join(FIXTURE, 'public-key.asc'), 'utf8'),
      secretKey: await readFile(join(FIXTURE, 'secret-key.asc'), 'utf8'),
      passphrase: (await readFile(join(FIXTURE, 'passphrase.txt'), 'utf8')).replace(/\r?\n$/, ''),
    };
    await gnupg.importKey(fixture.secretKey);
    other = await gnupg.generateKey({ name: 'other key', passphrase: 'other passphrase' });
    cipher = await cipherWith({ keyId: FIXTURE_KEY_ID, ...fixture });
  });

  after(async () => {
    await gnupg?.cleanup();
  });

  describe('recognizes', () => {
    it('accepts the WAL-E fixture objects (old-format PKESK, 0x85)', async () => {
      for (const name of await readdir(join(FIXTURE, 'store/wal_005'))) {
        const head = (await readFile(join(FIXTURE, 'store/wal_005', name))).subarray(0, 16);
        assert.equal(head[0], 0x85);
        assert.equal(cipher.recognizes(head), true, name);
      }
    });

    it("accepts its own output (new-format PKESK, 0xC1) and gpg's for a cv25519 key", async () => {
      const ours = await through(cipher.encrypt(), Buffer.from('hello'));
      assert.equal(ours[0], 0xc1);
      assert.equal(cipher.recognizes(ours.subarray(0, 16)), true);
      const plain = join(gnupg.scratch, 'recognize.txt');
      await writeFile(plain, 'hello');
      await gnupg.encryptFile(plain, plain + '.gpg', other.fingerprint);
      const theirs = await readFile(plain + '.gpg');
      assert.equal(theirs[0] & 0xfc, 0x84, 'old-format tag 1');
      assert.equal(cipher.recognizes(theirs.subarray(0, 16)), true);
    });

    it('accepts a header that names two recipients (PKESK followed by PKESK)', async () => {
      const plain = join(gnupg.scratch, 'two.txt');
      await writeFile(plain, 'two recipients');
      await gnupg.gpg(['--trust-model', 'always', '-e', '-z', '0', '-r', other.fingerprint, '-r', FIXTURE_KEY_ID, '-o', plain + '.gpg', plain]);
      const encrypted = await readFile(plain + '.gpg');
      assert.equal(cipher.recognizes(encrypted.subarray(0, 16)), true);
      // and it decrypts with either key
      assert.equal((await through(cipher.decrypt(), encrypted)).toString(), 'two recipients');
    });

    it('rejects lzop output, text, random bytes and short heads', async () => {
      const lzo = Buffer.concat([LZOP_MAGIC, Buffer.from([0x10, 0x40, 0x20, 0xa0, 0x09, 0x40, 0x01])]);
      assert.equal(cipher.recognizes(lzo), false);
      assert.equal(cipher.recognizes(Buffer.from('#!/bin/sh\necho hello world\n')), false);
      assert.equal(cipher.recognizes(Buffer.from('-----BEGIN PGP MESSAGE-----\n')), false);
      assert.equal(cipher.recognizes(Buffer.alloc(0)), false);
      assert.equal(cipher.recognizes(Buffer.from([0x85])), false);
      // 0x85 then a PKESK-shaped length but a wrong version byte
      assert.equal(cipher.recognizes(Buffer.from([0x85, 0x01, 0x8c, 0x09, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])), false);
      let accepted = 0;
      for (let i = 0; i < 2000; i++) if (cipher.recognizes(randomBytes(16))) accepted++;
      assert.ok(accepted < 10, `random heads accepted ${accepted}/2000 times`);
    });
  });

  describe('interop with GnuPG 2.2', () => {
    for (const size of [0, 1, 1024 * 1024 + 17]) {
      it(`walrus encrypts ${size} bytes, gpg -d gives identical bytes`, async () => {
        const data = randomBytes(size);
        const encrypted = await through(cipher.encrypt(), data);
        const path = join(gnupg.scratch, `walrus-${size}.gpg`);
        await writeFile(path, encrypted);
        await gnupg.decryptFile(path, path + '.out', fixture.passphrase);
        assert.equal(sha256(await readFile(path + '.out')), sha256(data));
      });
    }

    it('writes PKESK + SEIPD v1 with MDC, no compression (gpg --list-packets)', async () => {
      const path = join(gnupg.scratch, 'packets.gpg');
      await writeFile(path, await through(cipher.encrypt(), randomBytes(100_000)));
      const { stdout, stderr } = await gnupg.gpg(['--pinentry-mode', 'loopback', '--passphrase', fixture.passphrase, '--list-packets', path]);
      const listing = stdout.toString() + stderr;
      assert.match(listing, /:pubkey enc packet: version 3, algo 1, keyid D683F3B7E19AB1B8/);
      assert.match(listing, /:encrypted data packet:\n(\t[^\n]*\n)*?\tmdc_method: 2\n/);
      assert.match(listing, /:literal data packet:[\s\S]*mode b/);
      assert.doesNotMatch(listing, /compressed packet/);
      assert.doesNotMatch(listing, /aead/i);
    });

    it('writes SEIPD v1 even for a key that advertises SEIPD v2 (AEAD), and gpg 2.2 reads it', async () => {
      const openpgp = await import('openpgp');
      const { privateKey, publicKey } = await openpgp.generateKey({
        // legacy EdDSA/ECDH: gpg 2.2 knows no RFC 9580 Ed25519/X25519 keys
        type: 'ecc',
        curve: 'curve25519Legacy',
        userIDs: [{ name: 'aead key', email: 'aead@walrus-test.invalid' }],
        format: 'armored',
        // also protects the secret key with AEAD, which gpg 2.2 cannot import: so no passphrase
        config: { aeadProtect: true },
      });
      const packets = (await gnupg.gpg(['--list-packets'], { input: publicKey })).stdout.toString();
      const features = /features: ([0-9a-f]{2})/.exec(packets)?.[1];
      assert.ok(features && parseInt(features, 16) & 0x08, `the key advertises SEIPD v2 (features: ${features})`);
      const aeadCipher = await cipherWith({ publicKey, secretKey: privateKey });
      const data = randomBytes(50_000);
      const encrypted = await through(aeadCipher.encrypt(), data);
      assert.deepEqual(await through(aeadCipher.decrypt(), encrypted), data);
      // gpg 2.2 knows no SEIPD v2: decrypting with it proves the packet is v1
      await gnupg.importKey(privateKey);
      const path = join(gnupg.scratch, 'aead-key.gpg');
      await writeFile(path, encrypted);
      await gnupg.decryptFile(path, path + '.out', '');
      assert.deepEqual(await readFile(path + '.out'), data);
    });

    for (const which of ['fixture RSA-3072 key', 'generated cv25519 key'] as const) {
      it(`gpg -e -z 0 -r KEY (${which}) decrypts to identical bytes`, async () => {
        const c = which === 'fixture RSA-3072 key' ? cipher : await cipherWith({ keyId: other.fingerprint, publicKey: other.publicKeyArmored, secretKey: other.secretKeyArmored, passphrase: other.passphrase });
        const recipient = which === 'fixture RSA-3072 key' ? FIXTURE_KEY_ID : other.fingerprint;
        const data = randomBytes(3 * 1024 * 1024 + 5);
        const path = join(gnupg.scratch, `gpg-${recipient}.bin`);
        await writeFile(path, data);
        await gnupg.encryptFile(path, path + '.gpg', recipient);
        const decrypted = await through(c.decrypt(), createReadStream(path + '.gpg', { highWaterMark: 16 * 1024 }));
        assert.equal(sha256(decrypted), sha256(data));
      });
    }
  });

  describe('WAL-E fixture', () => {
    it('every wal_005 object decrypts to lzop output whose content matches segments.sha256', async () => {
      const expected = new Map(
        (await readFile(join(FIXTURE, 'segments.sha256'), 'utf8'))
          .trim()
          .split('\n')
          .map((line) => line.split(/\s+/))
          .map(([digest, segment]) => [segment, digest] as const),
      );
      const names = await readdir(join(FIXTURE, 'store/wal_005'));
      assert.equal(names.length, expected.size);
      for (const name of names) {
        const lzop = await through(cipher.decrypt(), createReadStream(join(FIXTURE, 'store/wal_005', name)));
        assert.deepEqual(lzop.subarray(0, LZOP_MAGIC.length), LZOP_MAGIC, name);
        const segment = await runLzopDecompress(lzop);
        assert.equal(segment.length, 16 * 1024 * 1024);
        assert.equal(sha256(segment), expected.get(name.replace(/\.lzo$/, '')), name);
      }
    });

    it('the base backup tar partition decrypts to lzop output', async () => {
      const dir = join(FIXTURE, 'store/basebackups_005/base_00000001000000000000001D_0000001D/tar_partitions');
      const lzop = await through(cipher.decrypt(), createReadStream(join(dir, 'part_00000000.tar.lzo')));
      assert.deepEqual(lzop.subarray(0, LZOP_MAGIC.length), LZOP_MAGIC);
      const tar = await runLzopDecompress(lzop);
      assert.equal(tar.subarray(257, 262).toString(), 'ustar');
    });
  });

  describe('key errors', () => {
    let walSegment: Buffer;
    before(async () => {
      walSegment = await readFile(join(FIXTURE, 'store/wal_005/00000001000000000000001E.lzo'));
    });

    it('wrong passphrase: KEY, and the passphrase is not in the message', async () => {
      const wrong = await cipherWith({ ...fixture, passphrase: 'not the passphrase' });
      await assert.rejects(through(wrong.decrypt(), walSegment), isWalrusError('KEY', /wrong passphrase for secret key 8789FD1E29A9FA7D/));
      await assert.rejects(through(wrong.decrypt(), walSegment), (e: WalrusError) => !e.message.includes('not the passphrase') && !String(e.detail).includes('not the passphrase'));
    });

    it('missing passphrase for a protected key: KEY', async () => {
      const none = await cipherWith({ publicKey: fixture.publicKey, secretKey: fixture.secretKey });
      await assert.rejects(through(none.decrypt(), walSegment), isWalrusError('KEY', /passphrase-protected/));
    });

    it('object encrypted for another key: KEY naming both keys', async () => {
      const otherCipher = await cipherWith({ publicKey: other.publicKeyArmored, secretKey: other.secretKeyArmored, passphrase: other.passphrase });
      await assert.rejects(
        through(otherCipher.decrypt(), walSegment),
        isWalrusError('KEY', new RegExp(`object was encrypted for key ${FIXTURE_ENCRYPTION_SUBKEY_ID}; configured key is ${other.keyId}`)),
      );
    });

    it('decrypting without a secretKey: KEY; encrypting with only a publicKey works', async () => {
      const publicOnly = await cipherWith({ keyId: FIXTURE_KEY_ID, publicKey: fixture.publicKey });
      const encrypted = await through(publicOnly.encrypt(), Buffer.from('public only'));
      assert.equal((await through(cipher.decrypt(), encrypted)).toString(), 'public only');
      await assert.rejects(through(publicOnly.decrypt(), encrypted), isWalrusError('KEY', /has no secretKey/));
    });

    it('keyId that matches neither key nor subkey: KEY; a subkey ID or fingerprint matches', async () => {
      const mismatched = await cipherWith({ ...fixture, keyId: other.keyId });
      await assert.rejects(through(mismatched.encrypt(), Buffer.from('x')), isWalrusError('KEY', /keyId .* does not match/));
      await assert.rejects(through(mismatched.decrypt(), walSegment), isWalrusError('KEY', /keyId .* does not match/));
      for (const keyId of [FIXTURE_ENCRYPTION_SUBKEY_ID, '1904BFEA03EF81E4F4204B548789FD1E29A9FA7D', '29a9fa7d']) {
        const ok = await cipherWith({ ...fixture, keyId });
        assert.equal((await through(ok.decrypt(), await through(ok.encrypt(), Buffer.from(keyId)))).toString(), keyId);
      }
    });

    it('publicKey and secretKey of different keys: KEY (would write unreadable backups)', async () => {
      const mixed = await cipherWith({ publicKey: other.publicKeyArmored, secretKey: fixture.secretKey, passphrase: fixture.passphrase });
      await assert.rejects(through(mixed.encrypt(), Buffer.from('x')), isWalrusError('KEY', /are different keys/));
    });

    it('an expired public key: KEY when encrypting', async () => {
      const openpgp = await import('openpgp');
      const { publicKey } = await openpgp.generateKey({
        type: 'ecc',
        curve: 'curve25519Legacy',
        userIDs: [{ name: 'expired key', email: 'expired@walrus-test.invalid' }],
        date: new Date(Date.now() - 3600_000),
        keyExpirationTime: 60,
        format: 'armored',
      });
      const expired = await cipherWith({ publicKey });
      await assert.rejects(through(expired.encrypt(), Buffer.from('x')), isWalrusError('KEY', /cannot encrypt to key/));
    });

    it('key text that is not an armored key: KEY without echoing the text', async () => {
      const broken = await cipherWith({ publicKey: 'not a key at all', secretKey: 'secret garbage text', passphrase: 'p' });
      await assert.rejects(through(broken.encrypt(), Buffer.from('x')), isWalrusError('KEY', /publicKey is not a readable armored OpenPGP public key/));
      await assert.rejects(through(broken.decrypt(), walSegment), (e: WalrusError) => e.kind === 'KEY' && !e.message.includes('secret garbage'));
    });
  });

  describe('integrity errors', () => {
    let encrypted: Buffer;
    let data: Buffer;
    before(async () => {
      data = randomBytes(2 * 1024 * 1024);
      encrypted = await through(cipher.encrypt(), data);
    });

    it('the untouched message decrypts (control)', async () => {
      assert.deepEqual(await through(cipher.decrypt(), encrypted), data);
    });

    for (const where of [0.25, 0.5, 0.9, 0.99999]) {
      it(`one flipped byte at ${where * 100}% of the body: the stream ends with INTEGRITY`, async () => {
        const tampered = Buffer.from(encrypted);
        const at = Math.floor(encrypted.length * where);
        tampered[at] ^= 0x01;
        await assert.rejects(through(cipher.decrypt(), tampered), isWalrusError('INTEGRITY'));
      });
    }

    it('a flipped byte in the last byte (inside the MDC): INTEGRITY', async () => {
      const tampered = Buffer.from(encrypted);
      tampered[tampered.length - 1] ^= 0x80;
      await assert.rejects(through(cipher.decrypt(), tampered), isWalrusError('INTEGRITY', /Modification detected/));
    });

    for (const cut of [1, 21, 1000, 'half'] as const) {
      it(`truncated by ${cut} bytes: INTEGRITY`, async () => {
        const truncated = encrypted.subarray(0, encrypted.length - (cut === 'half' ? Math.floor(encrypted.length / 2) : cut));
        await assert.rejects(through(cipher.decrypt(), truncated), isWalrusError('INTEGRITY'));
      });
    }

    it('input that is not OpenPGP (lzop output, text): INTEGRITY', async () => {
      const lzop = await through(cipher.decrypt(), await readFile(join(FIXTURE, 'store/wal_005/00000001000000000000001E.lzo')));
      await assert.rejects(through(cipher.decrypt(), lzop), isWalrusError('INTEGRITY'));
      await assert.rejects(through(cipher.decrypt(), Buffer.from('hello, this is not a message\n'.repeat(100))), isWalrusError('INTEGRITY'));
    });

    it('an empty object: INTEGRITY', async () => {
      await assert.rejects(through(cipher.decrypt(), Buffer.alloc(0)), isWalrusError('INTEGRITY'));
    });

    it('a tampered WAL-E object: INTEGRITY', async () => {
      const object = Buffer.from(await readFile(join(FIXTURE, 'store/wal_005/00000001000000000000001F.lzo')));
      object[object.length - 1000] ^= 0x10;
      await assert.rejects(through(cipher.decrypt(), object), isWalrusError('INTEGRITY'));
    });

    it('an upstream error passes through unchanged', async () => {
      const upstream = new WalrusError('STORAGE', 'connection reset reading the object');
      const source = new Readable({
        read() {
          this.push(encrypted.subarray(0, 70_000));
          this.destroy(upstream);
        },
      });
      await assert.rejects(through(cipher.decrypt(), source), (e) => e === upstream);
    });
  });

  describe('memory', () => {
    it('a 64 MiB round trip streams (RSS growth well under 150 MB)', async (t) => {
      const size = 64 * 1024 * 1024;
      const chunk = randomBytes(256 * 1024);
      let sent = 0;
      const source = new Readable({
        read() {
          if (sent >= size) return void this.push(null);
          sent += chunk.length;
          this.push(chunk);
        },
      });
      const expected = createHash('sha256');
      for (let i = 0; i < size / chunk.length; i++) expected.update(chunk);
      const actual = createHash('sha256');
      let received = 0;
      global.gc?.();
      const baseline = process.memoryUsage.rss();
      let peak = baseline;
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
      try {
        await pipeline(source, cipher.encrypt(), cipher.decrypt(), new Writable({
          write(c: Buffer, _e, done) {
            actual.update(c);
            received += c.length;
            done();
          },
        }));
      } finally {
        clearInterval(sampler);
      }
      peak = Math.max(peak, process.memoryUsage.rss());
      const growthMb = (peak - baseline) / 1e6;
      t.diagnostic(`RSS baseline ${(baseline / 1e6).toFixed(0)} MB, peak growth ${growthMb.toFixed(0)} MB for ${size / 2 ** 20} MiB`);
      assert.equal(received, size);
      assert.equal(actual.digest('hex'), expected.digest('hex'));
      assert.ok(growthMb < 150, `RSS grew ${growthMb.toFixed(0)} MB: the stream is being buffered`);
    });
  });
});
