import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import { extractPartition } from '../../core/tar-extract.js';
import { packPartition } from '../../core/tar-partition.js';
import { WalrusError, isWalrusError } from '../../core/errors.js';
import type { DataFile } from '../../core/types.js';
import { buildTar } from '../helpers/tar-build.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const FIXTURE_GLOB = `${SHARED_FIXTURES}/wal-e-plain/store/basebackups_005/*/tar_partitions/part_00000000.tar.lzo`;


function streamOf(bytes: Buffer, chunkSize = 4096): Readable {
  return Readable.from((function* () {
    for (let i = 0; i < bytes.length; i += chunkSize) yield bytes.subarray(i, i + chunkSize);
  })(), { objectMode: false });
}

/** Every path under `root`, relative, sorted; links listed, not followed. */
async function treeOf(root: string, skip?: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(dir: string): Promise<void> {
    for (const name of await readdir(dir)) {
      const abs = path.join(dir, name);
      if (abs === skip) continue;
      out.push(path.relative(root, abs));
      const st = await lstat(abs);
      if (st.isDirectory()) await walk(abs);
    }
  }
  await walk(root);
  return out.sort();
}

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
      } else out.push({ relativePath: rel, absolutePath: abs, type: 'file', size: st.size, mode: st.mode, mtime: st.mtime });
    }
  }
  await walk('', root);
  return out;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function isIntegrity(pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(isWalrusError(error), `expected a WalrusError, got ${String(error)}`);
    assert.equal((error as WalrusError).kind, 'INTEGRITY', (error as Error).message);
    assert.match((error as Error).message, pattern);
    return true;
  };
}

