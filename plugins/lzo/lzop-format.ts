/**
 * The lzop 1.04 file format (what `lzop -c` writes and `lzop -d` reads), as Node transform streams.
 *
 *   magic(9) version(2) lib_version(2) version_needed(2) method(1) level(1) flags(4) [filter(4)]
 *   mode(4) mtime_low(4) mtime_high(4) name_len(1) name(n) header_checksum(4)
 *   then blocks: dst_len(4) [0 = end] src_len(4) [d_adler32(4)] [d_crc32(4)]
 *                [c_adler32(4)] [c_crc32(4)] (compressed checksums only when src_len < dst_len) data(src_len)
 *
 * All integers big-endian. src_len == dst_len means the block is stored uncompressed.
 * Block compression itself is LZO1X-1 from the native `lzo` binding (the same method lzop uses by default).
 */
import { Duplex } from 'node:stream';
import { createRequire } from 'node:module';
import { crc32 } from 'node:zlib';
import { integrityError } from '../../core/errors.js';
import { ByteQueue } from '../../core/byte-queue.js';

/**
 * The `lzo` package's native calls, which compress into and decompress into a buffer the caller
 * gives. Its JavaScript wrapper allocates a zero-filled output buffer per call (the size of the
 * input plus 1/16 to compress): at 256 KiB blocks that fresh, zeroed memory cost more than the
 * LZO work itself (a profile of a 1.6 GB restore: 0.9 s of 3.3 s in one worker). Here the
 * compressor reuses one scratch buffer per thread and the decompressor writes into an
 * uninitialized buffer of the block's size (every byte of which it must fill: checked below).
 */
interface LzoNative {
  compress(input: Buffer, output: Buffer): { err: number; len: number };
  decompress(input: Buffer, output: Buffer): { err: number; len: number };
}
// `lzo` is CommonJS without type declarations. Loaded on first use so that importing this module
// (e.g. for recognizes()) does not load the native addon. The addon is where node-gyp builds it
// (the package's own loader, `bindings`, looks there first); the package gives the error names.
let loadedNative: { calls: LzoNative; errors: Record<string, string> } | undefined;
function lzoNative(): { calls: LzoNative; errors: Record<string, string> } {
  if (loadedNative) return loadedNative;
  const require = createRequire(import.meta.url);
  return (loadedNative = { calls: require('lzo/build/Release/node_lzo.node') as LzoNative, errors: (require('lzo') as { errors: Record<string, string> }).errors });
}

/** LZO1X-1's worst case for `n` input bytes (what the package's wrapper allocates). */
const compressBound = (n: number) => n + Math.ceil(n / 16) + 64 + 3;
let compressScratch: Buffer | null = null;

/** `data` compressed with LZO1X-1, in `scratch` (valid until the next call in this thread). */
function lzoCompressInScratch(data: Buffer): Buffer {
  const bound = compressBound(data.length);
  if (!compressScratch || compressScratch.length < bound) compressScratch = Buffer.allocUnsafeSlow(Math.max(bound, compressBound(LZOP_BLOCK_SIZE)));
  const lzo = lzoNative();
  const r = lzo.calls.compress(data, compressScratch);
  if (r.err !== 0) throw new Error(`LZO compression failed: ${lzo.errors[r.err] ?? r.err}`);
  return compressScratch.subarray(0, r.len);
}

/** A block decompressed into a new buffer of `dstLength` bytes; the part it filled (the caller checks it filled all). */
function lzoDecompressBlock(payload: Buffer, dstLength: number): Buffer {
  const out = Buffer.allocUnsafe(dstLength);
  const lzo = lzoNative();
  const r = lzo.calls.decompress(payload, out);
  if (r.err !== 0) throw new Error(`Decompression failed with code: ${lzo.errors[r.err] ?? r.err}`);
  return out.subarray(0, r.len);
}

export const LZOP_MAGIC = Buffer.from([0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a]);

/** lzop's own block size when compressing. */
export const LZOP_BLOCK_SIZE = 256 * 1024;
/** lzop refuses blocks larger than this when decompressing (MAX_BLOCK_SIZE in lzop.c). */
export const LZOP_MAX_BLOCK_SIZE = 64 * 1024 * 1024;

