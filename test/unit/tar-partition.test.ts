import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import tarStream from 'tar-stream';
import { appendFile, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  WAL_E_PARTITION_LIMITS,
  packPartition,
  partitionTarName,
  partitionsOf,
  planPartitions,
  type Partition,
} from '../../core/tar-partition.js';
import { isWalrusError } from '../../core/errors.js';
import type { DataFile } from '../../core/types.js';
import type { Logger } from '../../core/log.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

function fakeFile(relativePath: string, size: number): DataFile {
  return { relativePath, absolutePath: `/nonexistent/${relativePath}`, type: 'file', size, mode: 0o100600, mtime: new Date(0) };
}
function fakeDirectory(relativePath: string): DataFile {
  return { relativePath, absolutePath: `/nonexistent/${relativePath}`, type: 'directory', size: 0, mode: 0o40700, mtime: new Date(0) };
}

/** Lists a directory the way the source plugin does: lstat walk, pg_tblspc links recorded and followed. */
async function listDirectory(root: string): Promise<DataFile[]> {
  const out: DataFile[] = [];
  async function walk(relative: string, absolute: string): Promise<void> {
    for (const name of (await readdir(absolute)).sort()) {
      const rel = relative ? `${relative}/${name}` : name;
      const abs = path.join(absolute, name);
      const st = await lstat(abs);
      if (st.isSymbolicLink()) {
        const linkTarget = await readlink(abs);
        out.push({ relativePath: rel, absolutePath: abs, type: 'symlink', size: 0, mode: st.mode, mtime: st.mtime, linkTarget });
        if (relative === 'pg_tblspc') await walk(rel, linkTarget);
      } else if (st.isDirectory()) {
        out.push({ relativePath: rel, absolutePath: abs, type: 'directory', size: 0, mode: st.mode, mtime: st.mtime });
        await walk(rel, abs);
      } else {
        out.push({ relativePath: rel, absolutePath: abs, type: 'file', size: st.size, mode: st.mode, mtime: st.mtime });
      }
    }
  }
  await walk('', root);
  return out;
}

function partitionOf(files: DataFile[]): Partition {
  return { number: 0, files, bytes: files.reduce((sum, f) => sum + (f.type === 'file' ? f.size : 0), 0) };
}

