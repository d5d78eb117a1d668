/**
 * `walrus verify` through the real bin/walrus, against the archives the real WAL-E wrote
 * (shared/fixtures), read in place (verify writes nothing), and against copies of them damaged
 * the ways storage loses data: a segment gone, a byte flipped in a partition or a WAL object.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, cp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createGnupgHome, type GnupgHome } from '../helpers/gnupg.js';
import { makeTempDirectory, runWalrus, simpleFleet, writeFleetConfig } from '../helpers/walrus-cli.js';
import { SHARED_FIXTURES } from '../helpers/shared-fixtures.js';

const FIXTURES = SHARED_FIXTURES;
const PLAIN = {
  fixture: 'wal-e-plain',
  backup: 'base_000000010000000200000032_00000032',
  segments: ['000000010000000200000031', '000000010000000200000032', '000000010000000200000033', '000000010000000200000034', '000000010000000200000035'],
};
const GPG = {
  fixture: 'wal-e-gpg',
  backup: 'base_00000001000000000000001D_0000001D',
  segments: ['00000001000000000000001C', '00000001000000000000001D', '00000001000000000000001E', '00000001000000000000001F'],
};
type Fixture = typeof PLAIN;

const partitionKey = (f: Fixture) => `basebackups_005/${f.backup}/tar_partitions/part_00000000.tar.lzo`;
const sentinelKey = (f: Fixture) => `basebackups_005/${f.backup}_backup_stop_sentinel.json`;

function fixtureGpgKey(): Record<string, string> {
  const dir = join(FIXTURES, 'wal-e-gpg');
  return { publicKey: `\${file:${dir}/public-key.asc}`, secretKey: `\${file:${dir}/secret-key.asc}`, passphrase: `\${file:${dir}/passphrase.txt}` };
}

let temp: { path: string; cleanup: () => Promise<void> };
let gnupg: GnupgHome | undefined;
before(async () => {
  temp = await makeTempDirectory('verify');
});
after(async () => {
  await gnupg?.cleanup();
  await temp?.cleanup();
});

let configs = 0;
/** A fleet config for `store` (a storage root with the fixture's tree at prefix ''). */
async function fleetFor(store: string, gpgKey?: Record<string, string>): Promise<string> {
  const n = ++configs;
  return writeFleetConfig(join(temp.path, `fleet-${n}.yaml`), simpleFleet({ storage: store, dataDirectory: join(temp.path, `data-${n}`), prefix: '', gpgKey, poolSize: 2 }));
}

/** A writable copy of a fixture's store. */
async function copyStore(f: Fixture, label: string): Promise<string> {
  const store = join(temp.path, label);
  await cp(join(FIXTURES, f.fixture, 'store'), store, { recursive: true });
  await chmodTree(store);
  return store;
}

async function chmodTree(path: string): Promise<void> {
  const s = await stat(path);
  await chmod(path, s.isDirectory() ? 0o755 : 0o644);
  if (s.isDirectory()) for (const e of await readdir(path)) await chmodTree(join(path, e));
}

/** Flips one bit of the byte in the middle of the file. */
async function flipMiddleByte(path: string): Promise<void> {
  const b = await readFile(path);
  b[b.length >> 1] ^= 0x10;
  await writeFile(path, b);
}

