/**
 * Recognising an OpenPGP public-key-encrypted message from its first bytes, without openpgp.
 *
 * `gpg -e` (and openpgp.js) start the message with one or more Public-Key Encrypted Session Key
 * packets (tag 1, RFC 4880 §5.1 / RFC 9580 §5.1). GnuPG writes them in the old packet format
 * (0x84 / 0x85 / 0x86: tag 1 with a 1-, 2- or 4-byte length), openpgp.js in the new one (0xC1).
 * Checking the version and algorithm bytes too keeps lzop's magic (0x89 'LZO', which is an
 * old-format tag-2 header) and arbitrary text from passing.
 */

const PKESK_TAG = 1;
/** RSA, RSA encrypt-only, Elgamal, ECDH, X25519, X448. */
const PKESK_V3_ALGORITHMS = new Set([1, 2, 16, 18, 25, 26]);

interface PacketHeader {
  tag: number;
  /** Offset of the packet body in `head`. */
  bodyOffset: number;
  bodyLength: number;
}

function readPacketHeader(head: Buffer, at: number): PacketHeader | null {
  if (head.length <= at) return null;
  const first = head[at];
  if ((first & 0x80) === 0) return null;
  if (first & 0x40) {
    // new format: the length's first octet says how long the length is
    const tag = first & 0x3f;
    const l0 = head[at + 1];
    if (l0 === undefined) return null;
    if (l0 < 192) return { tag, bodyOffset: at + 2, bodyLength: l0 };
    if (l0 < 224) {
      if (head.length < at + 3) return null;
      return { tag, bodyOffset: at + 3, bodyLength: ((l0 - 192) << 8) + head[at + 2] + 192 };
    }
    if (l0 === 255) {
      if (head.length < at + 6) return null;
      return { tag, bodyOffset: at + 6, bodyLength: head.readUInt32BE(at + 2) };
    }
    return null; // partial body lengths are not allowed for session key packets
  }
  const tag = (first >> 2) & 0x0f;
  const lengthType = first & 0x03;
  if (lengthType === 0) return head.length < at + 2 ? null : { tag, bodyOffset: at + 2, bodyLength: head[at + 1] };
  if (lengthType === 1) return head.length < at + 3 ? null : { tag, bodyOffset: at + 3, bodyLength: head.readUInt16BE(at + 1) };
  if (lengthType === 2) return head.length < at + 5 ? null : { tag, bodyOffset: at + 5, bodyLength: head.readUInt32BE(at + 1) };
  return null; // indeterminate length: never used for a session key packet
}

/**
 * True when `head` starts with a PKESK packet (v3, or v6 from RFC 9580 implementations).
 * Only the first packet is checked: it is all a 16-byte head is sure to contain.
 */
export function startsWithPublicKeyEncryptedSessionKey(head: Buffer): boolean {
  const header = readPacketHeader(head, 0);
  if (!header || header.tag !== PKESK_TAG) return false;
  // version 3: 8-byte key ID then the algorithm; a session key needs at least a few dozen bytes
  const version = head[header.bodyOffset];
  if (version === 3) {
    if (header.bodyLength < 12) return false;
    const algorithm = head[header.bodyOffset + 9];
    return algorithm === undefined || PKESK_V3_ALGORITHMS.has(algorithm);
  }
  if (version === 6) return header.bodyLength >= 12;
  return false;
}
