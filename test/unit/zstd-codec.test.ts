/**
 * The zstd codec against the real `zstd` CLI (1.5.4), real WAL from the fixtures, the registry, file
 * storage and the gpg cipher.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { silentLogger } from '../../core/log.js';
import { assertIntegrity, fixtureGpgCipher, objectRoundTrips, runStream, runTool, toolOutput } from '../helpers/codec-streams.js';
import { createCodec, pluginOptionProblems } from '../../core/registry.js';
import type { Codec } from '../../core/types.js';
import { createZstdCodec, manifest } from '../../plugins/zstd/index.js';
import { ZSTD_MAGIC } from '../../plugins/zstd/zstd-stream.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const context = { log: silentLogger, configDirectory: '/tmp', instanceName: 'zstd' };
const codec = (await manifest.create({}, context)) as Codec;

// ---------------------------------------------------------------- helpers

const zstdCli = (args: string[], input: Buffer) => toolOutput('zstd', args, input);
const run = runStream;

const walrusCompress = (input: Buffer) => run(codec.compress(), input);
const walrusDecompress = (input: Buffer | Iterable<Buffer> | AsyncIterable<Buffer>, chunkSize?: number) => run(codec.decompress(), input, chunkSize);


const uint32le = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

/** Runs a shell pipeline (fixed strings only) and returns its standard output. */
async function shell(script: string): Promise<Buffer> {
  const r = await runTool('sh', ['-c', script], Buffer.alloc(0));
  assert.equal(r.code, 0, `${script}: ${r.stderr}`);
  return r.stdout;
}

/** A real 16 MiB WAL segment written by PostgreSQL (the WAL-E fixture, lzop-compressed). */
const walSegment = (await runTool('lzop', ['-dc'], await readFile(`${SHARED_FIXTURES}/wal-e-plain/store/wal_005/000000010000000200000031.lzo`))).stdout;

const inputs: Record<string, Buffer> = {
  'a 16 MiB WAL segment': walSegment,
  'random data (5 MiB + 3 bytes)': randomBytes(5 * 1024 * 1024 + 3),
  'one byte': Buffer.from([0x42]),
  '1 MiB of zeros': Buffer.alloc(1024 * 1024),
};

/** Frame_Header_Descriptor flags. */
const CHECKSUM = 0x04;
const SINGLE_SEGMENT = 0x20;

// ---------------------------------------------------------------- tests

