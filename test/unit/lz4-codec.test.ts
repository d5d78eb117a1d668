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
import { LZ4_FRAME_MAGIC, LZ4_MAX_DECODED_FRAME, LZ4_MAX_STORED_FRAME, Lz4FrameSplitter } from '../../plugins/lz4/lz4-frame.js';

const context = { log: silentLogger, configDirectory: '/tmp', instanceName: 'lz4' };
const codec = (await manifest.create({}, context)) as Codec;

// ---------------------------------------------------------------- helpers

const lz4Cli = (args: string[], input: Buffer) => toolOutput('lz4', args, input);
const run = runStream;

const walrusCompress = (input: Buffer) => run(codec.compress(), input);
const walrusDecompress = (input: Buffer | Iterable<Buffer> | AsyncIterable<Buffer>, chunkSize?: number) => run(codec.decompress(), input, chunkSize);


/** Whole frames in an LZ4 stream, as walrus's splitter counts them. */
function countFrames(stored: Buffer): number {
  const splitter = new Lz4FrameSplitter();
  splitter.push(stored);
  while (splitter.next() !== null);
  splitter.finish();
  return splitter.frames;
}

/** A frame header by hand: FLG (version 1 + flags), BD, optional content size; HC is not checked before a frame is whole. */
function frameHeader(flg: number, bd = 0x70, contentSize?: bigint): Buffer {
  const size = contentSize === undefined ? Buffer.alloc(0) : Buffer.alloc(8);
  if (contentSize !== undefined) size.writeBigUInt64LE(contentSize);
  return Buffer.concat([LZ4_FRAME_MAGIC, Buffer.from([0x40 | flg, bd]), size, Buffer.from([0])]);
}

const uint32le = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

/** A real 16 MiB WAL segment written by PostgreSQL (the WAL-E fixture, lzop-compressed). */
const walSegment = (await runTool('lzop', ['-dc'], await readFile('/work/shared/fixtures/wal-e-plain/store/wal_005/000000010000000200000031.lzo'))).stdout;

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
    // a block claiming ~2 GiB in a 4 MiB-block frame
    await assertIntegrity(walrusDecompress(Buffer.concat([frameHeader(0x24), uint32le(0x7ffffff0), Buffer.alloc(100)])), /claims \d+ bytes, more than the frame's block maximum/);
    // a content size of 2^60
    await assertIntegrity(walrusDecompress(Buffer.concat([frameHeader(0x2c, 0x70, 2n ** 60n), uint32le(1)])), /claims \d+ bytes of content/);
    // tiny blocks that may each decode to 4 MiB: refused once they could exceed the decoded bound
    const tinyBlock = Buffer.concat([uint32le(1), Buffer.from([0x10])]);
    const manyBlocks = Buffer.concat([frameHeader(0x24), ...Array.from({ length: LZ4_MAX_DECODED_FRAME / (4 << 20) + 1 }, () => tinyBlock)]);
    await assertIntegrity(walrusDecompress(manyBlocks), /may decode to more than/);
  });

  test('an endless frame is refused after the stored-frame bound, not buffered', async () => {
    const block = Buffer.concat([uint32le((4 << 20) | 0x80000000), Buffer.alloc(4 << 20)]); // 4 MiB stored as is
    let pulled = 0;
    async function* endless() {
      yield frameHeader(0x24, 0x70);
      for (let i = 0; i < 200; i++) {
        pulled += block.length;
        yield block;
      }
    }
    await assertIntegrity(walrusDecompress(endless()), /larger than \d+ bytes/);
    assert.ok(pulled <= LZ4_MAX_STORED_FRAME + 2 * block.length, `read ${pulled} bytes of an 800 MiB frame before refusing it`);
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
