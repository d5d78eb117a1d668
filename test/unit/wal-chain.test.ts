/** WAL chain analysis: gaps, timeline switches through history files, .partial files, backup ranges. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { WalrusError } from '../../core/errors.js';
import {
  analyzeWalChain,
  classifyWalFiles,
  describeGap,
  parseHistoryFile,
  segmentsBetween,
  timelineLineage,
  type TimelineSwitch,
} from '../../core/wal-chain.js';

/** `seg(1, 5)` → 000000010000000000000005 (log 0). */
function seg(timeline: number, n: number, log = 0): string {
  const h = (x: number) => x.toString(16).toUpperCase().padStart(8, '0');
  return h(timeline) + h(log) + h(n);
}
function range(timeline: number, first: number, last: number): string[] {
  const out: string[] = [];
  for (let n = first; n <= last; n++) out.push(seg(timeline, n));
  return out;
}
const noHistories = new Map<number, TimelineSwitch[]>();

describe('parseHistoryFile', () => {
  test('reads every ancestor line, skips comments and blank lines', () => {
    const text = '1\t0/5000A28\tno recovery target specified\n\n# a comment\n2\t0/7000000\tat restore point "before-migration"\n';
    assert.deepEqual(parseHistoryFile(text, '00000003.history'), [
      { parentTimeline: 1, switchLsn: '0/5000A28', reason: 'no recovery target specified' },
      { parentTimeline: 2, switchLsn: '0/7000000', reason: 'at restore point "before-migration"' },
    ]);
  });

  test('a malformed line is an integrity error naming the file and line', () => {
    assert.throws(
      () => parseHistoryFile('1\t0/5000000\tok\nnot a history line\n', '00000002.history'),
      (e: unknown) => e instanceof WalrusError && e.kind === 'INTEGRITY' && /00000002\.history line 2/.test(e.message),
    );
  });

  test('switch points going backwards are refused', () => {
    assert.throws(() => parseHistoryFile('1\t0/7000000\ta\n2\t0/5000000\tb\n', '00000003.history'), /must increase/);
  });
});

describe('timeline lineage', () => {
  test('the segment holding the switch point belongs to the new timeline', () => {
    const histories = new Map([[2, parseHistoryFile('1\t0/5000A28\tx\n', 'h')]]);
    const { spans, missingHistory } = timelineLineage(2, histories);
    assert.equal(missingHistory, false);
    assert.deepEqual(segmentsBetween(seg(1, 3), seg(2, 6), spans), [seg(1, 3), seg(1, 4), seg(2, 5), seg(2, 6)]);
  });

  test('a switch exactly at a segment boundary', () => {
    const histories = new Map([[2, parseHistoryFile('1\t0/5000000\tx\n', 'h')]]);
    assert.deepEqual(segmentsBetween(seg(1, 4), seg(2, 5), timelineLineage(2, histories).spans), [seg(1, 4), seg(2, 5)]);
  });

  test('crossing a log boundary (…000000FF → …0100000000)', () => {
    assert.deepEqual(segmentsBetween(seg(1, 0xfe), seg(1, 1, 1), timelineLineage(1, noHistories).spans), [seg(1, 0xfe), seg(1, 0xff), seg(1, 0, 1), seg(1, 1, 1)]);
  });
});

describe('classifyWalFiles', () => {
  test('segments, partials, history and backup-history files apart', () => {
    const f = classifyWalFiles([seg(1, 1), `${seg(1, 2)}.partial`, '00000002.history', `${seg(1, 1)}.00000028.backup`]);
    assert.deepEqual([...f.segments], [seg(1, 1)]);
    assert.deepEqual([...f.partials], [seg(1, 2)]);
    assert.deepEqual([...f.historyTimelines], [2]);
    assert.deepEqual(f.backupHistoryFiles, [`${seg(1, 1)}.00000028.backup`]);
  });
});

