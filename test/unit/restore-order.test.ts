/**
 * backup-fetch starts the partitions that take longest first (restoreWork): by the tar bytes and
 * members a walrus sentinel records, by stored size for a WAL-E backup.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { restoreWork, type PartitionToFetch } from '../../core/backup-restore.js';

const walrusPartition = (number: number, tarBytes: number, members: number, storedBytes: number): PartitionToFetch => ({
  number,
  key: `x/part_${number}.tar.lzo`,
  storedSize: storedBytes,
  record: { number, key: `x/part_${number}.tar.lzo`, tarBytes, storedBytes, storedSha256: '0'.repeat(64), members },
});
const longestFirst = (ps: PartitionToFetch[]) => ps.slice().sort((a, b) => restoreWork(b) - restoreWork(a) || a.number - b.number).map((p) => p.number);

test('a 1 GiB relation file that compresses as well as an index of a quarter its size goes first', () => {
  // what pgbench scale 100 gives: the table's 1 GiB segment compresses to 74 MB, its 225 MB index to 73 MB
  const partitions = [
    walrusPartition(0, 7_464_448, 256, 1_569_882),
    walrusPartition(3, 1_073_743_360, 1, 73_039_205),
    walrusPartition(4, 269_215_232, 1, 18_557_258),
    walrusPartition(5, 230_867_968, 256, 73_992_612),
  ];
  assert.deepEqual(longestFirst(partitions), [3, 5, 4, 0]);
});

test('members count: 256 small files weigh what 64 MiB of data does', () => {
  assert.deepEqual(longestFirst([walrusPartition(0, 1_000_000, 256, 100_000), walrusPartition(1, 60 * 1024 * 1024, 1, 100_000)]), [0, 1]);
  assert.deepEqual(longestFirst([walrusPartition(0, 1_000_000, 256, 100_000), walrusPartition(1, 70 * 1024 * 1024, 1, 100_000)]), [1, 0]);
});

test('a WAL-E backup (no sentinel records) is ordered by stored size', () => {
  const wale = (number: number, storedSize: number): PartitionToFetch => ({ number, key: `k${number}`, storedSize, record: null });
  assert.deepEqual(longestFirst([wale(0, 10), wale(1, 30), wale(2, 20), wale(3, 30)]), [1, 3, 2, 0]);
});