async function packToFile(partition: Partition, file: string, options: Parameters<typeof packPartition>[1] = {}): Promise<void> {
  await pipeline(packPartition(partition, options), createWriteStream(file));
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function collectingLogger(lines: string[]): Logger {
  const at = (message: string) => lines.push(message);
  return { error: at, warn: at, info: at, debug: at, addSecrets() {}, flush: async () => {} };
}

describe('planPartitions', () => {
  it('keeps each partition within 1.5 GiB and 6144 members, gives an oversized file its own partition', async () => {
    const files: DataFile[] = [fakeDirectory('base'), fakeDirectory('base/16384')];
    for (let i = 0; i < 400; i += 1) files.push(fakeFile(`base/16384/${10000 + i}`, 7 * MiB + i));
    files.splice(100, 0, fakeFile('base/16384/huge', 2 * GiB)); // bigger than a partition
    files.push(fakeFile('global/pg_control', 8192));

    const partitions = await planPartitions(files);
    assert.deepEqual(partitions.map((p) => p.number), partitions.map((_, i) => i));
    // Every listed entry exactly once, in listing order.
    assert.deepEqual(partitions.flatMap((p) => p.files), files);
    for (const p of partitions) {
      assert.equal(p.bytes, p.files.reduce((s, f) => s + f.size, 0));
      assert.ok(p.files.length <= WAL_E_PARTITION_LIMITS.maxMembers);
      const holdsHuge = p.files.some((f) => f.relativePath === 'base/16384/huge');
      if (holdsHuge) assert.equal(p.files.length, 1, 'the oversized file is alone');
      else assert.ok(p.bytes <= WAL_E_PARTITION_LIMITS.maxBytes, `partition ${p.number} holds ${p.bytes} bytes`);
    }
    const total = files.reduce((s, f) => s + f.size, 0);
    assert.ok(total > 4 * GiB);
    // Greedy filling: no two consecutive ordinary partitions could have been one.
    assert.equal(partitions.length, 4);
    assert.equal(partitions[1].files[0].relativePath, 'base/16384/huge');
  });

  it('caps members at 6144 even when they are tiny', async () => {
    const files = Array.from({ length: 13000 }, (_, i) => fakeFile(`base/1/${i}`, 0));
    const partitions = await planPartitions(files);
    assert.deepEqual(partitions.map((p) => p.files.length), [6144, 6144, 712]);
  });

  it('yields a partition as soon as it is full, before the listing ends', async () => {
    let listed = 0;
    async function* listing(): AsyncGenerator<DataFile> {
      for (let i = 0; i < 100; i += 1) {
        listed += 1;
        yield fakeFile(`f${i}`, 10);
      }
    }
    const seenAt: number[] = [];
    for await (const p of partitionsOf(listing(), { maxBytes: 100, maxMembers: 1000 })) seenAt.push(listed);
    assert.equal(seenAt.length, 10);
    assert.equal(seenAt[0], 11, 'first partition (10 files) handed out when the 11th file arrived');
  });

  it('names partitions like WAL-E', () => {
    assert.equal(partitionTarName(0), 'part_00000000.tar');
    assert.equal(partitionTarName(123), 'part_00000123.tar');
  });
});

describe('packPartition', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'walrus-tar-pack-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('writes a tar that GNU tar lists and extracts to identical bytes (dirs, long and non-ASCII names, tablespace link)', async () => {
    const data = path.join(tmp, 'data1');
    const tablespace = path.join(tmp, 'ts1');
    const longDir = 'd'.repeat(90);
    await mkdir(path.join(data, 'base/16384'), { recursive: true });
    await mkdir(path.join(data, 'pg_wal'), { recursive: true });
    await mkdir(path.join(data, longDir, 'e'.repeat(80)), { recursive: true });
    await mkdir(path.join(data, 'pg_tblspc'), { recursive: true });
    await mkdir(path.join(tablespace, 'PG_15_202209061/16384'), { recursive: true });
    await writeFile(path.join(data, 'PG_VERSION'), '15\n');
    await writeFile(path.join(data, 'base/16384/1259'), randomBytes(3 * 8192 + 17));
    await writeFile(path.join(data, 'base/16384/empty'), '');
    await writeFile(path.join(data, 'base/16384/block'), randomBytes(512));
    await writeFile(path.join(data, longDir, 'e'.repeat(80), 'f'.repeat(60)), randomBytes(1000));
    await writeFile(path.join(data, 'base/16384/naïve-名前'), 'unicode\n');
    await writeFile(path.join(tablespace, 'PG_15_202209061/16384/16390'), randomBytes(70000));
    await symlink(tablespace, path.join(data, 'pg_tblspc/16390'));

    const files = await listDirectory(data);
    const tarFile = path.join(tmp, 'data1.tar');
    let progress = 0;
    let throttled = 0;
    await packToFile(partitionOf(files), tarFile, {
      onBytes: (n) => (progress += n),
      throttle: async (n) => {
        throttled += n;
      },
    });
    const expectedBytes = partitionOf(files).bytes;
    assert.equal(progress, expectedBytes);
    assert.equal(throttled, expectedBytes);

    const listing = execFileSync('tar', ['-tvf', tarFile], { encoding: 'utf8' });
    const lines = listing.trim().split('\n');
    assert.equal(lines.length, files.length);
    assert.match(listing, /^d.* base\/16384\/$/m);
    assert.match(listing, /^l.* pg_tblspc\/16390 -> /m);
    assert.match(listing, new RegExp(`^-.* ${longDir}/e{80}/f{60}$`, 'm'));
    assert.match(listing, /naïve-名前/);
    const rawNames: string[] = [];
    const parser = tarStream.extract();
    parser.on('entry', (header, stream, next) => {
      rawNames.push(header.name);
      stream.resume();
      next();
    });
    await pipeline(createReadStream(tarFile), parser);
    assert.equal(rawNames.length, files.length);
    assert.ok(rawNames.every((n) => !n.startsWith('/')), 'no member name starts with /');
    for (const line of lines.filter((l) => l.startsWith('d'))) assert.match(line, /^drwx------ /);

    const out = path.join(tmp, 'data1-gnu');
    await mkdir(out);
    // GNU tar (rightly) will not write through the link it extracts, so members under the
    // tablespace link are checked by extracting them to stdout instead.
    execFileSync('tar', ['-xf', tarFile, '-C', out, '--exclude=pg_tblspc/16390/*']);
    for (const f of files) {
      const restored = path.join(out, f.relativePath);
      if (f.type === 'file' && f.relativePath.startsWith('pg_tblspc/')) {
        assert.equal(sha256(execFileSync('tar', ['-xOf', tarFile, f.relativePath], { maxBuffer: 1 << 24 })), sha256(await readFile(f.absolutePath)));
      } else if (f.type === 'file') assert.equal(sha256(await readFile(restored)), sha256(await readFile(f.absolutePath)), f.relativePath);
      else if (f.relativePath.startsWith('pg_tblspc/16390/')) continue;
      else if (f.type === 'symlink') assert.equal(await readlink(restored), tablespace);
      else assert.ok((await lstat(restored)).isDirectory());
    }
  });

  it('packs files that grew, shrank or vanished since listing at their listed sizes', async () => {
    const data = path.join(tmp, 'data2');
    await mkdir(data);
    const grown = randomBytes(20000);
    const shrunk = randomBytes(30000);
    await writeFile(path.join(data, 'grows'), grown);
    await writeFile(path.join(data, 'shrinks'), shrunk);
    await writeFile(path.join(data, 'vanishes'), randomBytes(5000));
    const files = await listDirectory(data);

    await appendFile(path.join(data, 'grows'), randomBytes(9000));
    await truncate(path.join(data, 'shrinks'), 1000);
    await rm(path.join(data, 'vanishes'));

    const logLines: string[] = [];
    const tarFile = path.join(tmp, 'data2.tar');
    await packToFile(partitionOf(files), tarFile, { log: collectingLogger(logLines), readChunkSize: 4096 });

    const listing = execFileSync('tar', ['-tvf', tarFile], { encoding: 'utf8' });
    assert.match(listing, / 20000 .* grows$/m);
    assert.match(listing, / 30000 .* shrinks$/m);
    assert.match(listing, / 5000 .* vanishes$/m);
    const out = path.join(tmp, 'data2-gnu');
    await mkdir(out);
    execFileSync('tar', ['-xf', tarFile, '-C', out]); // throws on an invalid archive
    assert.deepEqual(await readFile(path.join(out, 'grows')), grown);
    assert.deepEqual(await readFile(path.join(out, 'shrinks')), Buffer.concat([shrunk.subarray(0, 1000), Buffer.alloc(29000)]));
    assert.deepEqual(await readFile(path.join(out, 'vanishes')), Buffer.alloc(5000));
    assert.ok(logLines.some((l) => l.includes('shrank') && l.includes('shrinks')));
    assert.ok(logLines.some((l) => l.includes('vanished') && l.includes('vanishes')));
  });

  it('adds inline files (backup_label) after the listed ones', async () => {
    const tarFile = path.join(tmp, 'inline.tar');
    const label = Buffer.from('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n');
    await packToFile(partitionOf([]), tarFile, { inlineFiles: [{ name: 'backup_label', content: label }] });
    assert.match(execFileSync('tar', ['-tvf', tarFile], { encoding: 'utf8' }), /^-rw------- .* backup_label$/m);
    assert.deepEqual(execFileSync('tar', ['-xOf', tarFile, 'backup_label']), label);
  });

  it('reads from disk only as fast as the consumer pulls (back-pressure)', async () => {
    const big = path.join(tmp, 'sparse-big');
    await writeFile(big, '');
    await truncate(big, 256 * MiB);
    let read = 0;
    const stream = packPartition(partitionOf([{ ...fakeFile('big', 256 * MiB), absolutePath: big }]), { onBytes: (n) => (read += n) });
    const first = await new Promise<Buffer>((resolve) => stream.once('readable', () => resolve(stream.read())));
    assert.ok(first.length > 0);
    await new Promise((resolve) => setTimeout(resolve, 300)); // a runaway reader would be far past 16 MiB by now
    assert.ok(read < 16 * MiB, `read ${read} bytes ahead of a consumer that took one chunk`);
    stream.destroy();
  });

  it('writes a pax size record for members of 8 GiB and more', async () => {
    const stream = packPartition(partitionOf([fakeFile('base/1/huge', 9 * GiB)])); // vanished: zeros, but we only read the headers
    const chunks: Buffer[] = [];
    let have = 0;
    for await (const chunk of stream) {
      chunks.push(chunk);
      have += chunk.length;
      if (have >= 2048) break;
    }
    const head = Buffer.concat(chunks);
    assert.equal(String.fromCharCode(head[156]), 'x', 'first block is a pax header');
    assert.match(head.subarray(512, 1024).toString('latin1'), new RegExp(`size=${9 * GiB}\n`));
  });

  it('fails the stream with a WalrusError when a listed file cannot be read', async () => {
    const directoryAsFile = { ...fakeFile('not-a-file', 100), absolutePath: tmp };
    await assert.rejects(
      pipeline(packPartition(partitionOf([directoryAsFile])), createWriteStream(path.join(tmp, 'fail.tar'))),
      (error: unknown) => isWalrusError(error) && /cannot read not-a-file/.test(error.message) && /EISDIR/.test(error.message),
    );
  });

  it('refuses member names that are not clean relative paths', async () => {
    for (const name of ['/abs', '../up', 'a/../../b']) {
      await assert.rejects(
        pipeline(packPartition(partitionOf([fakeFile(name, 0)])), createWriteStream(path.join(tmp, 'bad.tar'))),
        (error: unknown) => isWalrusError(error) && error.kind === 'INTERNAL',
      );
    }
  });
});
