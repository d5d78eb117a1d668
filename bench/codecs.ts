/**
 * Codec throughput and ratio: lzo (WAL-E's format), lz4 and zstd (levels 1 and 3), through the
 * codecs' own streams, on (a) a real 16 MiB WAL segment and (b) 64 MiB of a PostgreSQL heap file.
 * Median of 3 runs each. MB/s are of uncompressed bytes (10^6 bytes per second); ratio is
 * uncompressed / compressed.
 *
 *   node --import tsx bench/codecs.ts
 *
 * Inputs, first found wins: a pgbench WAL segment from /tmp/prof/w/store/bench/wal_005/ (lzop,
 * decompressed with `lzop -dc`) else the WAL-E fixture segment; the largest relation file under
 * /tmp/prof/w/data/base/ (pgbench_accounts) else synthetic heap-like pages.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, openSync, readSync, closeSync, readdirSync, statSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import type * as Lz4Napi from 'lz4-napi';
import { createLzoCodec } from '../plugins/lzo/index.js';
import { createLz4Codec } from '../plugins/lz4/index.js';
import { lz4CompressStream, lz4DecompressStream, LZ4_INPUT_PER_FRAME } from '../plugins/lz4/lz4-frame.js';
import { createZstdCodec } from '../plugins/zstd/index.js';
import { runStream } from '../test/helpers/codec-streams.js';
import { medianSeconds } from './timing.js';
import { SHARED_FIXTURES } from '../test/helpers/shared-fixtures.js';

const RUNS = 3;
/** A codec's stream over a buffer fed in 64 KiB chunks, as a file read stream would. */
const through = (transform: Duplex, input: Buffer) => runStream(transform, input);
const WAL_DIRECTORY = '/tmp/prof/w/store/bench/wal_005';
const WAL_FIXTURE = `${SHARED_FIXTURES}/wal-e-plain/store/wal_005/000000010000000200000031.lzo`;
const DATA_BASE = '/tmp/prof/w/data/base';
const HEAP_BYTES = 64 * 1024 * 1024;
const SEGMENT_BYTES = 16 * 1024 * 1024;

function lzopDecompress(file: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('lzop', ['-dc', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`lzop -dc ${file} exited ${code}`))));
  });
}

async function walInput(): Promise<{ data: Buffer; source: string }> {
  if (existsSync(WAL_DIRECTORY)) {
    const names = readdirSync(WAL_DIRECTORY).filter((n) => /^[0-9A-F]{24}\.lzo$/.test(n)).sort();
    // a segment from the middle of the pgbench run, not the first ones (initdb, CREATE DATABASE)
    const name = names[Math.floor(names.length / 2)];
    if (name) {
      const data = await lzopDecompress(join(WAL_DIRECTORY, name));
      if (data.length === SEGMENT_BYTES) return { data, source: `${WAL_DIRECTORY}/${name} (pgbench WAL)` };
    }
  }
  return { data: await lzopDecompress(WAL_FIXTURE), source: `${WAL_FIXTURE} (WAL-E fixture WAL)` };
}

function heapInput(): { data: Buffer; source: string } {
  let best: { path: string; size: number } | null = null;
  if (existsSync(DATA_BASE)) {
    for (const db of readdirSync(DATA_BASE)) {
      if (!/^\d+$/.test(db)) continue;
      for (const name of readdirSync(join(DATA_BASE, db))) {
        if (!/^\d+$/.test(name)) continue; // main forks only (no _fsm, _vm)
        const path = join(DATA_BASE, db, name);
        const size = statSync(path).size;
        if (!best || size > best.size) best = { path, size };
      }
    }
  }
  if (best && best.size >= 8 * 1024 * 1024) {
    const data = Buffer.alloc(Math.min(HEAP_BYTES, best.size));
    const fd = openSync(best.path, 'r');
    try {
      for (let at = 0; at < data.length; ) at += readSync(fd, data, at, data.length - at, at);
    } finally {
      closeSync(fd);
    }
    return { data, source: `first ${data.length >> 20} MiB of ${best.path} (largest relation: pgbench_accounts)` };
  }
  return { data: syntheticHeap(HEAP_BYTES), source: 'synthetic heap-like 8 KiB pages (no PostgreSQL data directory found)' };
}