/** Every file under `dir` with size, mtime and SHA-256: to show verify changed nothing. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const s = await stat(p);
        out[p] = `${s.size} ${s.mtimeMs} ${createHash('sha256').update(await readFile(p)).digest('hex')}`;
      }
    }
  };
  await walk(dir);
  return out;
}

function sha256OfCommand(command: string, args: string[], inputPath: string): Promise<{ sha256: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    const hash = createHash('sha256');
    let bytes = 0;
    child.stdout.on('data', (b: Buffer) => {
      hash.update(b);
      bytes += b.length;
    });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve({ sha256: hash.digest('hex'), bytes }) : reject(new Error(`${command} exited ${code}`))));
    createReadStream(inputPath).pipe(child.stdin);
  });
}

async function fileDigest(path: string): Promise<{ sha256: string; bytes: number }> {
  const b = await readFile(path);
  return { sha256: createHash('sha256').update(b).digest('hex'), bytes: b.length };
}

describe('verify against the WAL-E fixtures, read in place', () => {
  for (const f of [PLAIN, GPG]) {
    test(`${f.fixture}: ok, exit 0, and the store is unchanged`, async () => {
      const store = join(FIXTURES, f.fixture, 'store');
      const before = await snapshot(store);
      const config = await fleetFor(store, f === GPG ? fixtureGpgKey() : undefined);
      const r = await runWalrus(['verify'], { config, server: 'db1', timeoutMs: 180_000 });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, new RegExp(`^backup ${f.backup}: ok `, 'm'));
      // the WAL before the oldest backup's start is not part of the chain
      assert.match(r.stdout, new RegExp(`^WAL ${f.segments[1]} to ${f.segments[f.segments.length - 1]} \\(timeline 1\\): ${f.segments.length - 1} segments, no gap, ${f.segments.length - 1} read to the end$`, 'm'));
      assert.match(r.stdout, /^verify: ok \(1 backup, /m);
      assert.doesNotMatch(r.stdout, /problem/);
      assert.deepEqual(await snapshot(store), before, 'verify wrote nothing');
    });
  }

  test('--json: ok, backups, WAL range, no problems', async () => {
    const config = await fleetFor(join(FIXTURES, PLAIN.fixture, 'store'));
    const r = await runWalrus(['verify', '--json'], { config, server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, true);
    assert.deepEqual(
      report.backups.map((b: any) => [b.name, b.ok, b.problems, b.objects, b.checksums]),
      [[PLAIN.backup, true, [], 2, false]],
    );
    assert.equal(report.wal.from, PLAIN.segments[1]);
    assert.equal(report.wal.to, PLAIN.segments[4]);
    assert.equal(report.wal.segments, 4);
    assert.deepEqual(report.wal.gaps, []);
    assert.deepEqual(report.problems, []);
    // 4 segments of 16 MiB plus the tar partition, decoded in full
    assert.ok(report.decodedBytes > 4 * 16 * 1024 * 1024, String(report.decodedBytes));
  });
});

test('--backup and --sql without --drill: usage error, exit 2', async () => {
  const config = await fleetFor(join(FIXTURES, PLAIN.fixture, 'store'));
  const r = await runWalrus(['verify', '--sql', 'select 1'], { config, server: 'db1' });
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /--backup and --sql go with --drill/);
});

describe('verify finds damage in copies of the fixtures', () => {
  test('a WAL segment deleted in the middle: exit 4, the segment and its key named', async () => {
    const store = await copyStore(PLAIN, 'missing-segment');
    await rm(join(store, 'wal_005', `${PLAIN.segments[3]}.lzo`));
    const config = await fleetFor(store);
    const r = await runWalrus(['verify'], { config, server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stdout + r.stderr);
    const line = r.stdout.split('\n').find((l) => l.startsWith('problem: '));
    assert.equal(
      line,
      `problem: missing WAL segment ${PLAIN.segments[3]} (between ${PLAIN.segments[2]} and ${PLAIN.segments[4]}): file://${store}/wal_005/${PLAIN.segments[3]}.lzo`,
    );
    assert.equal(r.stdout.split('\n').filter((l) => l.startsWith('problem: ')).length, 1, r.stdout);
    assert.match(r.stdout, new RegExp(`^backup ${PLAIN.backup}: ok `, 'm'), 'the backup itself needs only its own segment');
    assert.match(r.stderr, /verify found 1 problem/);

    const j = await runWalrus(['verify', '--json'], { config, server: 'db1', timeoutMs: 180_000 });
    assert.equal(j.code, 4);
    const report = JSON.parse(j.stdout);
    assert.equal(report.ok, false);
    assert.deepEqual(
      report.wal.gaps.map((g: any) => [g.first, g.last, g.count, g.before, g.after]),
      [[PLAIN.segments[3], PLAIN.segments[3], 1, PLAIN.segments[2], PLAIN.segments[4]]],
    );
    assert.deepEqual(report.problems.map((p: any) => [p.kind, p.key]), [['INTEGRITY', `wal_005/${PLAIN.segments[3]}.lzo`]]);
  });

  test("the backup's own start segment deleted: the backup is not ok", async () => {
    const store = await copyStore(PLAIN, 'missing-start');
    await rm(join(store, 'wal_005', `${PLAIN.segments[1]}.lzo`));
    const r = await runWalrus(['verify', '--json'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.backups[0].ok, false);
    assert.match(report.backups[0].problems[0].message, new RegExp(`backup ${PLAIN.backup} needs WAL segment ${PLAIN.segments[1]} .*not archived: file://`));
  });

  test('one flipped byte in the tar partition: exit 4 naming the partition', async () => {
    const store = await copyStore(PLAIN, 'flipped-partition');
    await flipMiddleByte(join(store, partitionKey(PLAIN)));
    const r = await runWalrus(['verify'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stdout + r.stderr);
    const problems = r.stdout.split('\n').filter((l) => l.startsWith('problem: '));
    assert.equal(problems.length, 1, r.stdout);
    assert.match(problems[0], new RegExp(`^problem: backup ${PLAIN.backup} partition 00000000 does not decode: .*: file://${store}/${partitionKey(PLAIN)}$`));
    assert.match(r.stdout, new RegExp(`^backup ${PLAIN.backup}: 1 problem `, 'm'));
  });

  test('one flipped byte in a WAL object: exit 4 naming it', async () => {
    const store = await copyStore(PLAIN, 'flipped-wal');
    await flipMiddleByte(join(store, 'wal_005', `${PLAIN.segments[2]}.lzo`));
    const r = await runWalrus(['verify'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stdout + r.stderr);
    const problems = r.stdout.split('\n').filter((l) => l.startsWith('problem: '));
    assert.equal(problems.length, 1, r.stdout);
    assert.match(problems[0], new RegExp(`^problem: WAL segment ${PLAIN.segments[2]} does not decode: .*: file://${store}/wal_005/${PLAIN.segments[2]}\\.lzo$`));
  });

  test('gpg: one flipped byte in a WAL object and one in the partition: both named, exit 4', async () => {
    const store = await copyStore(GPG, 'gpg-flipped');
    await flipMiddleByte(join(store, 'wal_005', `${GPG.segments[2]}.lzo`));
    await flipMiddleByte(join(store, partitionKey(GPG)));
    const r = await runWalrus(['verify', '--json'], { config: await fleetFor(store, fixtureGpgKey()), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.deepEqual(report.problems.map((p: any) => [p.kind, p.key]).sort(), [
      ['INTEGRITY', partitionKey(GPG)],
      ['INTEGRITY', `wal_005/${GPG.segments[2]}.lzo`],
    ]);
  });

  test('gpg: a key that is not the one the archive was written for: exit 6, not an integrity verdict', async () => {
    gnupg ??= await createGnupgHome();
    const other = await gnupg.generateKey({ name: 'not the archive key <other@example.invalid>', passphrase: 'other-passphrase' });
    const dir = join(temp.path, 'other-key');
    await cp(join(FIXTURES, 'wal-e-gpg'), dir, { recursive: true, filter: (src) => !src.includes('/store') });
    await writeFile(join(dir, 'public-key.asc'), other.publicKeyArmored);
    await writeFile(join(dir, 'secret-key.asc'), other.secretKeyArmored);
    await writeFile(join(dir, 'passphrase.txt'), other.passphrase);
    const key = { publicKey: `\${file:${dir}/public-key.asc}`, secretKey: `\${file:${dir}/secret-key.asc}`, passphrase: `\${file:${dir}/passphrase.txt}` };
    const r = await runWalrus(['verify', '--json'], { config: await fleetFor(join(FIXTURES, GPG.fixture, 'store'), key), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 6, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout);
    assert.ok(report.problems.length >= 1);
    assert.ok(report.problems.every((p: any) => p.kind === 'KEY'), JSON.stringify(report.problems));
    assert.doesNotMatch(r.stdout + r.stderr, new RegExp(other.passphrase));
  });

  test('extended_version.txt and the only partition deleted: both named', async () => {
    const store = await copyStore(PLAIN, 'missing-objects');
    await rm(join(store, 'basebackups_005', PLAIN.backup, 'extended_version.txt'));
    await rm(join(store, partitionKey(PLAIN)));
    const r = await runWalrus(['verify'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^problem: backup ${PLAIN.backup}: extended_version.txt is missing: file://${store}/basebackups_005/${PLAIN.backup}/extended_version.txt$`, 'm'));
    assert.match(r.stdout, new RegExp(`^problem: backup ${PLAIN.backup} has no tar partitions: file://${store}/${partitionKey(PLAIN)}$`, 'm'));
  });
});

describe('verify follows a timeline switch through the archived history file', () => {
  const TL2 = ['000000020000000200000034', '000000020000000200000035'];
  /** The plain fixture promoted at 2/34000000: timeline 2 has its own copies of segments 34 and 35, and a history file. */
  async function promotedStore(label: string): Promise<string> {
    const store = await copyStore(PLAIN, label);
    const wal = join(store, 'wal_005');
    // WAL objects are checked for decoding and size, not WAL page headers: timeline 1's objects serve as timeline 2's
    await cp(join(wal, `${PLAIN.segments[3]}.lzo`), join(wal, `${TL2[0]}.lzo`));
    await cp(join(wal, `${PLAIN.segments[4]}.lzo`), join(wal, `${TL2[1]}.lzo`));
    await writeFile(join(temp.path, `${label}.history`), '1\t2/34000000\tno recovery target specified\n');
    await new Promise<void>((resolve, reject) => {
      const child = spawn('lzop', ['-c', join(temp.path, `${label}.history`)], { stdio: ['ignore', 'pipe', 'inherit'] });
      const chunks: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => chunks.push(b));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? writeFile(join(wal, '00000002.history.lzo'), Buffer.concat(chunks)).then(resolve, reject) : reject(new Error(`lzop exited ${code}`))));
    });
    return store;
  }

  test('the chain continues on timeline 2 from the switch segment: ok', async () => {
    const store = await promotedStore('timeline-2');
    // timeline 1's own segment 34 is not needed once timeline 2 took over there
    await rm(join(store, 'wal_005', `${PLAIN.segments[3]}.lzo`));
    const r = await runWalrus(['verify'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^WAL ${PLAIN.segments[1]} to ${TL2[1]} \\(timeline 2\\): 4 segments, no gap, 4 read to the end$`, 'm'));
  });

  test('the switch segment missing on timeline 2: a gap, though timeline 1 has it', async () => {
    const store = await promotedStore('timeline-2-gap');
    await rm(join(store, 'wal_005', `${TL2[0]}.lzo`));
    const r = await runWalrus(['verify'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^problem: missing WAL segment ${TL2[0]} \\(between ${PLAIN.segments[2]} and ${TL2[1]}\\): file://${store}/wal_005/${TL2[0]}\\.lzo$`, 'm'));
  });

  test('the history file missing: exit 4 naming it', async () => {
    const store = await promotedStore('timeline-2-no-history');
    await rm(join(store, 'wal_005', '00000002.history.lzo'));
    const r = await runWalrus(['verify'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^problem: timeline history file 00000002\\.history is not archived: .*: file://${store}/wal_005/00000002\\.history\\.lzo$`, 'm'));
  });
});