describe('analyzeWalChain', () => {
  test('a complete chain: from the oldest backup to the newest segment, no gap', () => {
    const a = analyzeWalChain({
      walFiles: [...range(1, 1, 6), `${seg(1, 2)}.00000028.backup`],
      histories: noHistories,
      backups: [
        { name: 'base_b', startSegment: seg(1, 4), stopSegment: seg(1, 4) },
        { name: 'base_a', startSegment: seg(1, 2), stopSegment: seg(1, 3) },
      ],
    });
    assert.equal(a.from, seg(1, 2));
    assert.equal(a.to, seg(1, 6));
    assert.deepEqual(a.chain, range(1, 2, 6));
    assert.deepEqual(a.gaps, []);
    assert.deepEqual(a.problems, []);
    assert.deepEqual(a.backups.map((b) => [b.name, b.needed, b.gaps.length, b.onChain]), [
      ['base_b', [seg(1, 4)], 0, true],
      ['base_a', [seg(1, 2), seg(1, 3)], 0, true],
    ]);
  });

  test('a segment missing in the middle is one gap naming its neighbours', () => {
    const a = analyzeWalChain({ walFiles: range(1, 1, 6).filter((s) => s !== seg(1, 4)), histories: noHistories, backups: [{ name: 'base_a', startSegment: seg(1, 2), stopSegment: seg(1, 2) }] });
    assert.equal(a.gaps.length, 1);
    assert.deepEqual(a.gaps[0], { first: seg(1, 4), last: seg(1, 4), count: 1, before: seg(1, 3), after: seg(1, 5), partialOnly: [] });
    assert.equal(a.problems.length, 1);
    assert.equal(a.problems[0].walFile, seg(1, 4));
    assert.equal(a.problems[0].message, `missing WAL segment ${seg(1, 4)} (between ${seg(1, 3)} and ${seg(1, 5)})`);
  });

  test('consecutive missing segments are one gap; separate holes are separate gaps', () => {
    const missing = new Set([seg(1, 3), seg(1, 4), seg(1, 5), seg(1, 8)]);
    const a = analyzeWalChain({ walFiles: range(1, 1, 10).filter((s) => !missing.has(s)), histories: noHistories, backups: [{ name: 'base_a', startSegment: seg(1, 1), stopSegment: seg(1, 1) }] });
    assert.deepEqual(a.gaps.map((g) => [g.first, g.last, g.count]), [
      [seg(1, 3), seg(1, 5), 3],
      [seg(1, 8), seg(1, 8), 1],
    ]);
    assert.match(describeGap(a.gaps[0]), /^WAL segments 0+10+3 to 0+10+5 \(3\) \(between 0+10+2 and 0+10+6\)$/);
  });

  test('the start segment of the oldest backup missing is a gap at the start of the chain', () => {
    const a = analyzeWalChain({ walFiles: range(1, 3, 5), histories: noHistories, backups: [{ name: 'base_a', startSegment: seg(1, 2), stopSegment: seg(1, 2) }] });
    assert.deepEqual(a.gaps.map((g) => [g.first, g.before, g.after]), [[seg(1, 2), null, seg(1, 3)]]);
    assert.equal(a.backups[0].gaps.length, 1, 'the backup itself lacks its WAL');
  });

  test('across a timeline switch the chain continues on the new timeline from the switch segment', () => {
    const histories = new Map([[2, parseHistoryFile('1\t0/5000A28\tno recovery target specified\n', '00000002.history')]]);
    const a = analyzeWalChain({
      // the old primary's last segment is archived only as .partial; timeline 2 starts with a copy of it
      walFiles: [...range(1, 1, 4), `${seg(1, 5)}.partial`, '00000002.history', ...range(2, 5, 7)],
      histories,
      backups: [{ name: 'base_a', startSegment: seg(1, 2), stopSegment: seg(1, 3) }],
    });
    assert.equal(a.timeline, 2);
    assert.deepEqual(a.chain, [seg(1, 2), seg(1, 3), seg(1, 4), seg(2, 5), seg(2, 6), seg(2, 7)]);
    assert.deepEqual(a.problems, []);
  });

  test('segments the old timeline wrote after the switch are not part of the chain', () => {
    const histories = new Map([[2, parseHistoryFile('1\t0/5000000\tx\n', '00000002.history')]]);
    const a = analyzeWalChain({ walFiles: [...range(1, 1, 8), '00000002.history', ...range(2, 5, 6)], histories, backups: [{ name: 'base_a', startSegment: seg(1, 1), stopSegment: seg(1, 1) }] });
    assert.equal(a.to, seg(2, 6));
    assert.deepEqual(a.gaps, []);
  });

  test('a .partial does not stand in for a missing segment on the chain', () => {
    const histories = new Map([[2, parseHistoryFile('1\t0/5000000\tx\n', '00000002.history')]]);
    const a = analyzeWalChain({
      walFiles: [...range(1, 1, 4), `${seg(2, 5)}.partial`, '00000002.history', ...range(2, 6, 7)],
      histories,
      backups: [{ name: 'base_a', startSegment: seg(1, 1), stopSegment: seg(1, 1) }],
    });
    assert.equal(a.gaps.length, 1);
    assert.deepEqual(a.gaps[0].partialOnly, [seg(2, 5)]);
    assert.match(a.problems[0].message, /only as \.partial/);
  });

  test('three timelines: 00000003.history lists both switches', () => {
    const histories = new Map([
      [2, parseHistoryFile('1\t0/3000000\ta\n', '00000002.history')],
      [3, parseHistoryFile('1\t0/3000000\ta\n2\t0/5800000\tb\n', '00000003.history')],
    ]);
    const a = analyzeWalChain({
      walFiles: [...range(1, 1, 2), ...range(2, 3, 5), ...range(3, 5, 6), '00000002.history', '00000003.history'],
      histories,
      backups: [{ name: 'base_a', startSegment: seg(1, 1), stopSegment: seg(1, 1) }],
    });
    assert.deepEqual(a.chain, [seg(1, 1), seg(1, 2), seg(2, 3), seg(2, 4), seg(3, 5), seg(3, 6)]);
    assert.deepEqual(a.problems, []);
  });

  test('a missing segment on the new timeline is a gap even when the old timeline has it', () => {
    const histories = new Map([[2, parseHistoryFile('1\t0/5000000\tx\n', '00000002.history')]]);
    const a = analyzeWalChain({ walFiles: [...range(1, 1, 6), '00000002.history', seg(2, 6)], histories, backups: [{ name: 'base_a', startSegment: seg(1, 1), stopSegment: seg(1, 1) }] });
    assert.deepEqual(a.gaps.map((g) => g.first), [seg(2, 5)]);
  });

  test('a missing history file for the newest timeline is a problem', () => {
    const a = analyzeWalChain({ walFiles: [...range(1, 1, 4), ...range(2, 5, 6)], histories: noHistories, backups: [{ name: 'base_a', startSegment: seg(1, 1), stopSegment: seg(1, 1) }] });
    const p = a.problems.find((x) => x.kind === 'missing-history');
    assert.ok(p, JSON.stringify(a.problems));
    assert.equal(p.walFile, '00000002.history');
    assert.match(p.message, /00000002\.history is not archived/);
  });

  test('a history file archived but unreadable is reported as unreadable', () => {
    const a = analyzeWalChain({ walFiles: [...range(1, 1, 4), '00000002.history', ...range(2, 5, 6)], histories: noHistories, backups: [] });
    assert.match(a.problems.find((x) => x.kind === 'missing-history')!.message, /is unreadable/);
  });

  test('a backup on the old timeline after the switch is off the chain: noted, not a gap', () => {
    const histories = new Map([[2, parseHistoryFile('1\t0/5000000\tx\n', '00000002.history')]]);
    const a = analyzeWalChain({
      walFiles: [...range(1, 1, 8), '00000002.history', ...range(2, 5, 9)],
      histories,
      backups: [
        { name: 'base_a', startSegment: seg(1, 2), stopSegment: seg(1, 2) },
        { name: 'base_dead', startSegment: seg(1, 7), stopSegment: seg(1, 8) },
      ],
    });
    assert.deepEqual(a.problems, []);
    assert.equal(a.from, seg(1, 2));
    assert.deepEqual(a.backups.map((b) => b.onChain), [true, false]);
    assert.deepEqual(a.backups[1].needed, [seg(1, 7), seg(1, 8)]);
    assert.ok(a.notes.some((n) => /base_dead is not on the WAL history of timeline 2/.test(n)));
  });

  test('a backup range with a hole: the backup reports it', () => {
    const a = analyzeWalChain({ walFiles: range(1, 1, 9).filter((s) => s !== seg(1, 5)), histories: noHistories, backups: [{ name: 'base_a', startSegment: seg(1, 3), stopSegment: seg(1, 6) }] });
    assert.deepEqual(a.backups[0].needed, range(1, 3, 6));
    assert.deepEqual(a.backups[0].gaps.map((g) => g.first), [seg(1, 5)]);
  });

  test('a backup whose stop segment is unknown needs at least its start segment', () => {
    const a = analyzeWalChain({ walFiles: range(1, 4, 5), histories: noHistories, backups: [{ name: 'base_a', startSegment: seg(1, 3), stopSegment: null }] });
    assert.deepEqual(a.backups[0].needed, [seg(1, 3)]);
    assert.equal(a.backups[0].gaps.length, 1);
  });

  test('a backup whose stop segment is not archived yet lacks the WAL after the newest segment', () => {
    const a = analyzeWalChain({ walFiles: range(1, 1, 3), histories: noHistories, backups: [{ name: 'base_a', startSegment: seg(1, 3), stopSegment: seg(1, 5) }] });
    assert.deepEqual(a.backups[0].gaps.map((g) => [g.first, g.last]), [[seg(1, 4), seg(1, 5)]]);
  });

  test('no backups: the chain runs from the oldest archived segment', () => {
    const a = analyzeWalChain({ walFiles: range(1, 7, 9), histories: noHistories, backups: [] });
    assert.equal(a.from, seg(1, 7));
    assert.equal(a.to, seg(1, 9));
    assert.ok(a.notes.some((n) => /no backups/.test(n)));
  });

  test('nothing archived, no backups: an empty chain', () => {
    const a = analyzeWalChain({ walFiles: [], histories: noHistories, backups: [] });
    assert.equal(a.from, null);
    assert.deepEqual(a.chain, []);
    assert.deepEqual(a.problems, []);
  });

  test('a history file of a higher timeline without segments is noted', () => {
    const histories = new Map([[3, parseHistoryFile('1\t0/5000000\tx\n', '00000003.history')]]);
    const a = analyzeWalChain({ walFiles: [...range(1, 1, 6), '00000003.history'], histories, backups: [{ name: 'base_a', startSegment: seg(1, 1), stopSegment: seg(1, 1) }] });
    assert.equal(a.timeline, 1);
    assert.deepEqual(a.problems, []);
    assert.ok(a.notes.some((n) => /timeline 3 has a history file but no archived segment/.test(n)));
  });

  test('a long archive: 300 000 segments across log boundaries, one hole found', () => {
    const names: string[] = [];
    for (let n = 0; n < 300_000; n++) names.push(seg(1, n % 256, Math.floor(n / 256)));
    const hole = names.splice(200_000, 1)[0];
    const a = analyzeWalChain({ walFiles: names, histories: noHistories, backups: [{ name: 'base_a', startSegment: names[10], stopSegment: names[11] }] });
    assert.equal(a.chain.length, 300_000 - 10);
    assert.deepEqual(a.gaps.map((g) => g.first), [hole]);
  });
});
