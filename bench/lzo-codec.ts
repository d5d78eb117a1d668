/**
 * lzo codec throughput: walrus's lzop streams versus piping through the real `lzop -c` / `lzop -d`,
 * on a 16 MiB WAL segment (a WAL-E fixture segment, decompressed). Median of 5 runs each.
 *
 *   node --import tsx bench/lzo-codec.ts
 */
import { readFileSync } from 'node:fs';
import { silentLogger } from '../core/log.js';
import type { Codec } from '../core/types.js';
import { manifest } from '../plugins/lzo/index.js';
import { runStream, toolOutput } from '../test/helpers/codec-streams.js';
import { medianSeconds } from './timing.js';
import { SHARED_FIXTURES } from '../test/helpers/shared-fixtures.js';

const SEGMENT_SIZE = 16 * 1024 * 1024;
const RUNS = 5;
const FIXTURE = `${SHARED_FIXTURES}/wal-e-plain/store/wal_005/000000010000000200000031.lzo`;

const throughWalrus = runStream;
const throughLzop = (args: string[], input: Buffer) => toolOutput('lzop', args, input);

const codec = (await manifest.create({}, { log: silentLogger, configDirectory: process.cwd(), instanceName: 'lzo' })) as Codec;




// The WAL-like input: a real segment, repeated (or cut) to exactly 16 MiB.
const segment = await throughLzop(['-dc'], readFileSync(FIXTURE));
const input = Buffer.alloc(SEGMENT_SIZE);
for (let at = 0; at < SEGMENT_SIZE; at += segment.length) segment.copy(input, at, 0, Math.min(segment.length, SEGMENT_SIZE - at));

const walrusCompressed = await throughWalrus(codec.compress(), input);
const lzopCompressed = await throughLzop(['-c'], input);
if (!(await throughLzop(['-dc'], walrusCompressed)).equals(input)) throw new Error('lzop -d does not return the input');
if (!(await throughWalrus(codec.decompress(), lzopCompressed)).equals(input)) throw new Error('walrus does not return the input');

const mb = SEGMENT_SIZE / 1e6;
const rows: Array<[string, number]> = [
  ['walrus compress', await medianSeconds(() => throughWalrus(codec.compress(), input), RUNS)],
  ['lzop -c (pipe)', await medianSeconds(() => throughLzop(['-c'], input), RUNS)],
  ['walrus decompress', await medianSeconds(() => throughWalrus(codec.decompress(), walrusCompressed), RUNS)],
  ['lzop -d (pipe)', await medianSeconds(() => throughLzop(['-dc'], lzopCompressed), RUNS)],
];

console.log(`input: 16 MiB WAL segment (${FIXTURE.split('/').pop()} decompressed), median of ${RUNS} runs, MB = 10^6 bytes of uncompressed data`);
console.log(`compressed size: walrus ${walrusCompressed.length} bytes, lzop -c ${lzopCompressed.length} bytes (ratio ${(walrusCompressed.length / SEGMENT_SIZE).toFixed(3)})`);
for (const [name, seconds] of rows) console.log(`${name.padEnd(18)} ${(mb / seconds).toFixed(0).padStart(6)} MB/s  (${(seconds * 1000).toFixed(1)} ms)`);
