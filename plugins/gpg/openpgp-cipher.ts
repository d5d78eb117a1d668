/**
 * The `gpg` cipher: OpenPGP messages that GnuPG reads and writes, made with openpgp.js (no gpg
 * binary, no agent).
 *
 * Writes what `gpg -e -z 0 -r KEY` writes (WAL-E's pipeline): PKESK + SEIPD v1 (MDC), binary
 * literal data, no compression, not armored. Both directions stream: openpgp works on web
 * streams, bridged here to Node streams, so memory stays flat however big the object.
 */
import { Duplex, PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type * as OpenPGP from 'openpgp';
import { WalrusError, keyError, integrityError } from '../../core/errors.js';
import type { Cipher, PluginContext } from '../../core/types.js';
import { startsWithPublicKeyEncryptedSessionKey } from './packet-header.js';

export interface GpgOptions {
  /** Hex key ID or fingerprint (8 to 40 digits) the configured keys must carry. */
  keyId?: string;
  /** Armored public key (the config loader has already resolved `${file:...}`). */
  publicKey?: string;
  /** Armored secret key: only needed to decrypt. */
  secretKey?: string;
  passphrase?: string;
}

type OpenpgpModule = typeof OpenPGP;

let openpgpModule: Promise<OpenpgpModule> | undefined;
/** openpgp costs ~100 ms to import: only paid by the commands that encrypt or decrypt. */
function loadOpenpgp(): Promise<OpenpgpModule> {
  openpgpModule ??= import('openpgp');
  return openpgpModule;
}

const KEY_HINT = 'check keys.<name>.publicKey / secretKey in the config';

function hexId(id: { toHex(): string }): string {
  return id.toHex().toUpperCase();
}

/** Key IDs of the primary key and every subkey: a PKESK names the (sub)key it was made for. */
function keyIdsOf(key: OpenPGP.Key): string[] {
  return [hexId(key.getKeyID()), ...key.getSubkeys().map((s) => hexId(s.getKeyID()))];
}

function describeKey(key: OpenPGP.Key): string {
  const subkeys = key.getSubkeys().map((s) => hexId(s.getKeyID()));
  return subkeys.length ? `${hexId(key.getKeyID())} (subkeys ${subkeys.join(', ')})` : hexId(key.getKeyID());
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The one line of an openpgp error, without its "Error decrypting message: " style prefixes. */
function reasonOf(error: unknown): string {
  return messageOf(error).split('\n')[0].replace(/^(Error (decrypting|encrypting|reading) [a-z ]+: )+/i, '');
}

export class OpenpgpCipher implements Cipher {
  readonly name = 'gpg';
  private publicKeyPromise?: Promise<OpenPGP.PublicKey>;
  private secretKeyPromise?: Promise<OpenPGP.PrivateKey>;

  constructor(
    private readonly options: GpgOptions,
    private readonly context: PluginContext,
  ) {
    const secrets = [options.passphrase, options.secretKey].filter((s): s is string => typeof s === 'string');
    if (secrets.length) context.log.addSecrets(secrets);
  }

  recognizes(head: Buffer): boolean {
    return startsWithPublicKeyEncryptedSessionKey(head);
  }

  encrypt(): Duplex {
    return webTransformDuplex(async (input) => {
      const openpgp = await loadOpenpgp();
      const publicKey = await this.publicKey();
      const config = {
        aeadProtect: false,
        preferredCompressionAlgorithm: openpgp.enums.compression.uncompressed,
      };
      // The cipher suite follows the key's preferences; a key that advertises SEIPD v2 would get
      // AEAD, which GnuPG 2.2 cannot read. Dropping the AEAD algorithm forces SEIPD v1 + MDC.
      const message = await openpgp.createMessage({ binary: input, format: 'binary' });
      try {
        const sessionKey = await openpgp.generateSessionKey({ encryptionKeys: publicKey, config });
        const encrypted = await openpgp.encrypt({
          message,
          encryptionKeys: publicKey,
          sessionKey: { data: sessionKey.data, algorithm: sessionKey.algorithm },
          format: 'binary',
          config,
        });
        return encrypted as unknown as WebReadableStream<Uint8Array>;
      } catch (error) {
        // nothing has been read yet: what fails here is the key (expired, revoked, no encryption subkey)
        throw keyError(`cannot encrypt to key ${describeKey(publicKey)} of keys.${this.context.instanceName}: ${reasonOf(error)}`, {
          hint: 'renew the key (or its encryption subkey) and export it again, or configure a valid key',
          cause: error,
        });
      }
    }, (error) => this.encryptError(error));
  }

  decrypt(): Duplex {
    return webTransformDuplex(async (input) => {
      const openpgp = await loadOpenpgp();
      const secretKey = await this.secretKey();
      let message: OpenPGP.Message<OpenPGP.MaybeStream<Uint8Array>>;
      try {
        message = await openpgp.readMessage({ binaryMessage: input });
      } catch (error) {
        if (error instanceof WalrusError) throw error;
        throw integrityError(`not a readable OpenPGP message: ${reasonOf(error)}`, {
          hint: 'the object is corrupt, or was not written by gpg/walrus with this cipher',
          cause: error,
        });
      }
      const recipients = message.getEncryptionKeyIDs().map(hexId);
      const ours = new Set(keyIdsOf(secretKey));
      const named = recipients.filter((id) => !/^0+$/.test(id)); // `gpg -R` hides recipients as key ID 0
      if (named.length && named.length === recipients.length && !named.some((id) => ours.has(id))) {
        throw keyError(`object was encrypted for key ${named.join(', ')}; configured key is ${describeKey(secretKey)}`, {
          hint: `configure keys.${this.context.instanceName} with the secret key the object was written for`,
        });
      }
      try {
        const { data } = await openpgp.decrypt({
          message,
          decryptionKeys: secretKey,
          format: 'binary',
          // Release bytes as they are decrypted instead of buffering the whole message to check
          // the MDC first; a bad MDC still errors the stream at its end (see Cipher.decrypt).
          config: { allowUnauthenticatedStream: true },
        });
        return data as unknown as WebReadableStream<Uint8Array>;
      } catch (error) {
        if (/session key decryption failed|no decryption key packets/i.test(messageOf(error))) {
          throw keyError(`cannot decrypt the object's session key with configured key ${describeKey(secretKey)}: ${reasonOf(error)}`, {
            detail: recipients.length ? `object was encrypted for key ${recipients.join(', ')}` : undefined,
            hint: `configure keys.${this.context.instanceName} with the secret key the object was written for`,
            cause: error,
          });
        }
        throw error;
      }
    }, (error) => this.decryptError(error));
  }

  private encryptError(error: unknown): WalrusError {
    if (error instanceof WalrusError) return error;
    return new WalrusError('INTERNAL', `OpenPGP encryption failed: ${reasonOf(error)}`, { cause: error });
  }

  /** Whatever fails once bytes flow is the message's fault: corrupt, truncated or tampered. */
  private decryptError(error: unknown): WalrusError {
    if (error instanceof WalrusError) return error;
    return integrityError(`OpenPGP message failed to decrypt: ${reasonOf(error)}`, {
      hint: 'the object is corrupt, truncated or was modified; discard whatever was written from it',
      cause: error,
    });
  }

  /** The key to encrypt to: publicKey, or the public half of secretKey. Read once. */
  private publicKey(): Promise<OpenPGP.PublicKey> {
    this.publicKeyPromise ??= this.readPublicKey();
    return this.publicKeyPromise;
  }

  private async readPublicKey(): Promise<OpenPGP.PublicKey> {
    const openpgp = await loadOpenpgp();
    const { publicKey: armoredPublic, secretKey: armoredSecret } = this.options;
    let publicKey: OpenPGP.PublicKey;
    if (armoredPublic !== undefined) {
      publicKey = await this.readKeyText('publicKey', () => openpgp.readKey({ armoredKey: armoredPublic }));
      if (publicKey.isPrivate()) publicKey = publicKey.toPublic();
      if (armoredSecret !== undefined) {
        // encrypting to one key while holding another's secret would write unreadable backups
        const secret = await this.readKeyText('secretKey', () => openpgp.readPrivateKey({ armoredKey: armoredSecret }));
        if (secret.getFingerprint() !== publicKey.getFingerprint()) {
          throw keyError(
            `keys.${this.context.instanceName}: publicKey ${describeKey(publicKey)} and secretKey ${describeKey(secret)} are different keys`,
            { hint: 'configure the public and secret halves of the same key' },
          );
        }
      }
    } else if (armoredSecret !== undefined) {
      publicKey = (await this.readKeyText('secretKey', () => openpgp.readPrivateKey({ armoredKey: armoredSecret }))).toPublic();
    } else {
      throw keyError(`keys.${this.context.instanceName} has neither publicKey nor secretKey`, { hint: KEY_HINT });
    }
    this.checkKeyId(publicKey);
    return publicKey;
  }

  /** The secret key, decrypted with the passphrase. Read once. */
  private secretKey(): Promise<OpenPGP.PrivateKey> {
    this.secretKeyPromise ??= this.readSecretKey();
    return this.secretKeyPromise;
  }

  private async readSecretKey(): Promise<OpenPGP.PrivateKey> {
    const openpgp = await loadOpenpgp();
    const armoredSecret = this.options.secretKey;
    const name = this.context.instanceName;
    if (armoredSecret === undefined) {
      throw keyError(`keys.${name} has no secretKey: decrypting needs one`, {
        hint: `add secretKey (e.g. \${file:/etc/walrus/${name}.sec.asc}) and passphrase to keys.${name}`,
      });
    }
    if (this.options.publicKey !== undefined) await this.publicKey(); // same-key and keyId checks
    const secretKey = await this.readKeyText('secretKey', () => openpgp.readPrivateKey({ armoredKey: armoredSecret }));
    this.checkKeyId(secretKey);
    if (secretKey.isDecrypted()) return secretKey;
    const passphrase = this.options.passphrase;
    if (passphrase === undefined) {
      throw keyError(`secret key ${hexId(secretKey.getKeyID())} of keys.${name} is passphrase-protected and no passphrase is configured`, {
        hint: `set keys.${name}.passphrase (e.g. \${env:WALRUS_GPG_PASSPHRASE})`,
      });
    }
    try {
      return await openpgp.decryptKey({ privateKey: secretKey, passphrase });
    } catch (error) {
      const wrongPassphrase = /incorrect key passphrase/i.test(messageOf(error));
      throw keyError(
        wrongPassphrase
          ? `wrong passphrase for secret key ${hexId(secretKey.getKeyID())} of keys.${name}`
          : `cannot unlock secret key ${hexId(secretKey.getKeyID())} of keys.${name}: ${reasonOf(error)}`,
        { hint: `check keys.${name}.passphrase`, cause: error },
      );
    }
  }

  private async readKeyText<K>(option: 'publicKey' | 'secretKey', read: () => Promise<K>): Promise<K> {
    try {
      return await read();
    } catch (error) {
      // no key text in the message: it is a secret for secretKey
      throw keyError(`keys.${this.context.instanceName}.${option} is not a readable armored OpenPGP ${option === 'publicKey' ? 'public' : 'secret'} key: ${reasonOf(error)}`, {
        hint: `export it with \`gpg --armor --export${option === 'secretKey' ? '-secret-keys' : ''} KEY\``,
        cause: error,
      });
    }
  }

  /** keyId may be a short/long key ID or a fingerprint, of the primary key or a subkey. */
  private checkKeyId(key: OpenPGP.Key): void {
    const wanted = this.options.keyId?.replace(/^0x/i, '').toUpperCase();
    if (!wanted) return;
    const fingerprints = [key.getFingerprint(), ...key.getSubkeys().map((s) => s.getFingerprint())].map((f) => f.toUpperCase());
    if (!fingerprints.some((f) => f.endsWith(wanted))) {
      throw keyError(`keys.${this.context.instanceName}.keyId ${wanted} does not match the configured key ${describeKey(key)}`, {
        hint: 'fix keyId, or configure the key it names',
      });
    }
  }
}

/**
 * A Node Duplex over an async web-stream transform: bytes written go into `transform`'s input,
 * its output comes out. The transform starts at once (it may await keys first); any failure,
 * early or mid-stream, destroys the Duplex with `mapError(error)`.
 */
function webTransformDuplex(
  transform: (input: WebReadableStream<Uint8Array>) => Promise<WebReadableStream<Uint8Array>>,
  mapError: (error: unknown) => Error,
): Duplex {
  const input = new PassThrough();
  const output = new PassThrough();
  const duplex = Duplex.from({ writable: input, readable: output });
  (async () => {
    const transformed = await transform(Readable.toWeb(input) as WebReadableStream<Uint8Array>);
    // map mid-stream errors here: piping straight into `output` would hand the raw error to the Duplex
    await pipeline(async function* () {
      try {
        yield* Readable.fromWeb(transformed);
      } catch (error) {
        throw mapError(error);
      }
    }, output);
  })().catch((error: unknown) => {
    if (duplex.destroyed) return; // the consumer gave up first; nothing left to report to
    duplex.destroy(mapError(error));
  });
  return duplex;
}