describe("verify compares walrus's sentinel block (sizes and SHA-256)", () => {
  /** The fixture's sentinel with a walrus block describing its partition and extended_version.txt. */
  async function withWalrusBlock(store: string, change: (block: any) => void = () => {}): Promise<void> {
    const partition = join(store, partitionKey(PLAIN));
    const stored = await fileDigest(partition);
    const tar = await sha256OfCommand('lzop', ['-dc'], partition);
    const version = await fileDigest(join(store, 'basebackups_005', PLAIN.backup, 'extended_version.txt'));
    const sentinelPath = join(store, sentinelKey(PLAIN));
    const sentinel = JSON.parse(await readFile(sentinelPath, 'utf8'));
    sentinel.walrus = {
      format: 1,
      startLsn: '2/32000028',
      stopLsn: '2/32000100',
      timeline: 1,
      startedAt: '2026-11-24T15:47:10.000Z',
      stoppedAt: '2026-11-24T15:47:12.000Z',
      mode: 'offline',
      compression: 'lzo',
      encrypted: false,
      partitions: [{ number: 0, key: partitionKey(PLAIN), tarBytes: tar.bytes, tarSha256: tar.sha256, storedBytes: stored.bytes, storedSha256: stored.sha256, members: 1 }],
      extendedVersion: { key: `basebackups_005/${PLAIN.backup}/extended_version.txt`, storedBytes: version.bytes, storedSha256: version.sha256 },
    };
    change(sentinel.walrus);
    await writeFile(sentinelPath, JSON.stringify(sentinel));
  }

  test('matching block: ok, with checksums compared', async () => {
    const store = await copyStore(PLAIN, 'walrus-block');
    await withWalrusBlock(store);
    const r = await runWalrus(['verify', '--json'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.backups[0].checksums, true);
    assert.equal(report.backups[0].ok, true);
  });

  test("a tar SHA-256 that differs from the sentinel's: exit 4 naming the partition", async () => {
    const store = await copyStore(PLAIN, 'walrus-block-tar');
    await withWalrusBlock(store, (b) => (b.partitions[0].tarSha256 = '0'.repeat(64)));
    const r = await runWalrus(['verify'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^problem: backup ${PLAIN.backup} partition 00000000 does not match its sentinel \\(tar SHA-256 [0-9a-f]{64}, the sentinel says 0{64}\\): file://${store}/${partitionKey(PLAIN)}$`, 'm'));
  });

  test('a stored size and an extended_version.txt checksum that differ: both named', async () => {
    const store = await copyStore(PLAIN, 'walrus-block-stored');
    await withWalrusBlock(store, (b) => {
      b.partitions[0].storedBytes += 1;
      b.extendedVersion.storedSha256 = 'f'.repeat(64);
    });
    const r = await runWalrus(['verify', '--json'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stderr);
    const messages = JSON.parse(r.stdout).problems.map((p: any) => p.message);
    assert.equal(messages.length, 2, messages.join('\n'));
    assert.ok(messages.some((m: string) => /partition 00000000 does not match its sentinel \(stored size \d+ bytes, the sentinel says \d+\)/.test(m)), messages.join('\n'));
    assert.ok(messages.some((m: string) => /extended_version\.txt is \d+ bytes with SHA-256/.test(m)), messages.join('\n'));
  });

  test('a partition listed in the sentinel but gone from storage: missing, named', async () => {
    const store = await copyStore(PLAIN, 'walrus-block-missing');
    await withWalrusBlock(store, (b) => b.partitions.push({ ...b.partitions[0], number: 1, key: `basebackups_005/${PLAIN.backup}/tar_partitions/part_00000001.tar.lzo` }));
    const r = await runWalrus(['verify'], { config: await fleetFor(store), server: 'db1', timeoutMs: 180_000 });
    assert.equal(r.code, 4, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^problem: backup ${PLAIN.backup} partition 00000001 is missing: file://${store}/basebackups_005/${PLAIN.backup}/tar_partitions/part_00000001\\.tar\\.lzo$`, 'm'));
  });
});
