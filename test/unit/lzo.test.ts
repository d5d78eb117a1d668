/**
 * The lzo codec against the real lzop 1.04 binary and WAL-E-written objects.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import { WalrusError } from '../../core/errors.js';
import { silentLogger } from '../../core/log.js';
import type { Codec } from '../../core/types.js';
import { manifest } from '../../plugins/lzo/index.js';
import { adler32, LZOP_BLOCK_SIZE, LZOP_MAGIC } from '../../plugins/lzo/lzop-format.js';
import { runStream, runTool } from '../helpers/codec-streams.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const FIXTURES = `${SHARED_FIXTURES}/wal-e-plain`;
const WAL_DIR = `${FIXTURES}/store/wal_005`;
const lzoBinding = createRequire(import.meta.url)('lzo') as { compress(b: Buffer): Buffer };

const codec = (await manifest.create({}, { log: silentLogger, configDirectory: '/tmp', instanceName: 'lzo' })) as Codec;

// ---------------------------------------------------------------- helpers

const runLzop = (args: string[], input: Buffer) => runTool('lzop', args, input);

const run = runStream;

const walrusCompress = (input: Buffer) => run(codec.compress(), input);
const walrusDecompress = (input: Buffer, chunkSize?: number) => run(codec.decompress(), input, chunkSize);

async function assertIntegrity(promise: Promise<unknown>, message: RegExp): Promise<WalrusError> {
  const error = await promise.then(
    () => assert.fail('expected an INTEGRITY error, the stream finished'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof WalrusError, `expected WalrusError, got ${String(error)}`);
  assert.equal(error.kind, 'INTEGRITY');
  assert.equal(error.exitCode, 4);
  assert.match(error.message, message);
  assert.ok(!error.message.includes('\n'), 'one-line message');
  return error;
}


/** A decompressed WAL segment from the fixtures (real, compressible PostgreSQL WAL). */
const walSegment = (await runLzop(['-dc'], readFileSync(`${WAL_DIR}/000000010000000200000031.lzo`))).stdout;

const inputs: Record<string, Buffer> = {
  empty: Buffer.alloc(0),
  'one byte': Buffer.from([0x2a]),
  small: Buffer.from('hello, lzop\n'),
  'several MB random + compressible': Buffer.concat([randomBytes(2 * 1024 * 1024 + 17), walSegment.subarray(0, 4 * 1024 * 1024), Buffer.alloc(1024 * 1024), randomBytes(1234)]),
  'exact multiple of 256 KiB': Buffer.concat([walSegment.subarray(0, 3 * LZOP_BLOCK_SIZE), randomBytes(LZOP_BLOCK_SIZE)]),
};

/** Builds an lzop file by hand with any flags/method, as lzop lays it out (for flags lzop's CLI cannot emit). */
function handcraftLzop(data: Buffer, options: { flags: number; method?: number; version?: number; needed?: number }): Buffer {
  const { flags, method = 1, version = 0x1040, needed = 0x0940 } = options;
  const filter = flags & 0x800 ? 4 : 0; // F_H_FILTER adds a filter field after the flags
  const fixed = Buffer.alloc(25 + filter);
  fixed.writeUInt16BE(version, 0);
  fixed.writeUInt16BE(0x20a0, 2);
  fixed.writeUInt16BE(needed, 4);
  fixed.writeUInt8(method, 6);
  fixed.writeUInt8(5, 7);
  fixed.writeUInt32BE(flags >>> 0, 8);
  if (filter) fixed.writeUInt32BE(1, 12);
  fixed.writeUInt32BE(0, 12 + filter);
  fixed.writeUInt32BE(0x6b000000, 16 + filter);
  fixed.writeUInt32BE(0, 20 + filter);
  fixed.writeUInt8(0, 24 + filter);
  const headerSum = Buffer.alloc(4);
  headerSum.writeUInt32BE(flags & 0x1000 ? crc32(fixed) : adler32(fixed));
  const parts: Buffer[] = [LZOP_MAGIC, fixed, headerSum];
  for (let i = 0; i < data.length; i += LZOP_BLOCK_SIZE) {
    const block = data.subarray(i, i + LZOP_BLOCK_SIZE);
    const compressed = lzoBinding.compress(block);
    const payload = compressed.length < block.length ? compressed : block;
    const fields = [block.length, payload.length];
    if (flags & 0x1) fields.push(adler32(block));
    if (flags & 0x100) fields.push(crc32(block));
    if (payload !== block && flags & 0x2) fields.push(adler32(payload));
    if (payload !== block && flags & 0x200) fields.push(crc32(payload));
    const head = Buffer.alloc(4 * fields.length);
    fields.forEach((v, k) => head.writeUInt32BE(v >>> 0, 4 * k));
    parts.push(head, payload);
  }
  parts.push(Buffer.alloc(4));
  return Buffer.concat(parts);
}