/** The version fields lzop 1.04 (with LZO 2.10) writes. */
const LZOP_VERSION = 0x1040;
const LZO_LIB_VERSION = 0x20a0;
/** What lzop 1.04 writes as the version needed to extract a file with crc32 checksums (`--crc32`). */
const VERSION_NEEDED_FOR_CRC32 = 0x1001;

/** Methods; all three are LZO1X streams that lzo1x_decompress_safe reads. */
const M_LZO1X_1 = 1;
const M_LZO1X_1_15 = 2;
const M_LZO1X_999 = 3;
const LZO1X_METHODS = new Set([M_LZO1X_1, M_LZO1X_1_15, M_LZO1X_999]);
/** lzop records level 5 for its default `-3`... in practice what `lzop -c` and WAL-E's objects carry. */
const DEFAULT_LEVEL = 5;

export const F_ADLER32_D = 0x00000001;
export const F_ADLER32_C = 0x00000002;
const F_STDIN = 0x00000004;
const F_STDOUT = 0x00000008;
const F_H_EXTRA_FIELD = 0x00000040;
export const F_CRC32_D = 0x00000100;
export const F_CRC32_C = 0x00000200;
const F_MULTIPART = 0x00000400;
const F_H_FILTER = 0x00000800;
const F_H_CRC32 = 0x00001000;
const F_MASK = 0x00003fff;
const F_OS_UNIX = 0x03000000;
const F_OS_MASK = 0xff000000;
const F_CS_MASK = 0x00f00000;
/** Flags lzop itself rejects as reserved. */
const F_RESERVED = ~(F_MASK | F_OS_MASK | F_CS_MASK) >>> 0;

const CORRUPT_HINT = 'the object is damaged or not an lzop file; fetch it again or use another copy of it';

// ---------------------------------------------------------------- checksums

/** Reading 4 bytes per load below assumes little-endian words (x86, ARM as Node runs them). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Adler-32 as lzop computes it (initial value 1). It checks every block of every partition and
 * segment, so it is on the restore path: the data is read as 32-bit words and each group of 8
 * bytes is folded in at once (b += 8a + 8x0 + 7x1 + ... + x7; a += x0 + ... + x7), which lets
 * V8 overlap the additions instead of chaining 16 of them; about 1.5× the byte-at-a-time loop.
 */
export function adler32(data: Uint8Array, initial = 1): number {
  if (!LITTLE_ENDIAN) return adler32ByteAtATime(data, initial);
  let a = initial & 0xffff;
  let b = initial >>> 16;
  const length = data.length;
  let i = 0;
  // bytes up to the first 4-byte boundary (a Uint32Array view needs an aligned offset)
  const head = Math.min(length, (4 - (data.byteOffset & 3)) & 3);
  for (; i < head; i++) {
    a += data[i]!;
    b += a;
  }
  a %= 65521;
  b %= 65521;
  const words = (length - i) >>> 2;
  if (words > 0) {
    const view = new Uint32Array(data.buffer, data.byteOffset + i, words);
    let w = 0;
    while (w < words) {
      // 512 words (2048 bytes) keep b below 2^31, so V8 stays on small integers; reduce once per run.
      const end = Math.min(w + 512, words);
      for (const end2 = end - 1; w < end2; w += 2) {
        const v = view[w]!;
        const u = view[w + 1]!;
        const x0 = v & 255, x1 = (v >>> 8) & 255, x2 = (v >>> 16) & 255, x3 = v >>> 24;
        const x4 = u & 255, x5 = (u >>> 8) & 255, x6 = (u >>> 16) & 255, x7 = u >>> 24;
        b += 8 * a + (8 * x0 + 7 * x1 + 6 * x2 + 5 * x3 + 4 * x4 + 3 * x5 + 2 * x6 + x7);
        a += x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
      }
      for (; w < end; w++) {
        const v = view[w]!;
        const x0 = v & 255, x1 = (v >>> 8) & 255, x2 = (v >>> 16) & 255, x3 = v >>> 24;
        b += 4 * a + (4 * x0 + 3 * x1 + 2 * x2 + x3);
        a += x0 + x1 + x2 + x3;
      }
      a %= 65521;
      b %= 65521;
    }
    i += words * 4;
  }
  for (; i < length; i++) {
    a += data[i]!;
    b += a;
  }
  a %= 65521;
  b %= 65521;
  return ((b << 16) | a) >>> 0;
}