describe('extractPartition', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'walrus-tar-extract-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('restores what packPartition wrote: same bytes, files 0600, directories 0700, tablespace linked to its mapped location', async () => {
    const source = path.join(tmp, 'rt-source');
    const tablespace = path.join(tmp, 'rt-ts');
    await mkdir(path.join(source, 'base/16384'), { recursive: true });
    await mkdir(path.join(source, 'pg_tblspc'));
    await mkdir(path.join(source, 'pg_wal'));
    await mkdir(path.join(tablespace, 'PG_15_202209061/16384'), { recursive: true });
    await writeFile(path.join(source, 'PG_VERSION'), '15\n', { mode: 0o644 });
    await writeFile(path.join(source, 'base/16384/1259'), randomBytes(200_000));
    await writeFile(path.join(source, 'base/16384/empty'), '');
    await writeFile(path.join(source, `base/16384/${'n'.repeat(150)}`), randomBytes(10));
    await writeFile(path.join(tablespace, 'PG_15_202209061/16384/16400'), randomBytes(50_000));
    await symlink(tablespace, path.join(source, 'pg_tblspc/16390'));
    const files = await listDirectory(source);
    const bytes = files.reduce((s, f) => s + f.size, 0);

    const target = path.join(tmp, 'rt-target');
    const restoredTablespace = path.join(tmp, 'rt-ts-restored');
    await mkdir(target, { mode: 0o700 });
    const result = await extractPartition(packPartition({ number: 0, files, bytes }), target, {
      tablespaceMap: { 'pg_tblspc/16390': restoredTablespace },
    });
    assert.deepEqual(result, { files: files.filter((f) => f.type === 'file').length, bytes });

    assert.equal(await readlink(path.join(target, 'pg_tblspc/16390')), restoredTablespace);
    assert.equal((await lstat(restoredTablespace)).mode & 0o777, 0o700);
    for (const f of files) {
      const restored = path.join(target, f.relativePath);
      const st = await lstat(restored);
      if (f.type === 'file') {
        assert.equal(sha256(await readFile(restored)), sha256(await readFile(f.absolutePath)), f.relativePath);
        assert.equal(st.mode & 0o777, 0o600, f.relativePath);
      } else if (f.type === 'directory') {
        assert.ok(st.isDirectory());
        assert.equal(st.mode & 0o777, 0o700, f.relativePath);
      } else assert.ok(st.isSymbolicLink());
    }
    assert.ok(existsSync(path.join(restoredTablespace, 'PG_15_202209061/16384/16400')), 'tablespace files live in the mapped location');
    assert.deepEqual(await treeOf(target), (await treeOf(source)).sort());
  });

  it('restores the WAL-E fixture partition (leading-slash names) like GNU tar does', async () => {
    const raw = execFileSync('sh', ['-c', `lzop -dc ${FIXTURE_GLOB}`], { maxBuffer: 256 << 20 });
    const names: string[] = [];
    const parser = tarStream.extract();
    parser.on('entry', (header, stream, next) => {
      names.push(header.name);
      stream.resume();
      next();
    });
    await new Promise<void>((resolve, reject) => {
      parser.on('finish', () => resolve());
      parser.on('error', reject);
      parser.end(raw);
    });
    assert.ok(names.includes('/'), 'the fixture has WAL-E\'s leading-slash root entry');

    const target = path.join(tmp, 'wal-e');
    await mkdir(target, { mode: 0o700 });
    const lzop = spawn('sh', ['-c', `lzop -dc ${FIXTURE_GLOB}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    const result = await extractPartition(lzop.stdout, target);
    assert.equal(await readFile(path.join(target, 'PG_VERSION'), 'utf8'), '15\n');
    assert.ok((await lstat(path.join(target, 'global/pg_control'))).isFile());
    assert.ok((await lstat(path.join(target, 'pg_wal'))).isDirectory());

    const reference = path.join(tmp, 'wal-e-gnu');
    await mkdir(reference);
    execFileSync('tar', ['-xf', '-', '-C', reference], { input: raw, stdio: ['pipe', 'ignore', 'ignore'] });
    const tree = await treeOf(target);
    assert.deepEqual(tree, await treeOf(reference));
    let files = 0;
    for (const rel of tree) {
      const st = await lstat(path.join(target, rel));
      if (!st.isFile()) continue;
      files += 1;
      assert.equal(sha256(await readFile(path.join(target, rel))), sha256(await readFile(path.join(reference, rel))), rel);
    }
    assert.equal(result.files, files);
  });

  it('puts WAL-E tablespace members (no link entry) in the mapped location, or in place without a map', async () => {
    const archive = await buildTar([
      { header: { name: '/pg_tblspc/', type: 'directory', mode: 0o700 } },
      { header: { name: '/pg_tblspc/16385/PG_15_202209061/16384/', type: 'directory', mode: 0o700 } },
      { header: { name: '/pg_tblspc/16385/PG_15_202209061/16384/16386', type: 'file', mode: 0o600 }, body: Buffer.from('rel') },
    ]);
    const mapped = path.join(tmp, 'ts-lazy-target');
    const location = path.join(tmp, 'ts-lazy-location');
    await mkdir(mapped);
    await extractPartition(streamOf(archive), mapped, { tablespaceMap: { 'pg_tblspc/16385': location } });
    assert.equal(await readlink(path.join(mapped, 'pg_tblspc/16385')), location);
    assert.equal(await readFile(path.join(location, 'PG_15_202209061/16384/16386'), 'utf8'), 'rel');

    const inPlace = path.join(tmp, 'ts-in-place');
    await mkdir(inPlace);
    await extractPartition(streamOf(archive), inPlace);
    assert.ok((await lstat(path.join(inPlace, 'pg_tblspc/16385'))).isDirectory());
    assert.equal(await readFile(path.join(inPlace, 'pg_tblspc/16385/PG_15_202209061/16384/16386'), 'utf8'), 'rel');
  });

  it('restores a pg_wal symlink entry as a directory', async () => {
    const target = path.join(tmp, 'pg-wal-link');
    await mkdir(target);
    await extractPartition(streamOf(await buildTar([{ header: { name: 'pg_wal', type: 'symlink', linkname: '/mnt/wal' } }])), target);
    const st = await lstat(path.join(target, 'pg_wal'));
    assert.ok(st.isDirectory() && !st.isSymbolicLink());
  });

  it('writes a leading-slash absolute name under the data directory, never at the absolute path', async () => {
    const target = path.join(tmp, 'abs-name');
    await mkdir(target);
    assert.ok(!existsSync('/etc/walrus-evil'));
    await extractPartition(streamOf(await buildTar([{ header: { name: '/etc/walrus-evil', type: 'file' }, body: Buffer.from('x') }])), target);
    assert.equal(await readFile(path.join(target, 'etc/walrus-evil'), 'utf8'), 'x');
    assert.ok(!existsSync('/etc/walrus-evil'));
  });

  it('writes a file larger than the early-writeback interval byte for byte, between small files, and a repeated name once', async () => {
    // 40 MiB: over the 1 MiB small-file bound (written through libuv's pool) and the 32 MiB at
    // which a flush of the part written so far is started while the rest is still written
    const big = Buffer.alloc(40 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) randomBytes(64).copy(big, i);
    const first = randomBytes(3000);
    const again = randomBytes(700);
    const archive = await buildTar([
      { header: { name: 'base/1/1', type: 'file' }, body: first },
      { header: { name: 'base/1/16384', type: 'file' }, body: big },
      { header: { name: 'base/1/2', type: 'file' }, body: Buffer.alloc(0) },
      { header: { name: 'base/1/1', type: 'file' }, body: again }, // a later member of the same name wins, as with tar
    ]);
    const target = path.join(tmp, 'large-file');
    await mkdir(target);
    const result = await extractPartition(streamOf(archive, 256 * 1024), target);
    assert.deepEqual(result, { files: 4, bytes: first.length + big.length + again.length });
    assert.equal(sha256(await readFile(path.join(target, 'base/1/16384'))), sha256(big));
    assert.deepEqual(await readFile(path.join(target, 'base/1/1')), again);
    assert.equal((await lstat(path.join(target, 'base/1/2'))).size, 0);
    assert.equal((await lstat(path.join(target, 'base/1/16384'))).mode & 0o777, 0o600);
  });

  it('removes a large file cut after its early writeback started', async () => {
    const archive = await buildTar([{ header: { name: 'base/1/16384', type: 'file' }, body: randomBytes(36 * 1024 * 1024) }]);
    const target = path.join(tmp, 'large-file-cut');
    await mkdir(target);
    await assert.rejects(extractPartition(streamOf(archive.subarray(0, 34 * 1024 * 1024), 256 * 1024), target), isIntegrity(/truncated archive.*base\/1\/16384/));
    assert.ok(!existsSync(path.join(target, 'base/1/16384')), 'no partial file left');
  });

  it('propagates the source\'s own error and removes the file it was writing', async () => {
    const archive = await buildTar([{ header: { name: 'base/1/big', type: 'file' }, body: randomBytes(100_000) }]);
    const target = path.join(tmp, 'source-error');
    await mkdir(target);
    const failing = Readable.from((async function* () {
      yield archive.subarray(0, 20_000);
      throw new WalrusError('KEY', 'wrong passphrase for the test');
    })(), { objectMode: false });
    await assert.rejects(extractPartition(failing, target), (e: unknown) => isWalrusError(e) && e.kind === 'KEY');
    assert.ok(!existsSync(path.join(target, 'base/1/big')), 'no partial file left');
  });

  it('a write that fails (over the file size limit: EFBIG, as a full disk gives ENOSPC) is LOCAL_IO naming the file, not a truncated archive; the partial file is removed', async () => {
    const archive = await buildTar([
      { header: { name: 'base/1/small', type: 'file' }, body: Buffer.from('fits') },
      { header: { name: 'base/1/big', type: 'file' }, body: randomBytes(3 * 1024 * 1024) },
    ]);
    const tarFile = path.join(tmp, 'write-fails.tar');
    await writeFile(tarFile, archive);
    const target = path.join(tmp, 'write-fails');
    await mkdir(target);
    // extractPartition in a child whose file size limit is 1 MiB (Node ignores SIGXFSZ: the write gets EFBIG)
    const script = [
      `import { createReadStream } from 'node:fs';`,
      `import { extractPartition } from ${JSON.stringify(new URL('../../core/tar-extract.ts', import.meta.url).href)};`,
      `try { await extractPartition(createReadStream(process.argv[1]), process.argv[2], { fsync: false }); console.log('{"extracted":true}'); }`,
      `catch (e) { console.log(JSON.stringify({ kind: e.kind, exitCode: e.exitCode, message: e.message, detail: e.detail })); }`,
    ].join('\n');
    const out = execFileSync('/bin/sh', ['-c', 'ulimit -f 2048; exec "$@"', 'sh', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script, tarFile, target], { encoding: 'utf8' });
    const failure = JSON.parse(out.trim().split('\n').pop()!);
    assert.equal(failure.kind, 'LOCAL_IO', out);
    assert.equal(failure.exitCode, 10);
    assert.equal(failure.message, `writing ${path.join(target, 'base/1/big')} failed: EFBIG`);
    assert.match(failure.detail, /the partial file was removed/);
    assert.ok(!existsSync(path.join(target, 'base/1/big')), 'no partial file left');
    assert.equal(await readFile(path.join(target, 'base/1/small'), 'utf8'), 'fits');
  });

  describe('hostile archives: refused with INTEGRITY, nothing written outside the data directory', () => {
    let caseNumber = 0;
    /** Runs one archive into a fresh data directory; checks the refusal and that nothing outside changed. */
    async function expectRefused(
      archive: Buffer,
      pattern: RegExp,
      options: { prepare?: (data: string, outside: string) => Promise<void>; map?: Record<string, string>; mustNotExist?: (data: string, outside: string) => string[] } = {},
    ) {
      caseNumber += 1;
      const root = path.join(tmp, `hostile-${caseNumber}`);
      const data = path.join(root, 'data');
      const outside = path.join(root, 'outside');
      await mkdir(data, { recursive: true });
      await mkdir(outside);
      await options.prepare?.(data, outside);
      const before = await treeOf(root, data);
      await assert.rejects(extractPartition(streamOf(archive), data, { tablespaceMap: options.map }), isIntegrity(pattern));
      assert.deepEqual(await treeOf(root, data), before, 'nothing appeared outside the data directory');
      for (const p of [path.join(root, 'evil'), path.join(outside, 'evil'), ...(options.mustNotExist?.(data, outside) ?? [])]) {
        assert.ok(!existsSync(p), `${p} must not exist`);
      }
      return data;
    }

    it('refuses ../evil', async () => {
      await expectRefused(await buildTar([{ header: { name: '../evil', type: 'file' }, body: Buffer.from('x') }]), /"\.\.\/evil".*`\.\.`/);
    });

    it('refuses a/../../evil', async () => {
      await expectRefused(await buildTar([{ header: { name: 'a/../../evil', type: 'file' }, body: Buffer.from('x') }]), /a\/\.\.\/\.\.\/evil/);
    });

    it('refuses a symlink x -> outside and never writes x/evil through it', async () => {
      const data = await expectRefused(
        await buildTar([
          { header: { name: 'x', type: 'symlink', linkname: '/tmp/walrus-outside-never' } },
          { header: { name: 'x/evil', type: 'file' }, body: Buffer.from('x') },
        ]),
        /"x": symbolic link/,
        { mustNotExist: () => ['/tmp/walrus-outside-never'] },
      );
      assert.ok(!existsSync(path.join(data, 'x')));
    });

    it('refuses to write through a link already in the data directory', async () => {
      await expectRefused(await buildTar([{ header: { name: 'pg_tblspc/9/evil', type: 'file' }, body: Buffer.from('x') }]), /pg_tblspc\/9 is a symbolic link/, {
        prepare: async (data, outside) => {
          await mkdir(path.join(data, 'pg_tblspc'));
          await symlink(outside, path.join(data, 'pg_tblspc/9'));
        },
      });
    });

    it('refuses a pg_tblspc/<oid> link without a mapped location, and the file under it', async () => {
      const data = await expectRefused(
        await buildTar([
          { header: { name: 'pg_tblspc/1', type: 'symlink', linkname: '/tmp/walrus-t-never' } },
          { header: { name: 'pg_tblspc/1/evil', type: 'file' }, body: Buffer.from('x') },
        ]),
        /pg_tblspc\/1.*no location given/,
        { mustNotExist: () => ['/tmp/walrus-t-never'] },
      );
      assert.ok(!existsSync(path.join(data, 'pg_tblspc/1')));
    });

    it('refuses a file that would replace a mapped tablespace link', async () => {
      await expectRefused(
        await buildTar([
          { header: { name: 'pg_tblspc/1', type: 'symlink', linkname: '/x' } },
          { header: { name: 'pg_tblspc/1', type: 'file' }, body: Buffer.from('x') },
        ]),
        /in place of a tablespace link/,
        { map: { 'pg_tblspc/1': path.join(tmp, 'mapped-ts-1') } },
      );
    });

    it('refuses a hard link', async () => {
      await expectRefused(
        await buildTar([
          { header: { name: 'PG_VERSION', type: 'file' }, body: Buffer.from('15\n') },
          { header: { name: 'evil', type: 'link', linkname: '/etc/passwd' } },
        ]),
        /hard link/,
      );
    });

    it('refuses a character device', async () => {
      await expectRefused(await buildTar([{ header: { name: 'dev', type: 'character-device', devmajor: 1, devminor: 3 } }]), /character-device/);
    });

    it('refuses a block device and a FIFO', async () => {
      await expectRefused(await buildTar([{ header: { name: 'blk', type: 'block-device', devmajor: 8, devminor: 0 } }]), /block-device/);
      await expectRefused(await buildTar([{ header: { name: 'fifo', type: 'fifo' } }]), /fifo/);
    });

    it('refuses a NUL byte in a (pax) name', async () => {
      await expectRefused(await buildTar([{ header: { name: 'é\0evil', type: 'file' }, body: Buffer.from('x') }]), /NUL byte/);
    });

    it('refuses a file named as the data directory itself', async () => {
      await expectRefused(await buildTar([{ header: { name: '/', type: 'file' }, body: Buffer.from('x') }]), /data directory itself/);
    });

    it('refuses a stream cut inside a member and removes the partial file', async () => {
      const archive = await buildTar([
        { header: { name: 'PG_VERSION', type: 'file' }, body: Buffer.from('15\n') },
        { header: { name: 'base/1/2', type: 'file' }, body: randomBytes(100_000) },
      ]);
      const data = await expectRefused(archive.subarray(0, archive.length - 2000), /truncated archive.*base\/1\/2/);
      assert.ok(!existsSync(path.join(data, 'base/1/2')), 'partial file removed');
      assert.equal(await readFile(path.join(data, 'PG_VERSION'), 'utf8'), '15\n', 'complete members before the cut stay');
    });

    it('refuses a stream cut at a member boundary (end-of-archive blocks missing)', async () => {
      const archive = await buildTar([{ header: { name: 'base/1/2', type: 'file' }, body: randomBytes(4096) }]);
      await expectRefused(archive.subarray(0, archive.length - 1024), /truncated archive.*end-of-archive/);
    });

    it('refuses a header claiming 1 MB when the stream ends after 10 KB', async () => {
      const archive = await buildTar([{ header: { name: 'big', type: 'file' }, body: randomBytes(1024 * 1024) }]);
      const data = await expectRefused(archive.subarray(0, 512 + 10 * 1024), /truncated archive.*"big"/);
      assert.ok(!existsSync(path.join(data, 'big')));
    });

    it('refuses a corrupt header', async () => {
      const archive = await buildTar([{ header: { name: 'PG_VERSION', type: 'file' }, body: Buffer.from('15\n') }]);
      archive[10] ^= 0xff; // inside the name field: checksum no longer matches
      await expectRefused(archive, /corrupt archive/);
    });
  });
});
