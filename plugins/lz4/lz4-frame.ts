/**
 * The LZ4 frame format (what `lz4 -c` writes and `lz4 -d` reads), as Node transform streams.
 *
 *   frame:     magic 04 22 4D 18 | FLG | BD | [content size (8)] [dict id (4)] | HC
 *              blocks: size(4, LE; high bit = stored uncompressed; 0 = end mark) data [block checksum(4)]
 *              [content checksum(4): xxHash-32 of the decoded content]
 *   skippable: magic 5X 2A 4D 18 | size(4, LE) | data
 *
 * Block coding and every checksum (header, block, content) are lz4_flex's (through lz4-napi), which
 * only ever sees one whole frame: this module finds frame boundaries itself, so memory is bounded by
 * one frame (refused above LZ4_MAX_STORED_FRAME stored or LZ4_MAX_DECODED_FRAME decoded bytes).
 * lz4-napi's frame calls run on libuv's thread pool; up to LZ4_FRAMES_IN_FLIGHT frames are coded at
 * once, so both cores work while the main thread reads, encrypts and uploads.
 */
import { Duplex } from 'node:stream';
import { createRequire } from 'node:module';
import type * as Lz4Napi from 'lz4-napi';
import { integrityError } from '../../core/errors.js';
import { ByteQueue } from '../../core/byte-queue.js';

// CommonJS native addon: loaded on first use so that importing the plugin (recognizes()) stays cheap.
let loadedBinding: typeof Lz4Napi | undefined;
function lz4Binding(): typeof Lz4Napi {
  return (loadedBinding ??= createRequire(import.meta.url)('lz4-napi') as typeof Lz4Napi);
}

export const LZ4_FRAME_MAGIC = Buffer.from([0x04, 0x22, 0x4d, 0x18]);
const FRAME_MAGIC = 0x184d2204;
const LEGACY_MAGIC = 0x184c2102;
const isSkippableMagic = (magic: number) => (magic & 0xfffffff0) === 0x184d2a50;

/** Input bytes per frame walrus writes: one 4 MiB-block frame each, so a damaged frame loses at most this much. */
export const LZ4_INPUT_PER_FRAME = 1024 * 1024;
/** Frames larger than this as stored are refused: a frame is decoded whole. */
export const LZ4_MAX_STORED_FRAME = 64 * 1024 * 1024;
/** Frames that may decode to more than this (blocks × block maximum, or content size) are refused. */
export const LZ4_MAX_DECODED_FRAME = 128 * 1024 * 1024;
/** Frames being compressed or decompressed at once on the thread pool (the machine has 2 cores). */
export const LZ4_FRAMES_IN_FLIGHT = 2;

const FLG_VERSION_MASK = 0xc0;
const FLG_VERSION_01 = 0x40;
const FLG_BLOCK_CHECKSUM = 0x10;
const FLG_CONTENT_SIZE = 0x08;
const FLG_CONTENT_CHECKSUM = 0x04;
const FLG_RESERVED = 0x02;
const FLG_DICT_ID = 0x01;
const BLOCK_UNCOMPRESSED = 0x80000000;

const CORRUPT_HINT = 'the object is damaged or not an LZ4 frame stream; fetch it again or use another copy of it';

// ---------------------------------------------------------------- ordered thread-pool work

/**
 * Runs `work` for each item with up to `limit` at once and hands results back in
 * order. A rejected promise not yet awaited is marked handled, so an earlier failure that ends the
 * stream never leaves an unhandled rejection behind.
 */
class OrderedWork {
  private readonly pending: Promise<Buffer>[] = [];

  constructor(private readonly limit: number) {}

  add(promise: Promise<Buffer>): void {
    promise.catch(() => {});
    this.pending.push(promise);
  }

  get full(): boolean {
    return this.pending.length >= this.limit;
  }

  get empty(): boolean {
    return this.pending.length === 0;
  }

  next(): Promise<Buffer> {
    return this.pending.shift()!;
  }
}

// ---------------------------------------------------------------- compress

/** One LZ4 frame of `data` with the content checksum flag set: `lz4 -d` and walrus both verify it. */
export function lz4Frame(data: Buffer): Promise<Buffer> {
  return lz4Binding().compressFrame(data, { contentChecksum: true });
}

/** `framesInFlight` is for measurements (bench/codecs.ts); the codec uses the default. */
export function lz4CompressStream(framesInFlight = LZ4_FRAMES_IN_FLIGHT): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Buffer>) {
    const input = new ByteQueue();
    const work = new OrderedWork(framesInFlight);
    let frames = 0;
    for await (const chunk of source) {
      input.push(chunk);
      while (input.length >= LZ4_INPUT_PER_FRAME) {
        work.add(lz4Frame(input.take(LZ4_INPUT_PER_FRAME)));
        frames++;
        if (work.full) yield await work.next();
      }
    }
    // Empty input still gets one (empty) frame, so the object starts with the LZ4 magic.
    if (input.length > 0 || frames === 0) work.add(lz4Frame(input.take(input.length)));
    while (!work.empty) yield await work.next();
  });
}

