/**
 * The LZ4 frame format (what `lz4 -c` writes and `lz4 -d` reads), as Node transform streams.
 *
 *   frame:     magic 04 22 4D 18 | FLG | BD | [content size (8)] [dict id (4)] | HC
 *              blocks: size(4, LE; high bit = stored uncompressed; 0 = end mark) data [block checksum(4)]
 *              [content checksum(4): xxHash-32 of the decoded content]
 *   skippable: magic 5X 2A 4D 18 | size(4, LE) | data
 *
 * Compression: lz4_flex (through lz4-napi) codes each frame whole, on libuv's thread pool, up to
 * LZ4_FRAMES_IN_FLIGHT frames at once, so both cores work while the main thread reads, encrypts and
 * uploads. Decompression goes block by block (see lz4DecompressStream for why): this module parses
 * the frames and verifies the header, block and content checksums (xxHash-32 from @node-rs/xxhash);
 * lz4_flex's block decoder (lz4-napi's uncompressSync) decodes each compressed block.
 */
import { Duplex } from 'node:stream';
import { createRequire } from 'node:module';
import type * as Lz4Napi from 'lz4-napi';
import type * as XxhashNapi from '@node-rs/xxhash';
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
/** Frames being compressed at once on the thread pool (the machine has 2 cores). */
export const LZ4_FRAMES_IN_FLIGHT = 2;

const FLG_VERSION_MASK = 0xc0;
const FLG_VERSION_01 = 0x40;
const FLG_BLOCK_INDEPENDENCE = 0x20;
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

// ---------------------------------------------------------------- checksums

/** xxHash-32, the frame format's checksum (header, block and content), from @node-rs/xxhash (napi-rs, as lz4-napi). */
let loadedXxhash: typeof XxhashNapi | undefined;
function xxhash(): typeof XxhashNapi {
  return (loadedXxhash ??= createRequire(import.meta.url)('@node-rs/xxhash') as typeof XxhashNapi);
}
const newXxh32 = () => new (xxhash().Xxh32)(0);
export const xxh32 = (data: Uint8Array): number => xxhash().xxh32(data, 0);

// ---------------------------------------------------------------- decompress

type ParseState =
  | { at: 'magic' }
  | { at: 'descriptor' }
  | { at: 'block-size' }
  | { at: 'block-data'; stored: number; uncompressed: boolean }
  | { at: 'content-checksum' }
  | { at: 'skippable-size' }
  | { at: 'skippable-data'; remaining: number };

const blockMaxSize = (bd: number) => 1 << (8 + 2 * ((bd >> 4) & 7));
/**
 * Output is handed on in pieces of at most this (views of the block, no copy), as lzo's blocks
 * are: each stage after the decoder holds a chunk or two, and with whole 1 MiB blocks those held
 * ~8 MiB more RSS in backup-fetch with two workers.
 */
const OUTPUT_PIECE = 256 * 1024;
/**
 * A compressed block as lz4-napi's block decoder takes it: the output size to allocate (4 bytes),
 * then the block. One per thread, grown to the largest block maximum seen: each use is one
 * synchronous call, so the streams of a thread can share it (each partition no longer leaves a
 * 4 MiB buffer behind for the collector).
 */
let blockInput = Buffer.alloc(0);
/** How far back a match in a linked block may reach into the previous blocks. */
const LINKED_HISTORY = 64 * 1024;

/**
 * Decodes an LZ4 frame stream block by block: push() input as it comes, next() gives each block's
 * content once its stored bytes are all there. It holds at most one block of input (a block
 * larger than its frame's block maximum is refused before it is waited for) and, for linked
 * blocks, the last 64 KiB of content, whatever the frames' sizes; the copy of a block the decoder
 * is given goes into one buffer per thread.
 * Every checksum the frame carries is verified: header, block (if present) and content (if
 * present: the content of a frame is handed out before its checksum is read, so a consumer
 * must treat the stream as failed, not the blocks as good, when it ends with an INTEGRITY
 * error). Throws INTEGRITY on anything malformed.
 */
export class Lz4FrameDecoder {
  private readonly input = new ByteQueue();
  private state: ParseState = { at: 'magic' };
  private flags = 0;
  private blockMax = 0;
  private linked = false;
  private blocks = 0;
  /** The content size the frame header declares, or -1. */
  private declaredSize = -1;
  private decodedSize = 0;
  private readonly contentHash = newXxh32();
  /** The frame's last 64 KiB of content so far, which a linked block's matches may refer to. */
  private history: Buffer | null = null;
  private historyLength = 0;
  /** The output room lz4_flex gets first for a block: the largest block decoded so far, at least what walrus writes. */
  private largestBlock = LZ4_INPUT_PER_FRAME;
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