/** Offset of the first block header in a file with an empty name (magic + fixed header + checksum). */
const FIRST_BLOCK = 9 + 25 + 4;

// ---------------------------------------------------------------- tests

describe('lzo codec: manifest', () => {
  test('is a codec named lzo with suffix .lzo and a closed options schema', () => {
    assert.equal(manifest.name, 'lzo');
    assert.equal(manifest.kind, 'codec');
    assert.equal(manifest.optionsSchema.additionalProperties, false);
    assert.equal(codec.name, 'lzo');
    assert.equal(codec.suffix, '.lzo');
  });

  test('recognizes the lzop magic, not OpenPGP or random bytes', () => {
    for (const file of readdirSync(WAL_DIR)) assert.equal(codec.recognizes(readFileSync(`${WAL_DIR}/${file}`).subarray(0, 16)), true, file);
    assert.equal(codec.recognizes(Buffer.concat([LZOP_MAGIC, Buffer.alloc(7)])), true);
    assert.equal(codec.recognizes(Buffer.from('850c03aabbccddeeff00112233445566', 'hex')), false, 'OpenPGP old-format PKESK');
    assert.equal(codec.recognizes(Buffer.from('c10c03aabbccddeeff00112233445566', 'hex')), false, 'OpenPGP new-format PKESK');
    const gpgObject = readdirSync(`${SHARED_FIXTURES}/wal-e-gpg/store/wal_005`)[0]!;
    assert.equal(codec.recognizes(readFileSync(`${SHARED_FIXTURES}/wal-e-gpg/store/wal_005/${gpgObject}`).subarray(0, 16)), false, 'WAL-E gpg object');
    for (let i = 0; i < 50; i++) {
      const random = randomBytes(16);
      if (random.subarray(0, 9).equals(LZOP_MAGIC)) continue;
      assert.equal(codec.recognizes(random), false);
    }
    assert.equal(codec.recognizes(LZOP_MAGIC.subarray(0, 8)), false, 'a head shorter than the magic');
    assert.equal(codec.recognizes(Buffer.alloc(0)), false);
  });
});

describe('lzo codec: walrus compress → lzop -d', () => {
  for (const [name, input] of Object.entries(inputs)) {
    test(name, async () => {
      const compressed = await walrusCompress(input);
      assert.ok(codec.recognizes(compressed));
      const tested = await runLzop(['-t'], compressed);
      assert.equal(tested.code, 0, tested.stderr);
      const { code, stdout, stderr } = await runLzop(['-dc'], compressed);
      assert.equal(code, 0, stderr);
      assert.equal(stdout.length, input.length);
      assert.ok(stdout.equals(input), 'lzop -d returns the original bytes');
      assert.ok((await walrusDecompress(compressed)).equals(input), 'walrus reads its own output');
    });
  }

  test('byte-identical to lzop -c --crc32 from the first block on; the same compressed payloads as WAL-E (lzop -c) wrote', async () => {
    const ours = await walrusCompress(walSegment);
    const lzop = (await runLzop(['-c', '--crc32'], walSegment)).stdout;
    assert.equal(ours.length, lzop.length);
    // the header differs only in mode and mtime (and so its checksum); everything from the first block on is identical
    assert.ok(ours.subarray(FIRST_BLOCK).equals(lzop.subarray(FIRST_BLOCK)));
    assert.ok(ours.subarray(0, 9 + 12).equals(lzop.subarray(0, 9 + 12)), 'same version, version needed, method, level and flags');
    assert.equal(ours.readUInt32BE(9 + 8) & 0x1100, 0x1100, 'F_CRC32_D and F_H_CRC32');

    // WAL-E's object (lzop -c: adler32) has the same blocks but for their 4-byte checksums
    const original = readFileSync(`${WAL_DIR}/000000010000000200000031.lzo`);
    assert.equal(ours.length, original.length);
    for (let at = FIRST_BLOCK, blocks = 0; ; blocks++) {
      const dstLength = ours.readUInt32BE(at);
      assert.equal(original.readUInt32BE(at), dstLength);
      if (dstLength === 0) {
        assert.ok(blocks > 0);
        break;
      }
      const srcLength = ours.readUInt32BE(at + 4);
      assert.ok(ours.subarray(at + 12, at + 12 + srcLength).equals(original.subarray(at + 12, at + 12 + srcLength)), `block ${blocks + 1} payload`);
      at += 12 + srcLength;
    }
  });

  test('blocks put together from input chunks of any size (the scratch buffer) give the same bytes as one write', async () => {
    const input = inputs['several MB random + compressible']!;
    const whole = await walrusCompress(input);
    for (const chunkSize of [1000, 100_000, LZOP_BLOCK_SIZE - 512, LZOP_BLOCK_SIZE + 1, 3 * LZOP_BLOCK_SIZE - 1]) {
      const chunked = await run(codec.compress(), input, chunkSize);
      assert.ok(chunked.subarray(FIRST_BLOCK).equals(whole.subarray(FIRST_BLOCK)), `chunks of ${chunkSize} bytes`);
    }
    const small = input.subarray(0, 600_000);
    const tiny = await run(codec.compress(), small, 7);
    assert.ok(tiny.subarray(FIRST_BLOCK).equals((await walrusCompress(small)).subarray(FIRST_BLOCK)), 'chunks of 7 bytes');
    assert.ok((await runLzop(['-dc'], tiny)).stdout.equals(small));
  });

  test('random data is stored uncompressed (src_len == dst_len), as lzop does', async () => {
    const input = randomBytes(1000);
    const compressed = await walrusCompress(input);
    assert.equal(compressed.readUInt32BE(FIRST_BLOCK), 1000);
    assert.equal(compressed.readUInt32BE(FIRST_BLOCK + 4), 1000);
    assert.ok(compressed.subarray(FIRST_BLOCK + 12, FIRST_BLOCK + 12 + 1000).equals(input));
  });
});