// ---------------------------------------------------------------- decompress

type ParseState =
  | { at: 'magic' }
  | { at: 'descriptor' }
  | { at: 'block-size' }
  | { at: 'block-data'; length: number }
  | { at: 'content-checksum' }
  | { at: 'skippable-size' }
  | { at: 'skippable-data'; remaining: number };

const blockMaxSize = (bd: number) => 1 << (8 + 2 * ((bd >> 4) & 7));

/** Cuts the input into whole frames; decoding is left to lz4_flex. Throws INTEGRITY on bad structure. */
export class Lz4FrameSplitter {
  private readonly input = new ByteQueue();
  private state: ParseState = { at: 'magic' };
  /** The current frame's bytes so far. */
  private frame: Buffer[] = [];
  private frameBytes = 0;
  private frameStart = 0;
  private flags = 0;
  private blockMax = 0;
  private blocks = 0;
  /** Input offset of the next byte to parse, for messages. */
  private offset = 0;
  /** Frames and skippable frames completed. */
  frames = 0;

  push(chunk: Buffer): void {
    this.input.push(chunk);
  }

  private corrupt(what: string): never {
    throw integrityError(`LZ4 stream is corrupt: ${what}`, { hint: CORRUPT_HINT });
  }

  private keep(n: number): void {
    for (const part of this.input.takeParts(n)) this.frame.push(part);
    this.frameBytes += n;
    this.offset += n;
    if (this.frameBytes > LZ4_MAX_STORED_FRAME) {
      this.corrupt(`the frame at byte ${this.frameStart} is larger than ${LZ4_MAX_STORED_FRAME} bytes, which walrus does not decode (it writes 1 MiB frames)`);
    }
  }

  private skip(n: number): void {
    this.input.takeParts(n);
    this.offset += n;
  }

  /** The next complete frame, or null when more input is needed. */
  next(): Buffer | null {
    for (;;) {
      const state = this.state;
      switch (state.at) {
        case 'magic': {
          if (this.input.length < 4) return null;
          const magic = this.input.peekUInt32LE(0);
          this.frameStart = this.offset;
          if (magic === FRAME_MAGIC) {
            this.keep(4);
            this.state = { at: 'descriptor' };
          } else if (isSkippableMagic(magic)) {
            this.skip(4);
            this.state = { at: 'skippable-size' };
          } else if (magic === LEGACY_MAGIC) {
            this.corrupt(`legacy LZ4 format (lz4 -l) at byte ${this.offset}, which walrus does not read`);
          } else if (this.frames === 0) {
            throw integrityError('not an LZ4 frame stream: the LZ4 magic bytes are missing at the start', {
              detail: `first bytes: ${this.input.take(4).toString('hex')}`,
              hint: 'the object may be encrypted (configure its key) or written by another tool',
            });
          } else {
            this.corrupt(`trailing garbage after frame ${this.frames} at byte ${this.offset}`);
          }
          break;
        }
        case 'descriptor': {
          if (this.input.length < 2) return null;
          const flg = this.input.peek(0);
          const bd = this.input.peek(1);
          const n = this.frames + 1;
          if ((flg & FLG_VERSION_MASK) !== FLG_VERSION_01) this.corrupt(`frame ${n} has version ${flg >> 6}, not 1`);
          if (flg & FLG_RESERVED || bd & 0x8f) this.corrupt(`frame ${n} sets reserved descriptor bits`);
          if (flg & FLG_DICT_ID) this.corrupt(`frame ${n} needs a dictionary, which walrus does not use`);
          if (((bd >> 4) & 7) < 4) this.corrupt(`frame ${n} has an invalid block maximum size code ${(bd >> 4) & 7}`);
          if (!(flg & (FLG_CONTENT_CHECKSUM | FLG_BLOCK_CHECKSUM))) {
            throw integrityError(`LZ4 frame ${n} carries no checksum (written with --no-frame-crc), so walrus cannot verify it`, {
              hint: 'recompress it with checksums (lz4 without --no-frame-crc)',
            });
          }
          const length = 2 + (flg & FLG_CONTENT_SIZE ? 8 : 0) + 1;
          if (this.input.length < length) return null;
          if (flg & FLG_CONTENT_SIZE) {
            const size = this.input.peekUInt32LE(2) + this.input.peekUInt32LE(6) * 2 ** 32;
            if (size > LZ4_MAX_DECODED_FRAME) this.corrupt(`frame ${n} claims ${size} bytes of content, more than walrus decodes at once (${LZ4_MAX_DECODED_FRAME})`);
          }
          this.flags = flg;
          this.blockMax = blockMaxSize(bd);
          this.blocks = 0;
          this.keep(length); // the header checksum byte is verified by lz4_flex
          this.state = { at: 'block-size' };
          break;
        }
        case 'block-size': {
          if (this.input.length < 4) return null;
          const word = this.input.peekUInt32LE(0);
          this.keep(4);
          if (word === 0) {
            this.state = { at: 'content-checksum' };
            break;
          }
          const length = (word & ~BLOCK_UNCOMPRESSED) >>> 0;
          this.blocks++;
          const n = this.frames + 1;
          if (length > this.blockMax) this.corrupt(`block ${this.blocks} of frame ${n} claims ${length} bytes, more than the frame's block maximum ${this.blockMax}`);
          if (this.blocks * this.blockMax > LZ4_MAX_DECODED_FRAME) {
            this.corrupt(`frame ${n} may decode to more than ${LZ4_MAX_DECODED_FRAME} bytes (${this.blocks} blocks of up to ${this.blockMax}), more than walrus decodes at once`);
          }
          this.state = { at: 'block-data', length: length + (this.flags & FLG_BLOCK_CHECKSUM ? 4 : 0) };
          break;
        }
        case 'block-data': {
          // Keep what has arrived; the stored frame size is bounded in keep().
          const part = Math.min(state.length, this.input.length);
          if (part > 0) this.keep(part);
          if (part < state.length) {
            this.state = { at: 'block-data', length: state.length - part };
            return null;
          }
          this.state = { at: 'block-size' };
          break;
        }
        case 'content-checksum': {
          const length = this.flags & FLG_CONTENT_CHECKSUM ? 4 : 0;
          if (this.input.length < length) return null;
          this.keep(length);
          const frame = Buffer.concat(this.frame, this.frameBytes);
          this.frame = [];
          this.frameBytes = 0;
          this.frames++;
          this.state = { at: 'magic' };
          return frame;
        }
        case 'skippable-size': {
          if (this.input.length < 4) return null;
          const size = this.input.peekUInt32LE(0);
          this.skip(4);
          this.state = { at: 'skippable-data', remaining: size };
          break;
        }
        case 'skippable-data': {
          const part = Math.min(state.remaining, this.input.length);
          this.skip(part);
          if (part < state.remaining) {
            this.state = { at: 'skippable-data', remaining: state.remaining - part };
            return null;
          }
          this.frames++;
          this.state = { at: 'magic' };
          break;
        }
      }
    }
  }