  private take(n: number): Buffer {
    this.offset += n;
    return this.input.take(n);
  }

  /** The next block's content, or null when more input is needed. */
  next(): Buffer | null {
    for (;;) {
      const state = this.state;
      switch (state.at) {
        case 'magic': {
          if (this.input.length < 4) return null;
          const magic = this.input.peekUInt32LE(0);
          if (magic === FRAME_MAGIC) {
            this.take(4);
            this.state = { at: 'descriptor' };
          } else if (isSkippableMagic(magic)) {
            this.take(4);
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
          const descriptor = this.take(length);
          const expected = (xxh32(descriptor.subarray(0, length - 1)) >>> 8) & 0xff;
          if (descriptor[length - 1] !== expected) this.corrupt(`frame ${n} does not decode (header checksum mismatch)`);
          // Only compared with what the blocks decode to: nothing is allocated for it.
          this.declaredSize = flg & FLG_CONTENT_SIZE ? descriptor.readUInt32LE(2) + descriptor.readUInt32LE(6) * 2 ** 32 : -1;
          this.flags = flg;
          this.blockMax = blockMaxSize(bd);
          this.linked = !(flg & FLG_BLOCK_INDEPENDENCE);
          this.blocks = 0;
          this.decodedSize = 0;
          this.historyLength = 0;
          this.contentHash.reset();
          this.state = { at: 'block-size' };
          break;
        }
        case 'block-size': {
          if (this.input.length < 4) return null;
          const word = this.input.peekUInt32LE(0);
          this.take(4);
          if (word === 0) {
            this.state = { at: 'content-checksum' };
            break;
          }
          const stored = (word & ~BLOCK_UNCOMPRESSED) >>> 0;
          this.blocks++;
          if (stored > this.blockMax) {
            this.corrupt(`block ${this.blocks} of frame ${this.frames + 1} claims ${stored} bytes, more than the frame's block maximum ${this.blockMax}`);
          }
          this.state = { at: 'block-data', stored, uncompressed: (word & BLOCK_UNCOMPRESSED) !== 0 };
          break;
        }
        case 'block-data': {
          const checksum = this.flags & FLG_BLOCK_CHECKSUM ? 4 : 0;
          if (this.input.length < state.stored + checksum) return null;
          // As the chunks it arrived in: a compressed block spanning two is copied once, into blockInput.
          const parts = this.input.takeParts(state.stored);
          this.offset += state.stored;
          if (checksum) {
            const hash = newXxh32();
            for (const part of parts) hash.update(part);
            if (hash.digest() !== this.take(4).readUInt32LE(0)) this.corrupt(`frame ${this.frames + 1} does not decode (block ${this.blocks} checksum mismatch)`);
          }
          this.state = { at: 'block-size' };
          const content = state.uncompressed ? (parts.length === 1 ? parts[0]! : Buffer.concat(parts, state.stored)) : this.decodeBlock(parts, state.stored);
          this.addContent(content);
          if (this.linked) this.remember(content);
          if (content.length > 0) return content;
          break;
        }
        case 'content-checksum': {
          const n = this.frames + 1;
          if (this.flags & FLG_CONTENT_CHECKSUM) {
            if (this.input.length < 4) return null;
            if (this.take(4).readUInt32LE(0) !== this.contentHash.digest()) this.corrupt(`frame ${n} does not decode (content checksum mismatch)`);
          }
          if (this.declaredSize >= 0 && this.decodedSize !== this.declaredSize) {
            this.corrupt(`frame ${n} decodes to ${this.decodedSize} bytes but its header declares ${this.declaredSize}`);
          }
          this.frames++;
          this.state = { at: 'magic' };
          break;
        }
        case 'skippable-size': {
          if (this.input.length < 4) return null;
          const size = this.input.peekUInt32LE(0);
          this.take(4);
          this.state = { at: 'skippable-data', remaining: size };
          break;
        }
        case 'skippable-data': {
          const part = Math.min(state.remaining, this.input.length);
          this.input.takeParts(part);
          this.offset += part;
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

  /**
   * A compressed block's content, decoded by lz4_flex into a new buffer whose size must be given
   * up front: the largest block this stream decoded so far (at least 1 MiB, what walrus's frames
   * hold), then, if the block is larger, the frame's block maximum, never more (so a hostile block
   * cannot make it allocate more). A buffer the size of the block maximum (4 MiB) for every 1 MiB
   * block held ~7 MiB more RSS per worker.
   */
  private decodeBlock(parts: Buffer[], stored: number): Buffer {
    if (blockInput.length < 4 + this.blockMax) blockInput = Buffer.allocUnsafeSlow(4 + this.blockMax);
    const input = blockInput.subarray(0, 4 + stored);
    let at = 4;
    for (const part of parts) {
      input.set(part, at);
      at += part.length;
    }
    const guess = Math.min(this.largestBlock, this.blockMax);
    const content = this.decodeInto(input, guess, guess < this.blockMax) ?? this.decodeInto(input, this.blockMax, false)!;
    this.largestBlock = Math.max(this.largestBlock, content.length);
    return content;
  }

  /** lz4_flex's block decoder on `input` (4 bytes left free, then the block) with `size` bytes of output room; null if it failed and `mayRetry`. */
  private decodeInto(input: Buffer, size: number, mayRetry: boolean): Buffer | null {
    input.writeUInt32LE(size, 0);
    try {
      return this.linked && this.historyLength > 0 ? lz4Binding().uncompressSync(input, this.history!.subarray(0, this.historyLength)) : lz4Binding().uncompressSync(input);
    } catch (error) {
      if (mayRetry) return null;
      const reason = String((error as Error).message ?? error).split('\n')[0];
      this.corrupt(`frame ${this.frames + 1} does not decode (block ${this.blocks}: ${reason})`);
    }
  }

  /** Keeps the last 64 KiB of the frame's content for the next linked block. */
  private remember(content: Buffer): void {
    const history = (this.history ??= Buffer.allocUnsafeSlow(LINKED_HISTORY));
    if (content.length >= LINKED_HISTORY) {
      content.copy(history, 0, content.length - LINKED_HISTORY);
      this.historyLength = LINKED_HISTORY;
    } else {
      const kept = Math.min(this.historyLength, LINKED_HISTORY - content.length);
      history.copyWithin(0, this.historyLength - kept, this.historyLength);
      content.copy(history, kept);
      this.historyLength = kept + content.length;
    }
  }

  /** Counts decoded bytes against the declared content size and into the content checksum. */
  private addContent(content: Buffer): void {
    this.decodedSize += content.length;
    if (this.declaredSize >= 0 && this.decodedSize > this.declaredSize) {
      this.corrupt(`frame ${this.frames + 1} decodes to more than the ${this.declaredSize} bytes its header declares`);
    }
    if (this.flags & FLG_CONTENT_CHECKSUM) this.contentHash.update(content);
  }

  /** At end of input: throws unless the input ended on a frame boundary after at least one frame. */
  finish(): void {
    this.history = null;
    if (this.state.at === 'magic' && this.input.length === 0) {
      if (this.frames === 0) throw integrityError('LZ4 stream is empty: no frame at all', { hint: CORRUPT_HINT });
      return;
    }
    if (this.state.at === 'magic' && this.frames > 0) this.corrupt(`trailing garbage (${this.input.length} bytes) after frame ${this.frames}`);
    throw integrityError(`LZ4 stream is truncated: it ends at byte ${this.offset + this.input.length} inside frame ${this.frames + 1}`, { hint: CORRUPT_HINT });
  }
}

/**
 * Decodes synchronously, block by block. lz4-napi's whole-frame decoder (decompressFrameSync)
 * allocated per frame a frame decoder with 4 MiB input and output buffers plus an output grown by
 * doubling, all from its own allocator (mimalloc), and the frame was gathered whole first: with
 * two partition workers backup-fetch held ~25 MiB more RSS than with lzo. Block calls allocate
 * only each block's output, and are faster (lz4_flex's frame reader was the slow part). A block
 * decoder in JavaScript held the least memory but decoded WAL at ~250 MB/s, below lzo.
 */
export function lz4DecompressStream(): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Buffer>) {
    const decoder = new Lz4FrameDecoder();
    for await (const chunk of source) {
      decoder.push(chunk);
      for (let content = decoder.next(); content !== null; content = decoder.next()) {
        for (let at = 0; at < content.length; at += OUTPUT_PIECE) yield content.subarray(at, at + OUTPUT_PIECE);
      }
    }
    decoder.finish();
  });
}

/** True when `head` starts with the LZ4 frame magic 04 22 4D 18. */
export function isLz4Frame(head: Buffer): boolean {
  return head.length >= 4 && head.subarray(0, 4).equals(LZ4_FRAME_MAGIC);
}