describe('lzo codec: lzop -c → walrus decompress', () => {
  const variants: Record<string, string[]> = {
    default: ['-c'],
    '-1 (method LZO1X-1(15))': ['-c', '-1'],
    '-9 (method LZO1X-999)': ['-c', '-9'],
    '--crc32 (crc32 data and header checksums)': ['-c', '--crc32'],
    '-F (no checksums)': ['-c', '-F'],
  };
  for (const [name, input] of Object.entries(inputs)) {
    for (const [variant, args] of Object.entries(variants)) {
      if (variant !== 'default' && name !== 'several MB random + compressible' && name !== 'small') continue;
      test(`${name}, lzop ${variant}`, async () => {
        const { code, stdout, stderr } = await runLzop(args, input);
        assert.equal(code, 0, stderr);
        const out = await walrusDecompress(stdout);
        assert.ok(out.equals(input), 'identical bytes');
      });
    }
  }

  test('any input chunking gives the same bytes (1-byte and 7-byte chunks)', async () => {
    const { stdout } = await runLzop(['-c'], inputs['exact multiple of 256 KiB']!.subarray(0, 300000));
    for (const size of [1, 7]) assert.ok((await walrusDecompress(stdout, size)).equals(inputs['exact multiple of 256 KiB']!.subarray(0, 300000)));
  });

  test('adler32 and crc32 of the compressed data (F_ADLER32_C, F_CRC32_C) are read and checked', async () => {
    const input = inputs['several MB random + compressible']!;
    const flags = 0x03000000 | 0x1 | 0x2 | 0x100 | 0x200;
    const file = handcraftLzop(input, { flags });
    // lzop itself agrees that this handcrafted layout is valid
    const lz = await runLzop(['-dc'], file);
    assert.equal(lz.code, 0, lz.stderr);
    assert.ok(lz.stdout.equals(input));
    assert.ok((await walrusDecompress(file)).equals(input));
    // a flipped byte inside the first (compressed) block payload: the compressed-data checksum catches it
    const headerFields = 4 * 6;
    const bad = Buffer.from(file);
    bad[FIRST_BLOCK + headerFields + 10]! ^= 0x01;
    await assertIntegrity(walrusDecompress(bad), /compressed data does not match|does not decompress|of the data does not match/);
  });

  test('concatenated lzop members and trailing zero padding read as lzop -d reads them', async () => {
    const a = (await runLzop(['-c'], Buffer.from('first '))).stdout;
    const b = (await runLzop(['-c'], Buffer.from('second'))).stdout;
    assert.equal((await walrusDecompress(Buffer.concat([a, b]))).toString(), 'first second');
    assert.equal((await walrusDecompress(Buffer.concat([a, Buffer.alloc(512)]))).toString(), 'first ');
  });
});

