/** The sentinel's own SHA-256: any changed byte of a walrus sentinel is an integrity error. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sealSentinel, sentinelSealIntact, type BackupSentinel } from '../../core/backup-sentinel.js';
import { parseSentinel } from '../../core/backup-catalog.js';
import { WalrusError } from '../../core/errors.js';

const sentinel: BackupSentinel = {
  wal_segment_backup_stop: '000000010000000000000005',
  wal_segment_offset_backup_stop: '00000128',
  expanded_size_bytes: 123456,
  spec: { base_prefix: '/var/lib/postgresql/15/main/', tablespaces: [] },
  walrus: {
    format: 1,
    startLsn: '0/4000028',
    stopLsn: '0/5000128',
    timeline: 1,
    startedAt: '2026-11-24T10:00:00.000Z',
    stoppedAt: '2026-11-24T10:01:00.000Z',
    serverVersion: 'PostgreSQL 15.18',
    serverVersionNum: 150018,
    systemIdentifier: '7300000000000000000',
    mode: 'online',
    compression: 'lzo',
    encrypted: false,
    backupLabel: 'START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\nLABEL: walrus\n',
    partitions: [{ number: 0, key: 'db1/basebackups_005/x/tar_partitions/part_00000000.tar.lzo', tarBytes: 10240, tarSha256: 'a'.repeat(64), storedBytes: 900, storedSha256: 'b'.repeat(64), members: 3 }],
  },
};

test('a sealed sentinel parses; its seal is intact', () => {
  const text = sealSentinel(sentinel);
  const parsed = parseSentinel(text, 'sentinel');
  assert.equal(sentinelSealIntact(parsed), true);
  assert.match(parsed.walrus!.sentinelSha256!, /^[0-9a-f]{64}$/);
});

test('a flipped byte in a free-text or numeric field (still valid JSON and schema) is an integrity error', () => {
  const text = sealSentinel(sentinel);
  for (const [from, to] of [
    ['LABEL: walrus', 'LABEL: walrug'],
    ['"expanded_size_bytes":123456', '"expanded_size_bytes":123457'],
    ['"tarBytes":10240', '"tarBytes":10241'],
    ['/var/lib/postgresql/15/main/', '/var/lib/postgresql/16/main/'],
  ]) {
    const damaged = text.replace(from, to);
    assert.notEqual(damaged, text, from);
    assert.throws(() => parseSentinel(damaged, 'db1/basebackups_005/x_backup_stop_sentinel.json'), (e: unknown) => {
      assert.ok(e instanceof WalrusError && e.kind === 'INTEGRITY');
      assert.match((e as Error).message, /x_backup_stop_sentinel\.json does not match its own SHA-256/);
      return true;
    });
  }
});

test('WAL-E sentinels (no walrus block) have no seal and still parse', () => {
  const walE = '{"wal_segment_backup_stop": "000000010000000200000032", "wal_segment_offset_backup_stop": "00000032", "expanded_size_bytes": 39280290, "spec": {"base_prefix": "/tmp/x/", "tablespaces": []}}';
  assert.equal(sentinelSealIntact(parseSentinel(walE, 'wal-e')), null);
});
