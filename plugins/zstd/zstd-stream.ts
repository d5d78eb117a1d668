/**
 * Zstandard frames (what `zstd -c` writes and `zstd -d` reads) as Node transform streams, on the
 * zstd-napi binding's streaming calls (ZSTD_compressStream2 / ZSTD_decompressStream).
 *
 * zstd-napi's own DecompressStream pushes everything one input chunk decodes to, ignoring
 * back-pressure (a few KiB of hostile input can expand to GiBs); here each output piece is one
 * dStreamOutSize() buffer handed out by an async generator, so decoding waits for the reader.
 */
import { Duplex } from 'node:stream';
import { createRequire } from 'node:module';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import { integrityError } from '../../core/errors.js';

// CommonJS native addon: loaded on first use so that importing the plugin (recognizes()) stays cheap.
let loadedBinding: typeof ZstdBinding | undefined;
function zstdBinding(): typeof ZstdBinding {
  return (loadedBinding ??= createRequire(import.meta.url)('zstd-napi/binding') as typeof ZstdBinding);
}

export const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const FRAME_MAGIC = 0xfd2fb528;
const isSkippableMagic = (magic: number) => (magic & 0xfffffff0) === 0x184d2a50;
/** Frame_Header_Descriptor bit: the frame ends with the low 32 bits of the content's XXH64. */
const CONTENT_CHECKSUM_FLAG = 0x04;

/**
 * Largest window accepted when decompressing: 2^27 = 128 MiB, zstd's own default limit (what
 * `zstd -d` accepts without --long / --memory). Frames asking for more are refused before any
 * allocation; walrus's own frames use at most 8 MiB (level 19).
 */
export const ZSTD_WINDOW_LOG_MAX = 27;

export const ZSTD_DEFAULT_LEVEL = 3;

const CORRUPT_HINT = 'the object is damaged or not a zstd stream; fetch it again or use another copy of it';

function corrupt(what: string): never {
  throw integrityError(`zstd stream is corrupt: ${what}`, { hint: CORRUPT_HINT });
}

// ---------------------------------------------------------------- compress

/** One zstd frame for the whole stream at `level`, with the content checksum flag set. */
export function zstdCompressStream(level = ZSTD_DEFAULT_LEVEL): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Buffer>) {
    const zstd = zstdBinding();
    const cctx = new zstd.CCtx();
    cctx.setParameter(zstd.CParameter.compressionLevel, level);
    cctx.setParameter(zstd.CParameter.checksumFlag, 1);
    const outSize = zstd.cStreamOutSize();
    let out = Buffer.allocUnsafe(outSize);
    let used = 0;
    // Output is gathered into outSize pieces: compressStream2 often produces a few bytes at a time.
    function* code(input: Buffer, directive: ZstdBinding.EndDirective): Generator<Buffer> {
      for (;;) {
        const [remaining, produced, consumed] = cctx.compressStream2(out.subarray(used), input, directive);
        used += produced;
        input = input.subarray(consumed);
        if (used === out.length) {
          yield out;
          out = Buffer.allocUnsafe(outSize);
          used = 0;
        }
        const done = directive === zstd.EndDirective.end ? remaining === 0 : input.length === 0;
        if (done) return;
      }
    }
    for await (const chunk of source) yield* code(chunk, zstd.EndDirective.continue);
    yield* code(Buffer.alloc(0), zstd.EndDirective.end);
    if (used > 0) yield out.subarray(0, used);
  });
}

// ---------------------------------------------------------------- decompress

/** Frame_Header_Descriptor of a zstd frame at the start of `head` (≥ 5 bytes): refuse unverifiable frames. */
function checkFrameStart(head: Buffer, frame: number, offset: number): void {
  const magic = head.readUInt32LE(0);
  if (isSkippableMagic(magic)) return;
  if (magic !== FRAME_MAGIC) {
    if (frame === 1) {
      throw integrityError('not a zstd stream: the zstd magic bytes are missing at the start', {
        detail: `first bytes: ${head.subarray(0, 4).toString('hex')}`,
        hint: 'the object may be encrypted (configure its key) or written by another tool',
      });
    }
    corrupt(`trailing garbage after frame ${frame - 1} at byte ${offset}`);
  }
  if (!(head[4]! & CONTENT_CHECKSUM_FLAG)) {
    throw integrityError(`zstd frame ${frame} carries no checksum (written with --no-check), so walrus cannot verify it`, {
      hint: 'recompress it with checksums (zstd without --no-check)',
    });
  }
}

export function zstdDecompressStream(): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Buffer>) {
    const zstd = zstdBinding();
    const dctx = new zstd.DCtx();
    dctx.setParameter(zstd.DParameter.windowLogMax, ZSTD_WINDOW_LOG_MAX);
    const outSize = zstd.dStreamOutSize();
    /** At a frame boundary: the next frame's first bytes, held back until its descriptor can be checked. */
    let head: Buffer | null = Buffer.alloc(0);
    let frame = 1;
    /** Input bytes handed to zstd so far, for messages. */
    let offset = 0;
    let frames = 0;

    for await (const chunk of source) {
      let input = chunk;
      /** The last call filled its output buffer: more output may wait inside the context. */
      let flushPending = false;
      for (;;) {
        if (head !== null) {
          if (input.length === 0) break;
          head = head.length ? Buffer.concat([head, input]) : input;
          input = Buffer.alloc(0);
          if (head.length < 5) break; // magic + Frame_Header_Descriptor
          checkFrameStart(head, frame, offset);
          input = head;
          head = null;
        }
        if (input.length === 0 && !flushPending) break;
        const out = Buffer.allocUnsafe(outSize);
        let remaining: number, produced: number, consumed: number;
        try {
          [remaining, produced, consumed] = dctx.decompressStream(out, input);
        } catch (error) {
          const reason = String((error as Error).message ?? error).split('\n')[0]!;
          if (/too much memory/i.test(reason)) {
            corrupt(`frame ${frame} needs a window larger than ${2 ** ZSTD_WINDOW_LOG_MAX} bytes, which walrus refuses to allocate (${reason})`);
          }
          corrupt(`frame ${frame} does not decode (${reason})`);
        }
        input = input.subarray(consumed);
        offset += consumed;
        if (produced > 0) yield out.subarray(0, produced);
        if (remaining === 0) {
          // The frame is complete, its checksum verified, its output flushed.
          frames++;
          frame++;
          head = Buffer.alloc(0);
          flushPending = false;
        } else flushPending = produced === out.length;
      }
    }
    if (head === null) throw integrityError(`zstd stream is truncated: it ends at byte ${offset} inside frame ${frame}`, { hint: CORRUPT_HINT });
    if (head.length >= 4 && head.readUInt32LE(0) !== FRAME_MAGIC && !isSkippableMagic(head.readUInt32LE(0))) checkFrameStart(head, frame, offset);
    if (head.length > 0) throw integrityError(`zstd stream is truncated: it ends at byte ${offset + head.length} inside the header of frame ${frame}`, { hint: CORRUPT_HINT });
    if (frames === 0) throw integrityError('zstd stream is empty: no frame at all', { hint: CORRUPT_HINT });
  });
}

/** True when `head` starts with the zstd frame magic 28 B5 2F FD. */
export function isZstdFrame(head: Buffer): boolean {
  return head.length >= 4 && head.subarray(0, 4).equals(ZSTD_MAGIC);
}