describe('lzo codec: WAL-E fixtures', () => {
  const expected = new Map(
    readFileSync(`${FIXTURES}/segments.sha256`, 'utf8')
      .trim()
      .split('\n')
      .map((line) => {
        const [hash, name] = line.trim().split(/\s+/);
        return [name!, hash!] as const;
      }),
  );
  test('the fixture lists segments', () => assert.ok(expected.size >= 5));
  for (const name of expected.keys()) {
    test(`${name}.lzo decompresses to the bytes WAL-E's wal-fetch returns`, async () => {
      const hash = createHash('sha256');
      const { createReadStream } = await import('node:fs');
      await pipeline(createReadStream(`${WAL_DIR}/${name}.lzo`), codec.decompress(), hash);
      assert.equal(hash.digest('hex'), expected.get(name));
    });
  }
});

describe('lzo codec: corruption is an INTEGRITY error', () => {
  const fixture = readFileSync(`${WAL_DIR}/000000010000000200000032.lzo`);

  test('the untouched fixture decompresses', async () => {
    const out = await walrusDecompress(fixture);
    assert.equal(out.length, 16 * 1024 * 1024);
  });

  test('one flipped byte in block data', async () => {
    for (const at of [FIRST_BLOCK + 12 + 100, Math.floor(fixture.length / 2), fixture.length - 20]) {
      const bad = Buffer.from(fixture);
      bad[at]! ^= 0x40;
      await assertIntegrity(walrusDecompress(bad), /lzop stream is corrupt: block \d+/);
      const lz = await runLzop(['-t'], bad);
      assert.notEqual(lz.code, 0, 'lzop agrees the object is damaged');
    }
  });

  test('one flipped byte in the header (mtime, method, level, a flag bit, name length)', async () => {
    for (const [at, mask] of [[9 + 16, 0x01], [9 + 6, 0x01], [9 + 7, 0x02], [9 + 10, 0x08], [9 + 11, 0x02], [9 + 24, 0x01]] as const) {
      const bad = Buffer.from(fixture);
      bad[at]! ^= mask;
      await assertIntegrity(walrusDecompress(bad), /header checksum mismatch/);
    }
  });

  test('one flipped byte in a block checksum', async () => {
    const bad = Buffer.from(fixture);
    bad[FIRST_BLOCK + 9]! ^= 0x01;
    await assertIntegrity(walrusDecompress(bad), /block 1: adler32 of the data does not match/);
  });

  test('storedBytesVerified (a backup partition whose SHA-256 the caller checks): block data checksums are skipped, the structure is not', async () => {
    const expected = await walrusDecompress(fixture);
    const covered = (input: Buffer) => run(codec.decompress({ storedBytesVerified: true }), input);
    assert.ok((await covered(fixture)).equals(expected), 'same bytes as with every check');
    const badSum = Buffer.from(fixture);
    badSum[FIRST_BLOCK + 9]! ^= 0x01;
    assert.ok((await covered(badSum)).equals(expected), 'a wrong data checksum alone is not looked at: the stored SHA-256 decides');
    const badHeader = Buffer.from(fixture);
    badHeader[9 + 16]! ^= 0x01;
    await assertIntegrity(covered(badHeader), /header checksum mismatch/);
    await assertIntegrity(covered(fixture.subarray(0, fixture.length - 10)), /truncated/);
  });

  test('a damaged magic is "not an lzop stream"', async () => {
    const bad = Buffer.from(fixture);
    bad[1] = 0x4d;
    await assertIntegrity(walrusDecompress(bad), /not an lzop stream/);
  });

  test('truncated objects: inside the header, inside a block, before the end marker, empty', async () => {
    await assertIntegrity(walrusDecompress(fixture.subarray(0, 20)), /truncated.*header/);
    await assertIntegrity(walrusDecompress(fixture.subarray(0, FIRST_BLOCK - 2)), /truncated.*header/);
    await assertIntegrity(walrusDecompress(fixture.subarray(0, FIRST_BLOCK + 6)), /truncated.*block 1/);
    await assertIntegrity(walrusDecompress(fixture.subarray(0, Math.floor(fixture.length / 2))), /truncated.*block \d+/);
    await assertIntegrity(walrusDecompress(fixture.subarray(0, fixture.length - 4)), /truncated.*no end marker/);
    await assertIntegrity(walrusDecompress(Buffer.alloc(0)), /empty/);
  });

  test('trailing garbage after the end marker', async () => {
    await assertIntegrity(walrusDecompress(Buffer.concat([fixture, Buffer.from('garbage')])), /trailing garbage/);
    await assertIntegrity(walrusDecompress(Buffer.concat([fixture, Buffer.from('more than nine bytes of garbage')])), /trailing garbage/);
    await assertIntegrity(walrusDecompress(Buffer.concat([fixture, Buffer.alloc(100), Buffer.from([1])])), /non-zero bytes in the padding/);
  });

  test('an absurd block size fails as soon as the block header arrives, without allocating it', { timeout: 10_000 }, async () => {
    for (const dstLength of [0xfffffff0, 64 * 1024 * 1024 + 1, 0xffffffff]) {
      const head = handcraftLzop(Buffer.alloc(0), { flags: 0x03000001 }).subarray(0, FIRST_BLOCK);
      const blockHeader = Buffer.alloc(12);
      blockHeader.writeUInt32BE(dstLength, 0);
      blockHeader.writeUInt32BE(16, 4);
      // The input never ends: the error must come from the header alone, not from waiting for 4 GiB.
      const decompressor = codec.decompress();
      const failed = new Promise<unknown>((resolve) => decompressor.on('error', resolve));
      decompressor.resume();
      decompressor.write(Buffer.concat([head, blockHeader]));
      const error = await failed;
      assert.ok(error instanceof WalrusError && error.kind === 'INTEGRITY', String(error));
      assert.match(error.message, /more than lzop's maximum|split-file marker/);
    }
  });

  test('a compressed length larger than the block, or zero', async () => {
    for (const srcLength of [0, 1000]) {
      const head = handcraftLzop(Buffer.alloc(0), { flags: 0x03000001 }).subarray(0, FIRST_BLOCK);
      const blockHeader = Buffer.alloc(12);
      blockHeader.writeUInt32BE(100, 0);
      blockHeader.writeUInt32BE(srcLength, 4);
      await assertIntegrity(walrusDecompress(Buffer.concat([head, blockHeader, Buffer.alloc(4)])), /compressed bytes for 100 uncompressed/);
    }
  });

  test('unsupported methods, flags and versions are refused by name', async () => {
    const data = Buffer.from('some data');
    const cases: Array<[Parameters<typeof handcraftLzop>[1], RegExp]> = [
      [{ flags: 0x03000001, method: 128 }, /unsupported compression method 128/],
      [{ flags: 0x03000001 | 0x800 }, /F_H_FILTER/],
      [{ flags: 0x03000001 | 0x40 }, /F_H_EXTRA_FIELD/],
      [{ flags: 0x03000001 | 0x400 }, /F_MULTIPART/],
      [{ flags: 0x03000001 | 0x00010000 }, /reserved header flags/],
      [{ flags: 0x03000001, needed: 0x2000 }, /needs lzop version/],
      [{ flags: 0x03000001, version: 0x0800 }, /older than 0.94/],
    ];
    for (const [options, message] of cases) await assertIntegrity(walrusDecompress(handcraftLzop(data, options)), message);
  });
});

describe('lzo codec: streaming', () => {
  test('decompress stops producing while the reader is behind (one 64 KiB chunk holds dozens of blocks)', async () => {
    const zeros = Buffer.alloc(32 * 1024 * 1024);
    const { stdout: compressed } = await runLzop(['-c'], zeros);
    assert.ok(compressed.length < 256 * 1024, 'highly compressible: many blocks per input chunk');
    const decompressor = codec.decompress();
    decompressor.write(compressed);
    decompressor.end();
    await new Promise((resolve) => setTimeout(resolve, 50));
    // nothing reads: at most the high-water mark plus one block is buffered, not 32 MiB
    assert.ok(decompressor.readableLength <= decompressor.readableHighWaterMark + LZOP_BLOCK_SIZE, `buffered ${decompressor.readableLength}`);
    let total = 0;
    for await (const chunk of decompressor) {
      assert.ok((chunk as Buffer).every((b) => b === 0));
      total += (chunk as Buffer).length;
    }
    assert.equal(total, zeros.length);
  });

  test('compress stops producing while the reader is behind (one 16 MiB write)', async () => {
    const input = Buffer.concat(Array.from({ length: 16 }, () => walSegment.subarray(0, 1024 * 1024)));
    const compressor = codec.compress();
    compressor.write(input);
    compressor.end();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(compressor.readableLength <= compressor.readableHighWaterMark + LZOP_BLOCK_SIZE + 64, `buffered ${compressor.readableLength}`);
    const out: Buffer[] = [];
    for await (const chunk of compressor) out.push(chunk as Buffer);
    const { code, stdout } = await runLzop(['-dc'], Buffer.concat(out));
    assert.equal(code, 0);
    assert.ok(stdout.equals(input));
  });
});