function adler32ByteAtATime(data: Uint8Array, initial: number): number {
  let a = initial & 0xffff;
  let b = initial >>> 16;
  for (let i = 0; i < data.length; ) {
    for (const end = Math.min(i + 2048, data.length); i < end; i++) {
      a += data[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

const hex = (n: number) => '0x' + n.toString(16).padStart(8, '0');

// ---------------------------------------------------------------- paced coder

/**
 * A coder that produces its output one piece (one block) at a time. It runs as an async generator
 * behind Duplex.from, so the next block is made only when the reader asks for it: however large
 * one input chunk is, at most the readable side's buffer is held beyond the block being made.
 * (An earlier Transform subclass that paused inside _read stalled on some chunk sizes.)
 */
abstract class PacedCoder {
  protected readonly input = new ByteQueue();

  /** The next piece of output, or null when more input is needed. Throws WalrusError on bad input. */
  protected abstract next(): Buffer | null;
  /** What to emit at end of input, after every `next()` has returned null. */
  protected abstract finish(): Buffer | null;

  toStream(): Duplex {
    const coder = this;
    return Duplex.from(async function* (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        coder.input.push(chunk);
        for (let out = coder.next(); out !== null; out = coder.next()) yield out;
      }
      const last = coder.finish();
      if (last) yield last;
    });
  }
}

// ---------------------------------------------------------------- compress

export interface LzopCompressOptions {
  /** Header mtime; lzop writes the time of compression for standard input. */
  mtime?: Date;
}

/**
 * The lzop header lzop 1.04 writes for `lzop -c --crc32` of standard input: LZO1X-1, crc32 of each
 * block's data, crc32 of the header. lzop's default checksum is adler32; crc32 is its `--crc32`
 * option, which every lzop since 1.01 reads (WAL-E's `lzop -d` included). walrus takes crc32
 * because zlib computes it natively (5.5 GB/s here) while adler32 runs in JavaScript (2.2 GB/s):
 * that was 0.6 s of the 3.2 s the worker packing a 1 GiB relation file took.
 */
export function lzopHeader(options: LzopCompressOptions = {}): Buffer {
  const seconds = Math.floor((options.mtime ?? new Date()).getTime() / 1000);
  const header = Buffer.alloc(LZOP_MAGIC.length + 25 + 4);
  LZOP_MAGIC.copy(header, 0);
  let at = LZOP_MAGIC.length;
  at = header.writeUInt16BE(LZOP_VERSION, at);
  at = header.writeUInt16BE(LZO_LIB_VERSION, at);
  at = header.writeUInt16BE(VERSION_NEEDED_FOR_CRC32, at);
  at = header.writeUInt8(M_LZO1X_1, at);
  at = header.writeUInt8(DEFAULT_LEVEL, at);
  at = header.writeUInt32BE((F_CRC32_D | F_H_CRC32 | F_STDIN | F_STDOUT | F_OS_UNIX) >>> 0, at);
  at = header.writeUInt32BE(0, at); // mode: lzop ignores it for F_STDIN
  at = header.writeUInt32BE(seconds % 2 ** 32, at);
  at = header.writeUInt32BE(Math.floor(seconds / 2 ** 32), at);
  at = header.writeUInt8(0, at); // no name
  header.writeUInt32BE(crc32(header.subarray(LZOP_MAGIC.length, at)), at);
  return header;
}

/**
 * Where a block that spans input chunks is put together: lzopBlock copies what it keeps, so one
 * buffer per thread serves every block (a fresh 256 KiB buffer per block cost page faults, and
 * the tar's chunks rarely line up with the blocks).
 */
let blockScratchBuffer: Buffer | null = null;
const blockScratch = () => (blockScratchBuffer ??= Buffer.allocUnsafeSlow(LZOP_BLOCK_SIZE));

/** One lzop block: LZO1X-1 compressed, or stored when compression does not make it smaller. */
export function lzopBlock(data: Buffer): Buffer {
  const checksum = crc32(data);
  const compressed = lzoCompressInScratch(data);
  const payload = compressed.length < data.length ? compressed : data;
  const block = Buffer.allocUnsafe(12 + payload.length);
  block.writeUInt32BE(data.length, 0);
  block.writeUInt32BE(payload.length, 4);
  block.writeUInt32BE(checksum, 8);
  payload.copy(block, 12);
  return block;
}

class LzopCompressor extends PacedCoder {
  private headerWritten = false;

  constructor(private readonly options: LzopCompressOptions) {
    super();
  }

  private withHeader(out: Buffer): Buffer {
    if (this.headerWritten) return out;
    this.headerWritten = true;
    return Buffer.concat([lzopHeader(this.options), out]);
  }

  protected next(): Buffer | null {
    if (this.input.length < LZOP_BLOCK_SIZE) return null;
    return this.withHeader(lzopBlock(this.input.takeInto(LZOP_BLOCK_SIZE, blockScratch())));
  }

  protected finish(): Buffer {
    const end = Buffer.alloc(4); // dst_len 0: end of stream
    if (this.input.length === 0) return this.withHeader(end);
    return this.withHeader(Buffer.concat([lzopBlock(this.input.take(this.input.length)), end]));
  }
}

export function lzopCompressStream(options: LzopCompressOptions = {}): Duplex {
  return new LzopCompressor(options).toStream();
}

// ---------------------------------------------------------------- decompress

/** What the parser waits for next. */
type ParseState =
  | { at: 'magic' }
  | { at: 'header' }
  | { at: 'header-rest'; start: Buffer }
  | { at: 'name'; fixed: Buffer; length: number }
  | { at: 'block-length' }
  | { at: 'block-header'; dstLength: number }
  | { at: 'block-data'; dstLength: number; srcLength: number; checksums: BlockChecksums }
  | { at: 'after-end' }
  | { at: 'zero-padding' };

interface BlockChecksums {
  dAdler32?: number;
  dCrc32?: number;
  cAdler32?: number;
  cCrc32?: number;
}

/** Header fields after the magic through flags: version, lib_version, version_needed, method, level, flags. */
const HEADER_START_LENGTH = 2 + 2 + 2 + 1 + 1 + 4;
/** Then [filter] mode, mtime_low, mtime_high, name length (lzop ≥ 0.94 layout). */
const headerRestLength = (flags: number) => (flags & F_H_FILTER ? 4 : 0) + 4 + 4 + 4 + 1;

export interface LzopDecompressOptions {
  /** Check the adler32/crc32 of each block's decoded data (default true); see DecompressOptions. */
  dataChecksums?: boolean;
}

class LzopDecompressor extends PacedCoder {
  private state: ParseState = { at: 'magic' };
  private readonly dataChecksums: boolean;

  constructor(options: LzopDecompressOptions) {
    super();
    this.dataChecksums = options.dataChecksums ?? true;
  }

  private flags = 0;
  private members = 0;
  private block = 0;
  /** Byte offset in the input of the next byte to parse, for messages. */
  private offset = 0;

  private consume(n: number): Buffer {
    this.offset += n;
    return this.input.take(n);
  }

  private corrupt(what: string): never {
    throw integrityError(`lzop stream is corrupt: ${what}`, { hint: CORRUPT_HINT });
  }

  protected next(): Buffer | null {
    for (;;) {
      const state = this.state;
      switch (state.at) {
        case 'magic': {
          if (this.input.length < LZOP_MAGIC.length) return null;
          const magic = this.consume(LZOP_MAGIC.length);
          if (!magic.equals(LZOP_MAGIC)) {
            if (this.members === 0) {
              throw integrityError('not an lzop stream: the lzop magic bytes are missing at the start', {
                detail: `first bytes: ${magic.toString('hex')}`,
                hint: 'the object may be encrypted (configure its key) or written by another tool',
              });
            }
            this.corrupt(`trailing garbage after lzop member ${this.members} at byte ${this.offset - LZOP_MAGIC.length}`);
          }
          this.state = { at: 'header' };
          break;
        }
        case 'header': {
          if (this.input.length < HEADER_START_LENGTH) return null;
          const start = this.consume(HEADER_START_LENGTH);
          this.checkVersions(start);
          this.state = { at: 'header-rest', start };
          break;
        }
        case 'header-rest': {
          const restLength = headerRestLength(state.start.readUInt32BE(8));
          if (this.input.length < restLength) return null;
          const fixed = Buffer.concat([state.start, this.consume(restLength)]);
          this.state = { at: 'name', fixed, length: fixed[fixed.length - 1]! };
          break;
        }
        case 'name': {
          if (this.input.length < state.length + 4) return null;
          const name = this.consume(state.length);
          const stored = this.consume(4).readUInt32BE(0);
          const covered = Buffer.concat([state.fixed, name]);
          const computed = this.flags & F_H_CRC32 ? crc32(covered) : adler32(covered);
          if (stored !== computed) {
            this.corrupt(`header checksum mismatch (stored ${hex(stored)}, computed ${hex(computed)})`);
          }
          // Like lzop: method and flags are judged only once the header is known to be intact.
          this.checkMethodAndFlags(state.fixed);
          this.block = 0;
          this.state = { at: 'block-length' };
          break;
        }
        case 'block-length': {
          if (this.input.length < 4) return null;
          const dstLength = this.consume(4).readUInt32BE(0);
          if (dstLength === 0) {
            this.members++;
            this.state = { at: 'after-end' };
            break;
          }
          this.block++;
          if (dstLength === 0xffffffff) this.corrupt(`block ${this.block} is a split-file marker, which lzop does not support either`);
          if (dstLength > LZOP_MAX_BLOCK_SIZE) {
            this.corrupt(`block ${this.block} claims ${dstLength} bytes, more than lzop's maximum of ${LZOP_MAX_BLOCK_SIZE}`);
          }
          this.state = { at: 'block-header', dstLength };
          break;
        }
        case 'block-header': {
          if (this.input.length < 4) return null;
          const srcLength = this.input.peek(0) * 2 ** 24 + this.input.peek(1) * 2 ** 16 + this.input.peek(2) * 2 ** 8 + this.input.peek(3);
          if (srcLength === 0 || srcLength > state.dstLength) {
            this.corrupt(`block ${this.block} has ${srcLength} compressed bytes for ${state.dstLength} uncompressed`);
          }
          const compressed = srcLength < state.dstLength;
          const f = this.flags;
          const count =
            (f & F_ADLER32_D ? 1 : 0) + (f & F_CRC32_D ? 1 : 0) + (compressed && f & F_ADLER32_C ? 1 : 0) + (compressed && f & F_CRC32_C ? 1 : 0);
          if (this.input.length < 4 + 4 * count) return null;
          const fields = this.consume(4 + 4 * count);
          let at = 4;
          const read = () => {
            const v = fields.readUInt32BE(at);
            at += 4;
            return v;
          };
          const checksums: BlockChecksums = {};
          if (f & F_ADLER32_D) checksums.dAdler32 = read();
          if (f & F_CRC32_D) checksums.dCrc32 = read();
          if (compressed && f & F_ADLER32_C) checksums.cAdler32 = read();
          if (compressed && f & F_CRC32_C) checksums.cCrc32 = read();
          this.state = { at: 'block-data', dstLength: state.dstLength, srcLength, checksums };
          break;
        }
        case 'block-data': {
          // Only as much memory as input actually received: the lengths were bounded above.
          if (this.input.length < state.srcLength) return null;
          const payload = this.consume(state.srcLength);
          this.state = { at: 'block-length' };
          return this.decodeBlock(payload, state.dstLength, state.checksums);
        }
        case 'after-end': {
          // lzop -d skips zero padding after the end marker and reads a following lzop member.
          if (this.input.length < 1) return null;
          this.state = this.input.peek(0) === 0 ? { at: 'zero-padding' } : { at: 'magic' };
          break;
        }
        case 'zero-padding': {
          while (this.input.length > 0) {
            const chunk = this.consume(Math.min(this.input.length, 65536));
            if (chunk.some((byte) => byte !== 0)) this.corrupt(`non-zero bytes in the padding after lzop member ${this.members}`);
          }
          return null;
        }
      }
    }
  }

  /** Before anything else: the layout of the rest of the header depends on these. */
  private checkVersions(start: Buffer): void {
    const version = start.readUInt16BE(0);
    const needed = start.readUInt16BE(4);
    if (version < 0x0940) this.corrupt(`lzop version ${hex(version)} is older than 0.94, which walrus does not read`);
    if (needed > LZOP_VERSION || needed < 0x0900) {
      this.corrupt(`the file needs lzop version ${hex(needed)} to extract; walrus reads what lzop 1.04 reads`);
    }
    this.flags = start.readUInt32BE(8); // the header checksum kind depends on F_H_CRC32
  }

  private checkMethodAndFlags(fixed: Buffer): void {
    const method = fixed.readUInt8(6);
    const flags = fixed.readUInt32BE(8);
    if (!LZO1X_METHODS.has(method)) this.corrupt(`unsupported compression method ${method} (only LZO1X methods 1, 2, 3)`);
    if (flags & F_RESERVED) this.corrupt(`reserved header flags set (${hex(flags)})`);
    if (flags & F_H_FILTER) this.corrupt('the file uses an lzop filter (F_H_FILTER), which walrus does not support');
    if (flags & F_H_EXTRA_FIELD) this.corrupt('the file has an extra header field (F_H_EXTRA_FIELD), which walrus does not support');
    if (flags & F_MULTIPART) this.corrupt('the file is a multipart lzop archive (F_MULTIPART), which walrus does not support');
  }

  private decodeBlock(payload: Buffer, dstLength: number, sums: BlockChecksums): Buffer {
    const n = this.block;
    if (payload.length < dstLength) {
      if (sums.cAdler32 !== undefined && adler32(payload) !== sums.cAdler32) this.corrupt(`block ${n}: adler32 of the compressed data does not match`);
      if (sums.cCrc32 !== undefined && crc32(payload) !== sums.cCrc32) this.corrupt(`block ${n}: crc32 of the compressed data does not match`);
    }
    let data = payload;
    if (payload.length < dstLength) {
      try {
        data = lzoDecompressBlock(payload, dstLength);
      } catch (error) {
        this.corrupt(`block ${n} does not decompress (${(error as Error).message})`);
      }
      // what it did not fill is uninitialized memory: it must never pass
      if (data.length !== dstLength) this.corrupt(`block ${n} decompresses to ${data.length} bytes, its header says ${dstLength}`);
    }
    if (!this.dataChecksums) return data;
    if (sums.dAdler32 !== undefined) {
      const computed = adler32(data);
      if (computed !== sums.dAdler32) {
        this.corrupt(`block ${n}: adler32 of the data does not match (stored ${hex(sums.dAdler32)}, computed ${hex(computed)})`);
      }
    }
    if (sums.dCrc32 !== undefined) {
      const computed = crc32(data);
      if (computed !== sums.dCrc32) this.corrupt(`block ${n}: crc32 of the data does not match (stored ${hex(sums.dCrc32)}, computed ${hex(computed)})`);
    }
    return data;
  }

  protected finish(): null {
    const state = this.state.at;
    if (state === 'after-end' || state === 'zero-padding') return null;
    if (state === 'magic' && this.members > 0 && this.input.length > 0) {
      this.corrupt(`trailing garbage (${this.input.length} bytes) after lzop member ${this.members}`);
    }
    if (state === 'magic' && this.members === 0 && this.offset === 0 && this.input.length === 0) {
      throw integrityError('lzop stream is empty: no header, no data', { hint: CORRUPT_HINT });
    }
    throw integrityError(`lzop stream is truncated: it ends at byte ${this.offset + this.input.length} inside ${describeState(this.state, this.block)}`, {
      hint: CORRUPT_HINT,
    });
  }
}

function describeState(state: ParseState, block: number): string {
  switch (state.at) {
    case 'magic':
    case 'header':
    case 'header-rest':
    case 'name':
      return 'the header';
    case 'block-length':
      return `the block list before block ${block + 1} (no end marker)`;
    default:
      return `block ${block}`;
  }
}

export function lzopDecompressStream(options: LzopDecompressOptions = {}): Duplex {
  return new LzopDecompressor(options).toStream();
}

/** True when `head` starts with the 9-byte lzop magic (anything shorter cannot be an lzop file). */
export function isLzop(head: Buffer): boolean {
  return head.length >= LZOP_MAGIC.length && head.subarray(0, LZOP_MAGIC.length).equals(LZOP_MAGIC);
}