  /** At end of input: throws unless the input ended on a frame boundary after at least one frame. */
  finish(): void {
    if (this.state.at === 'magic' && this.input.length === 0) {
      if (this.frames === 0) throw integrityError('LZ4 stream is empty: no frame at all', { hint: CORRUPT_HINT });
      return;
    }
    if (this.state.at === 'magic' && this.frames > 0) this.corrupt(`trailing garbage (${this.input.length} bytes) after frame ${this.frames}`);
    throw integrityError(`LZ4 stream is truncated: it ends at byte ${this.offset + this.input.length} inside frame ${this.frames + 1}`, { hint: CORRUPT_HINT });
  }
}

/** Decodes one whole frame; lz4_flex checks the header, block and content checksums. */
async function decodeFrame(frame: Buffer, n: number): Promise<Buffer> {
  try {
    // Synchronous: decoding on the thread pool (decompressFrame) held ~100 MB more RSS per
    // stream (backup-fetch with two partition workers peaked at 355-390 MB against ~245 MB);
    // backup-fetch already decodes in worker threads, so the pool bought no parallelism there.
    return lz4Binding().decompressFrameSync(frame);
  } catch (error) {
    const reason = String((error as Error).message ?? error).split('\n')[0];
    throw integrityError(`LZ4 stream is corrupt: frame ${n} does not decode (${reason})`, { hint: CORRUPT_HINT });
  }
}

export function lz4DecompressStream(framesInFlight = LZ4_FRAMES_IN_FLIGHT): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Buffer>) {
    const splitter = new Lz4FrameSplitter();
    const work = new OrderedWork(framesInFlight);
    for await (const chunk of source) {
      splitter.push(chunk);
      for (let frame = splitter.next(); frame !== null; frame = splitter.next()) {
        work.add(decodeFrame(frame, splitter.frames));
        if (work.full) {
          const data = await work.next();
          if (data.length) yield data;
        }
      }
    }
    while (!work.empty) {
      const data = await work.next();
      if (data.length) yield data;
    }
    splitter.finish();
  });
}

/** True when `head` starts with the LZ4 frame magic 04 22 4D 18. */
export function isLz4Frame(head: Buffer): boolean {
  return head.length >= 4 && head.subarray(0, 4).equals(LZ4_FRAME_MAGIC);
}
