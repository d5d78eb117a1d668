/**
 * `gpg` cipher plugin: OpenPGP encryption compatible with GnuPG and WAL-E's `gpg -e -z 0 -r KEY`.
 * Cheap to import: openpgp itself is loaded by the cipher on first encrypt/decrypt.
 */
import type { Cipher, PluginManifest } from '../../core/types.js';
import { OpenpgpCipher, type GpgOptions } from './openpgp-cipher.js';

export type { GpgOptions } from './openpgp-cipher.js';

export const optionsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    keyId: {
      type: 'string',
      pattern: '^(0[xX])?[0-9A-Fa-f]{8,40}$',
      description: 'Key ID or fingerprint (hex, 8-40 digits) the configured key must have; checked when the key is first used.',
    },
    publicKey: {
      type: 'string',
      minLength: 1,
      description: 'Armored public key to encrypt to, usually ${file:/etc/walrus/KEY.pub.asc}.',
    },
    secretKey: {
      type: 'string',
      minLength: 1,
      description: 'Armored secret key, only needed to decrypt (wal-fetch, backup-fetch), usually ${file:...}.',
    },
    passphrase: {
      type: 'string',
      description: "The secret key's passphrase, usually ${env:WALRUS_GPG_PASSPHRASE}.",
    },
  },
  anyOf: [
    { properties: { publicKey: true }, required: ['publicKey'] },
    { properties: { secretKey: true }, required: ['secretKey'] },
  ],
} as const;

export const manifest: PluginManifest<'cipher', GpgOptions, Cipher> = {
  name: 'gpg',
  kind: 'cipher',
  optionsSchema,
  create: (options, context) => new OpenpgpCipher(options, context),
};
