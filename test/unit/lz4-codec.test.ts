/**
 * The lz4 codec against the real `lz4` CLI (1.9.4), real WAL from the fixtures, the registry, file
 * storage and the gpg cipher.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { silentLogger } from '../../core/log.js';
import { assertIntegrity, fixtureGpgCipher, objectRoundTrips, runStream, runTool, toolOutput } from '../helpers/codec-streams.js';
import { createCodec } from '../../core/registry.js';
import type { Codec } from '../../core/types.js';
import { manifest } from '../../plugins/lz4/index.js';
import { Readable } from 'node:stream';
import { LZ4_FRAME_MAGIC, Lz4FrameDecoder, xxh32 } from '../../plugins/lz4/lz4-frame.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const context = { log: silentLogger, configDirectory: '/tmp', instanceName: 'lz4' };
const codec = (await manifest.create({}, context)) as Codec;

// ---------------------------------------------------------------- helpers

const lz4Cli = (args: string[], input: Buffer) => toolOutput('lz4', args, input);
const run = runStream;

const walrusCompress = (input: Buffer) => run(codec.compress(), input);
const walrusDecompress = (input: Buffer | Iterable<Buffer> | AsyncIterable<Buffer>, chunkSize?: number) => run(codec.decompress(), input, chunkSize);


/** Whole frames in an LZ4 stream, as walrus's decoder counts them. */
function countFrames(stored: Buffer): number {
  const decoder = new Lz4FrameDecoder();
  decoder.push(stored);
  while (decoder.next() !== null);
  decoder.finish();
  return decoder.frames;
}

/** A frame header by hand: FLG (version 1 + flags), BD, optional content size, and its header checksum. */
function frameHeader(flg: number, bd = 0x70, contentSize?: bigint): Buffer {
  const size = contentSize === undefined ? Buffer.alloc(0) : Buffer.alloc(8);
  if (contentSize !== undefined) size.writeBigUInt64LE(contentSize);
  const descriptor = Buffer.concat([Buffer.from([0x40 | flg, bd]), size]);
  return Buffer.concat([LZ4_FRAME_MAGIC, descriptor, Buffer.from([(xxh32(descriptor) >>> 8) & 0xff])]);
}

const uint32le = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

/** A real 16 MiB WAL segment written by PostgreSQL (the WAL-E fixture, lzop-compressed). */
const walSegment = (await runTool('lzop', ['-dc'], await readFile(`${SHARED_FIXTURES}/wal-e-plain/store/wal_005/000000010000000200000031.lzo`))).stdout;

const inputs: Record<string, Buffer> = {
  'a 16 MiB WAL segment': walSegment,
  'random data (5 MiB + 3 bytes)': randomBytes(5 * 1024 * 1024 + 3),
  'one byte': Buffer.from([0x42]),
  'exactly 1 MiB of zeros': Buffer.alloc(1024 * 1024),
};

// ---------------------------------------------------------------- tests