describe('zstd codec', () => {
  test('the WAL fixture is a real 16 MiB segment', () => {
    assert.equal(walSegment.length, 16 * 1024 * 1024);
    assert.equal(walSegment.readUInt16LE(0) & 0xff00, 0xd100, 'PostgreSQL 15 WAL page magic 0xD110');
  });

  for (const [name, input] of Object.entries(inputs)) {
    test(`round trip and zstd -d interop: ${name}`, async () => {
      const stored = await walrusCompress(input);
      assert.ok(codec.recognizes(stored.subarray(0, 16)));
      assert.ok(stored[4]! & CHECKSUM, 'the frame carries a content checksum');
      assert.ok((await walrusDecompress(stored)).equals(input), 'walrus decodes its own output');
      assert.ok((await walrusDecompress(stored, 4093)).equals(input), 'also fed in odd-sized chunks');
      assert.ok((await zstdCli(['-d', '-c'], stored)).equals(input), 'zstd -d decodes it byte-exact');
    });
  }

  test('a WAL segment compresses well', async () => {
    const stored = await walrusCompress(walSegment);
    assert.ok(stored.length < walSegment.length / 2, `stored ${stored.length} bytes`);
  });

  test('empty input: one empty frame, which zstd -d and walrus both read as empty', async () => {
    const stored = await walrusCompress(Buffer.alloc(0));
    assert.ok(codec.recognizes(stored));
    assert.equal((await walrusDecompress(stored)).length, 0);
    assert.equal((await zstdCli(['-d', '-c'], stored)).length, 0);
  });

  test('level option: 1 and 19 write frames zstd -d reads; 19 is smaller than 1 on WAL', async () => {
    const input = walSegment.subarray(0, 2 * 1024 * 1024);
    const sizes: number[] = [];
    for (const level of [1, 19]) {
      const stored = await run(createZstdCodec({ level }).compress(), input);
      assert.ok((await zstdCli(['-d', '-c'], stored)).equals(input), `level ${level}`);
      assert.ok((await walrusDecompress(stored)).equals(input), `level ${level}`);
      sizes.push(stored.length);
    }
    assert.ok(sizes[1]! < sizes[0]!, `level 19 ${sizes[1]} bytes, level 1 ${sizes[0]}`);
  });

  test('options schema: level is an optional integer 1..19', () => {
    const problems = (options: Record<string, unknown>) => pluginOptionProblems(undefined, manifest, options, ['compression']);
    assert.equal(problems({}).length, 0);
    assert.equal(problems({ level: 1 }).length, 0);
    assert.equal(problems({ level: 19 }).length, 0);
    for (const bad of [{ level: 0 }, { level: 20 }, { level: 2.5 }, { level: 'fast' }, { speed: 1 }]) assert.ok(problems(bad).length > 0, JSON.stringify(bad));
  });

  test('walrus decodes what the zstd CLI writes (levels, multithreaded, concatenated, skippable frames)', async () => {
    const input = walSegment.subarray(0, 6 * 1024 * 1024 + 5);
    for (const args of [['-c'], ['-c', '-1'], ['-c', '-19'], ['-c', '-T2'], ['-c', '--long=27']]) {
      const stored = await zstdCli(args, input);
      assert.ok((await walrusDecompress(stored)).equals(input), `zstd ${args.join(' ')}`);
    }
    const a = randomBytes(70000);
    const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18]), uint32le(5), Buffer.from('hello')]);
    const stored = Buffer.concat([await zstdCli(['-c'], a), skippable, await walrusCompress(input)]);
    assert.ok((await zstdCli(['-d', '-c'], stored)).equals(Buffer.concat([a, input])));
    assert.ok((await walrusDecompress(stored, 1000)).equals(Buffer.concat([a, input])));
  });

  test('a flipped byte in the middle of a stored object is an INTEGRITY error', async () => {
    const input = walSegment.subarray(0, 3 * 1024 * 1024);
    for (const stored of [await walrusCompress(input), await zstdCli(['-c'], input), await walrusCompress(randomBytes(300000))]) {
      for (const at of [Math.floor(stored.length / 2), Math.floor(stored.length / 3), stored.length - 2, 4, 6]) {
        const damaged = Buffer.from(stored);
        damaged[at] ^= 0x01;
        await assertIntegrity(walrusDecompress(damaged), /zstd/);
      }
    }
  });

  test('a truncated object is an INTEGRITY error, wherever it is cut', async () => {
    const stored = await walrusCompress(walSegment.subarray(0, 2 * 1024 * 1024 + 100));
    for (const length of [1, 3, 4, 5, 6, 100, Math.floor(stored.length / 2), stored.length - 4, stored.length - 1]) {
      await assertIntegrity(walrusDecompress(stored.subarray(0, length)), /truncated/);
    }
    await assertIntegrity(walrusDecompress(Buffer.alloc(0)), /empty/);
  });

  test('input that is not zstd, trailing garbage and unchecked frames are refused', async () => {
    const lzop = (await runTool('lzop', ['-c'], Buffer.from('hello'))).stdout;
    await assertIntegrity(walrusDecompress(lzop), /not a zstd stream/);
    const stored = await walrusCompress(Buffer.from('hello'));
    await assertIntegrity(walrusDecompress(Buffer.concat([stored, Buffer.from('garbage!')])), /trailing garbage/);
    await assertIntegrity(walrusDecompress(Buffer.concat([stored, Buffer.from('xy')])), /truncated/);
    await assertIntegrity(walrusDecompress(await zstdCli(['-c', '--no-check'], Buffer.from('hello'))), /no checksum/);
  });

  test('hostile headers asking for a huge window are refused before it is allocated', async () => {
    // window descriptor 2^31 (exponent 21 + 10)
    await assertIntegrity(walrusDecompress(Buffer.concat([ZSTD_MAGIC, Buffer.from([CHECKSUM, 21 << 3]), Buffer.alloc(64)])), /window larger than/);
    // single segment: the window is the content size, 2^40
    const size = Buffer.alloc(8);
    size.writeBigUInt64LE(2n ** 40n);
    await assertIntegrity(walrusDecompress(Buffer.concat([ZSTD_MAGIC, Buffer.from([0xc0 | SINGLE_SEGMENT | CHECKSUM]), size, Buffer.alloc(64)])), /window larger than/);
    // what `zstd --long=31` writes from a pipe (window 2 GiB): `zstd -d` refuses it too without --memory
    const long = await shell('head -c 100000 /dev/zero | zstd -c --long=31');
    await assertIntegrity(walrusDecompress(long), /window larger than/);
    assert.notEqual((await runTool('zstd', ['-d', '-c'], long)).code, 0);
  });

  test('decoding waits for the reader: a 256 MiB bomb of zeros is not decoded ahead into memory', async () => {
    const bomb = await shell('head -c 268435456 /dev/zero | zstd -c -1');
    assert.ok(bomb.length < 64 * 1024, `bomb is ${bomb.length} bytes`);
    const decompress = codec.decompress();
    decompress.write(bomb);
    decompress.end();
    // Let the coder run as far as it will without a reader.
    for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.ok(decompress.readableLength <= 4 * 1024 * 1024, `${decompress.readableLength} bytes decoded ahead of the reader`);
    // Then a reader gets all of it.
    let total = 0;
    let nonZero = false;
    for await (const chunk of decompress) {
      total += (chunk as Buffer).length;
      if (!nonZero && (chunk as Buffer).some((b) => b !== 0)) nonZero = true;
    }
    assert.equal(total, 268435456);
    assert.equal(nonZero, false);
  });

  test('recognizes() checks the zstd frame magic', () => {
    assert.equal(codec.recognizes(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x00])), true);
    assert.equal(codec.recognizes(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), true);
    assert.equal(codec.recognizes(Buffer.from([0x28, 0xb5, 0x2f])), false);
    assert.equal(codec.recognizes(Buffer.alloc(0)), false);
    assert.equal(codec.recognizes(Buffer.from([0x04, 0x22, 0x4d, 0x18, 0x64])), false, 'lz4 magic');
    assert.equal(codec.recognizes(Buffer.from([0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a])), false, 'lzop magic');
  });

  test('loads through the registry by name, at the default level 3', async () => {
    const byName = await createCodec('zstd', { configDirectory: '/tmp', log: silentLogger }, ['servers', 'db1', 'compression']);
    assert.ok(byName);
    assert.equal(byName.name, 'zstd');
    assert.equal(byName.suffix, '.zst');
    const input = walSegment.subarray(0, 1024 * 1024);
    const stored = await run(byName.compress(), input);
    assert.ok(stored.equals(await run(createZstdCodec({ level: 3 }).compress(), input)), 'same bytes as level 3');
    assert.ok((await zstdCli(['-d', '-c'], stored)).equals(input));
  });

  describe('through writeObject/openObject on file storage', () => {
    const trips = objectRoundTrips(codec);
    after(() => trips.close());
    const roundTrip = trips.roundTrip;

    test('a WAL segment, plain: the stored file is what zstd -d reads', async () => {
      const stored = await roundTrip('db1/wal_005/000000010000000200000031.zst', walSegment, null);
      assert.ok((await zstdCli(['-d', '-c'], stored)).equals(walSegment));
    });

    test('a WAL segment, encrypted with the gpg cipher', async () => {
      const cipher = await fixtureGpgCipher();
      const stored = await roundTrip('db1/wal_005/000000010000000200000032.zst', walSegment.subarray(0, 4 * 1024 * 1024), cipher);
      assert.ok(!codec.recognizes(stored), 'stored encrypted, not as zstd');
    });
  });
});