/** 8 KiB pages of pgbench_accounts-like tuples: an increasing id, small numbers, blank-padded filler. */
function syntheticHeap(bytes: number): Buffer {
  const data = Buffer.alloc(bytes);
  let id = 1;
  for (let page = 0; page < bytes; page += 8192) {
    for (let at = page + 8192 - 121; at > page + 24 + 4 * 61; at -= 121, id++) {
      data.writeUInt32LE(id, at + 24);
      data.writeUInt32LE((id / 100000) | 0, at + 28);
      data.writeUInt32LE(0, at + 32);
      data.fill(0x20, at + 37, at + 121);
    }
  }
  return data;
}

// ---------------------------------------------------------------- codecs under test

interface Coder {
  name: string;
  compress(): Duplex;
  decompress(): Duplex;
}

/** lz4 with lz4-napi's synchronous frame calls on the main thread, for comparison with the thread pool. */
function lz4SyncReference(): Coder {
  const lz4 = createRequire(import.meta.url)('lz4-napi') as typeof Lz4Napi;
  return {
    name: 'lz4 (sync calls, reference)',
    compress: () =>
      Duplex.from(async function* (source: AsyncIterable<Buffer>) {
        let pending: Buffer[] = [];
        let length = 0;
        for await (const chunk of source) {
          pending.push(chunk);
          length += chunk.length;
          if (length >= LZ4_INPUT_PER_FRAME) {
            yield lz4.compressFrameSync(Buffer.concat(pending, length), { contentChecksum: true });
            pending = [];
            length = 0;
          }
        }
        if (length) yield lz4.compressFrameSync(Buffer.concat(pending, length), { contentChecksum: true });
      }),
    // decoding is the codec's own (block by block); only compression differs
    decompress: () => lz4DecompressStream(),
  };
}

const coders: Coder[] = [
  createLzoCodec(),
  createLz4Codec(),
  { name: 'lz4 (1 frame in flight)', compress: () => lz4CompressStream(1), decompress: () => lz4DecompressStream() },
  lz4SyncReference(),
  { ...createZstdCodec({ level: 1 }), name: 'zstd level 1' },
  { ...createZstdCodec({ level: 3 }), name: 'zstd level 3 (default)' },
];

// ---------------------------------------------------------------- measuring



const mbps = (bytes: number, seconds: number) => (bytes / 1e6 / seconds).toFixed(0).padStart(6);

async function measure(label: string, data: Buffer): Promise<void> {
  console.log(`\n${label}: ${data.length} bytes`);
  console.log(`  ${'codec'.padEnd(30)} ${'compress MB/s'.padStart(13)} ${'decompress MB/s'.padStart(15)} ${'ratio'.padStart(6)}`);
  for (const coder of coders) {
    const stored = await through(coder.compress(), data);
    const back = await through(coder.decompress(), stored);
    if (!back.equals(data)) throw new Error(`${coder.name}: round trip differs`);
    const compressSeconds = await medianSeconds(() => through(coder.compress(), data), RUNS);
    const decompressSeconds = await medianSeconds(() => through(coder.decompress(), stored), RUNS);
    const ratio = (data.length / stored.length).toFixed(2).padStart(6);
    console.log(`  ${coder.name.padEnd(30)} ${mbps(data.length, compressSeconds).padStart(13)} ${mbps(data.length, decompressSeconds).padStart(15)} ${ratio}`);
  }
}

const wal = await walInput();
const heap = heapInput();
console.log(`codecs bench: median of ${RUNS} runs, ${cpus().length} CPUs (${cpus()[0]?.model ?? 'unknown'}), Node ${process.version}`);
console.log(`(a) ${wal.source}\n(b) ${heap.source}`);
console.log('Figures are rough: the machine is shared with other work.');
await measure('(a) WAL segment', wal.data);
await measure('(b) heap file', heap.data);