describe('lz4 codec', () => {
  test('the WAL fixture is a real 16 MiB segment', () => {
    assert.equal(walSegment.length, 16 * 1024 * 1024);
    assert.equal(walSegment.readUInt16LE(0) & 0xff00, 0xd100, 'PostgreSQL 15 WAL page magic 0xD110');
  });

  for (const [name, input] of Object.entries(inputs)) {
    test(`round trip and lz4 -d interop: ${name}`, async () => {
      const stored = await walrusCompress(input);
      assert.ok(codec.recognizes(stored.subarray(0, 16)));
      assert.ok((await walrusDecompress(stored)).equals(input), 'walrus decodes its own output');
      assert.ok((await walrusDecompress(stored, 4093)).equals(input), 'also fed in odd-sized chunks');
      assert.ok((await lz4Cli(['-d', '-c'], stored)).equals(input), 'lz4 -d decodes it byte-exact');
      assert.equal(countFrames(stored), Math.max(1, Math.ceil(input.length / (1024 * 1024))), 'one frame per MiB, concatenated');
    });
  }

  test('a WAL segment compresses (real WAL is compressible)', async () => {
    const stored = await walrusCompress(walSegment);
    assert.ok(stored.length < walSegment.length / 2, `stored ${stored.length} bytes`);
  });

  test('empty input: one empty frame, which lz4 -d and walrus both read as empty', async () => {
    const stored = await walrusCompress(Buffer.alloc(0));
    assert.ok(codec.recognizes(stored));
    assert.equal((await walrusDecompress(stored)).length, 0);
    assert.equal((await lz4Cli(['-d', '-c'], stored)).length, 0);
  });

  test('walrus decodes what the lz4 CLI writes (default, linked blocks, 64 KiB blocks, content size, block checksums)', async () => {
    const input = walSegment.subarray(0, 6 * 1024 * 1024 + 5);
    for (const args of [['-c'], ['-c', '-BD'], ['-c', '-B4'], ['-c', '--content-size'], ['-c', '-BX', '-9']]) {
      const stored = await lz4Cli(args, input);
      assert.ok((await walrusDecompress(stored)).equals(input), `lz4 ${args.join(' ')}`);
    }
  });

  test('concatenated lz4 outputs and a skippable frame decode like lz4 -d decodes them', async () => {
    const a = randomBytes(70000);
    const b = walSegment.subarray(0, 300000);
    const skippable = Buffer.concat([Buffer.from([0x5a, 0x2a, 0x4d, 0x18]), uint32le(5), Buffer.from('hello')]);
    const stored = Buffer.concat([await lz4Cli(['-c'], a), skippable, await walrusCompress(b)]);
    const expected = Buffer.concat([a, b]);
    assert.ok((await lz4Cli(['-d', '-c'], stored)).equals(expected));
    assert.ok((await walrusDecompress(stored, 1000)).equals(expected));
  });

  test('a flipped byte anywhere in the middle of a stored object is an INTEGRITY error', async () => {
    const input = walSegment.subarray(0, 3 * 1024 * 1024);
    for (const stored of [await walrusCompress(input), await lz4Cli(['-c'], input)]) {
      for (const at of [Math.floor(stored.length / 2), Math.floor(stored.length / 3), stored.length - 3, 7]) {
        const damaged = Buffer.from(stored);
        damaged[at] ^= 0x01;
        await assertIntegrity(walrusDecompress(damaged), /LZ4/);
      }
    }
  });

  test('a flipped byte in stored (uncompressible) data is caught by the content checksum', async () => {
    const stored = await walrusCompress(randomBytes(200000));
    const damaged = Buffer.from(stored);
    damaged[100000] ^= 0x80;
    await assertIntegrity(walrusDecompress(damaged), /does not decode \(.*Checksum/i);
    assert.notEqual((await runTool('lz4', ['-d', '-c'], damaged)).code, 0, 'lz4 -d refuses it too');
  });

  test('a truncated object is an INTEGRITY error, wherever it is cut', async () => {
    const stored = await walrusCompress(walSegment.subarray(0, 2 * 1024 * 1024 + 100));
    for (const length of [1, 3, 4, 6, 7, 11, 100, Math.floor(stored.length / 2), stored.length - 5, stored.length - 1]) {
      await assertIntegrity(walrusDecompress(stored.subarray(0, length)), /truncated/);
    }
    await assertIntegrity(walrusDecompress(Buffer.alloc(0)), /empty/);
  });

  test('input that is not LZ4, trailing garbage, legacy format and unchecked frames are refused', async () => {
    const lzop = (await runTool('lzop', ['-c'], Buffer.from('hello'))).stdout;
    await assertIntegrity(walrusDecompress(lzop), /not an LZ4 frame stream/);
    const stored = await walrusCompress(Buffer.from('hello'));
    await assertIntegrity(walrusDecompress(Buffer.concat([stored, Buffer.from('garbage!')])), /trailing garbage/);
    await assertIntegrity(walrusDecompress(Buffer.concat([stored, Buffer.from('xy')])), /trailing garbage/);
    await assertIntegrity(walrusDecompress(await lz4Cli(['-c', '-l'], Buffer.from('hello'))), /legacy/);
    await assertIntegrity(walrusDecompress(await lz4Cli(['-c', '--no-frame-crc'], Buffer.from('hello'))), /no checksum/);
  });

  test('hostile headers are refused before anything large is allocated', async () => {
    // a block claiming ~2 GiB in a 4 MiB-block frame: refused before its bytes are waited for
    await assertIntegrity(walrusDecompress(Buffer.concat([frameHeader(0x24), uint32le(0x7ffffff0), Buffer.alloc(100)])), /claims \d+ bytes, more than the frame's block maximum/);
    // a content size of 2^60 is only compared with what the blocks decode to
    const stored = Buffer.concat([uint32le(0x80000005), Buffer.from('hello'), uint32le(0)]);
    const checksum = uint32le(xxh32(Buffer.from('hello')));
    await assertIntegrity(walrusDecompress(Buffer.concat([frameHeader(0x6c, 0x70, 2n ** 60n), stored, checksum])), /decodes to 5 bytes but its header declares/);
    assert.equal((await walrusDecompress(Buffer.concat([frameHeader(0x6c, 0x70, 5n), stored, checksum]))).toString(), 'hello', 'the same frame with its true size');
    await assertIntegrity(walrusDecompress(Buffer.concat([frameHeader(0x6c, 0x70, 3n), stored, checksum])), /more than the 3 bytes its header declares/);
  });

  test('a block that would decode to more than the block maximum of its frame is refused', async () => {
    // 64 KiB blocks (BD 0x40); one compressed block: 1 literal, then a match of offset 1 and ~76 KiB, then 1 literal
    const block = Buffer.concat([Buffer.from([0x1f, 0x61, 0x01, 0x00]), Buffer.alloc(300, 0xff), Buffer.from([0x00, 0x10, 0x62])]);
    const frame = Buffer.concat([frameHeader(0x24, 0x40), uint32le(block.length), block, uint32le(0), uint32le(0)]);
    await assertIntegrity(walrusDecompress(frame), /frame 1 does not decode \(block 1/);
  });

  test('a damaged frame header is caught by its header checksum', async () => {
    const stored = await walrusCompress(Buffer.from('hello'));
    const damaged = Buffer.from(stored);
    damaged[6] ^= 0x01; // HC
    await assertIntegrity(walrusDecompress(damaged), /header checksum/);
  });

  test('block checksums (lz4 -BX) are verified', async () => {
    const input = walSegment.subarray(0, 300000);
    const stored = await lz4Cli(['-c', '--content-size', '-BX', '-B4'], input); // -BX: block checksums on
    assert.ok(stored[4]! & 0x10, 'the frame sets the block checksum flag');
    assert.ok((await walrusDecompress(stored)).equals(input));
    const damaged = Buffer.from(stored);
    damaged[stored.length - 12] ^= 0x01; // inside the last block's checksum
    await assertIntegrity(walrusDecompress(damaged), /block \d+ checksum mismatch/);
  });

  test('a frame is decoded block by block: the first output comes after one block of input, not the whole frame', async () => {
    const data = walSegment.subarray(0, 1 << 16);
    const stored = await lz4Cli(['-c', '-B4', '--no-frame-crc', '-BX'], data); // one 64 KiB block, block checksum only
    const blockBytes = stored.subarray(7, stored.length - 4); // between the header and the end mark
    const header = stored.subarray(0, 7);
    let pulled = 0;
    async function* endless() {
      yield header;
      for (let i = 0; i < 100000; i++) {
        pulled += blockBytes.length;
        yield blockBytes; // a 6 GiB frame of 64 KiB blocks
      }
    }
    let received = 0;
    for await (const chunk of Readable.from(endless()).pipe(codec.decompress())) {
      assert.ok((chunk as Buffer).equals(data), 'each block decodes to the first 64 KiB of the segment');
      received += (chunk as Buffer).length;
      if (received >= 4 * data.length) break;
    }
    assert.ok(pulled <= 16 * blockBytes.length, `pulled ${pulled} bytes of input for ${received} bytes of output`);
  });

  test('recognizes() checks the LZ4 frame magic', () => {
    assert.equal(codec.recognizes(Buffer.from([0x04, 0x22, 0x4d, 0x18, 0x64, 0x70])), true);
    assert.equal(codec.recognizes(Buffer.from([0x04, 0x22, 0x4d, 0x18])), true);
    assert.equal(codec.recognizes(Buffer.from([0x04, 0x22, 0x4d])), false);
    assert.equal(codec.recognizes(Buffer.alloc(0)), false);
    assert.equal(codec.recognizes(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x04])), false, 'zstd magic');
    assert.equal(codec.recognizes(Buffer.from([0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a])), false, 'lzop magic');
    assert.equal(codec.recognizes(Buffer.from([0x02, 0x21, 0x4c, 0x18])), false, 'legacy lz4');
  });

  test('loads through the registry by name', async () => {
    const byName = await createCodec('lz4', { configDirectory: '/tmp', log: silentLogger }, ['servers', 'db1', 'compression']);
    assert.ok(byName);
    assert.equal(byName.name, 'lz4');
    assert.equal(byName.suffix, '.lz4');
    const stored = await run(byName.compress(), Buffer.from('through the registry'));
    assert.equal((await lz4Cli(['-d', '-c'], stored)).toString(), 'through the registry');
  });

  describe('through writeObject/openObject on file storage', () => {
    const trips = objectRoundTrips(codec);
    after(() => trips.close());
    const roundTrip = trips.roundTrip;

    test('a WAL segment, plain: the stored file is what lz4 -d reads', async () => {
      const stored = await roundTrip('db1/wal_005/000000010000000200000031.lz4', walSegment, null);
      assert.ok((await lz4Cli(['-d', '-c'], stored)).equals(walSegment));
    });

    test('a WAL segment, encrypted with the gpg cipher', async () => {
      const cipher = await fixtureGpgCipher();
      const stored = await roundTrip('db1/wal_005/000000010000000200000032.lz4', walSegment.subarray(0, 4 * 1024 * 1024), cipher);
      assert.ok(!codec.recognizes(stored), 'stored encrypted, not as LZ4');
    });
  });
});
