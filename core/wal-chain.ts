/**
 * WAL chain analysis, pure (no storage): given the names of the archived WAL files, the parsed
 * timeline history files and the backups, which segments a restore needs and which are missing.
 *
 * Timelines: a history file `0000000T.history` lists every ancestor of timeline T as
 * `<parent timeline>\t<switch point LSN>\t<reason>`. WAL up to a switch point lives on the parent
 * timeline; from the segment holding the switch point on, on the child (PostgreSQL copies the
 * start of that segment onto the new timeline). So the parent's segment holding the switch point
 * (often archived only as `.partial`) is never needed.
 */
import { integrityError } from './errors.js';
import { SEGMENT_SIZE, isSegmentName, parseLsn, parseSegmentName, segmentName, segmentNumber, segmentsPerLog } from './layout.js';

export interface TimelineSwitch {
  /** The timeline that ended. */
  parentTimeline: number;
  /** Where it ended: the first LSN of the next timeline in the file. */
  switchLsn: string;
  reason: string;
}

/** Parses a timeline history file's text; `where` names the file in errors. */
export function parseHistoryFile(text: string, where: string): TimelineSwitch[] {
  const switches: TimelineSwitch[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(\d+)\s+([0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8})(?:\s+(.*))?$/.exec(line);
    if (!m) throw integrityError(`${where} line ${i + 1} is not '<timeline>\\t<LSN>\\t<reason>': '${line.slice(0, 80)}'`);
    const parentTimeline = Number(m[1]);
    const previous = switches[switches.length - 1];
    if (parentTimeline < 1 || (previous && (parentTimeline <= previous.parentTimeline || parseLsn(m[2]) < parseLsn(previous.switchLsn))))
      throw integrityError(`${where} line ${i + 1}: timelines and switch points must increase ('${line.slice(0, 80)}')`);
    switches.push({ parentTimeline, switchLsn: m[2].toUpperCase(), reason: m[3] ?? '' });
  }
  return switches;
}

/** The timeline number of a history file name (`00000002.history` → 2), or null. */
export function timelineOfHistoryFile(name: string): number | null {
  const m = /^([0-9A-F]{8})\.history$/.exec(name);
  return m ? parseInt(m[1], 16) : null;
}

export function historyFileName(timeline: number): string {
  return `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
}

/** The archived WAL files by kind. */
export interface ArchivedWalFiles {
  /** Whole segments (24 hex names). */
  segments: Set<string>;
  /** `<segment>.partial` files, by segment name. */
  partials: Set<string>;
  /** Timelines that have a history file. */
  historyTimelines: Set<number>;
  /** `<segment>.<offset>.backup` files. */
  backupHistoryFiles: string[];
}

export function classifyWalFiles(names: Iterable<string>): ArchivedWalFiles {
  const files: ArchivedWalFiles = { segments: new Set(), partials: new Set(), historyTimelines: new Set(), backupHistoryFiles: [] };
  for (const name of names) {
    if (isSegmentName(name)) files.segments.add(name);
    else if (name.endsWith('.partial') && isSegmentName(name.slice(0, 24))) files.partials.add(name.slice(0, 24));
    else if (name.endsWith('.backup')) files.backupHistoryFiles.push(name);
    else {
      const t = timelineOfHistoryFile(name);
      if (t !== null) files.historyTimelines.add(t);
    }
  }
  return files;
}

/** A stretch of segment numbers served by one timeline: [firstSegNo, endSegNo). */
export interface TimelineSpan {
  timeline: number;
  firstSegNo: number;
  /** Exclusive; Infinity for the last timeline. */
  endSegNo: number;
}

/** Segment number (log and seg as one integer, timeline ignored) → name on a timeline. */
export function segmentOfNumber(timeline: number, segNo: number, segmentSize = SEGMENT_SIZE): string {
  const perLog = segmentsPerLog(segmentSize);
  return segmentName({ timeline, log: Math.floor(segNo / perLog), seg: segNo % perLog });
}

function segNoOfLsn(lsn: string, segmentSize: number): number {
  return Number(parseLsn(lsn) / BigInt(segmentSize));
}

/**
 * Which timeline serves each segment number on the way to `timeline`. `missingHistory` when
 * timeline > 1 has no history file: then only `timeline` itself is known.
 */
export function timelineLineage(timeline: number, histories: ReadonlyMap<number, TimelineSwitch[]>, segmentSize = SEGMENT_SIZE): { spans: TimelineSpan[]; missingHistory: boolean } {
  const switches = histories.get(timeline);
  if (!switches) return { spans: [{ timeline, firstSegNo: 0, endSegNo: Infinity }], missingHistory: timeline > 1 };
  const spans: TimelineSpan[] = [];
  let first = 0;
  for (const s of switches) {
    const end = segNoOfLsn(s.switchLsn, segmentSize);
    spans.push({ timeline: s.parentTimeline, firstSegNo: first, endSegNo: end });
    first = end;
  }
  spans.push({ timeline, firstSegNo: first, endSegNo: Infinity });
  return { spans, missingHistory: false };
}

function timelineAt(spans: TimelineSpan[], segNo: number): number {
  for (const s of spans) if (segNo >= s.firstSegNo && segNo < s.endSegNo) return s.timeline;
  return spans[spans.length - 1].timeline;
}

/** The segments a restore replays from `from` to `to` (inclusive), following `spans`. */
export function segmentsBetween(from: string, to: string, spans: TimelineSpan[], segmentSize = SEGMENT_SIZE): string[] {
  const out: string[] = [];
  const last = segmentNumber(to, segmentSize);
  for (let n = segmentNumber(from, segmentSize); n <= last; n++) out.push(segmentOfNumber(timelineAt(spans, n), n, segmentSize));
  return out;
}

/** A run of consecutive missing segments. */
export interface WalGap {
  first: string;
  last: string;
  count: number;
  /** The archived segments around the gap (null at the start or end of the range). */
  before: string | null;
  after: string | null;
  /** Missing segments archived only as `.partial` (a partial does not replace a whole segment). */
  partialOnly: string[];
}

/** Consecutive runs of `expected` that are not in `archived`. */
export function findGaps(expected: string[], files: ArchivedWalFiles): WalGap[] {
  const gaps: WalGap[] = [];
  let current: WalGap | null = null;
  let before: string | null = null;
  for (const name of expected) {
    if (files.segments.has(name)) {
      if (current) {
        current.after = name;
        gaps.push(current);
        current = null;
      }
      before = name;
      continue;
    }
    if (!current) current = { first: name, last: name, count: 0, before, after: null, partialOnly: [] };
    current.last = name;
    current.count++;
    if (files.partials.has(name)) current.partialOnly.push(name);
  }
  if (current) gaps.push(current);
  return gaps;
}

export interface BackupWalRange {
  name: string;
  startSegment: string;
  /** From the sentinel; null when it could not be read (then only the start segment is checked). */
  stopSegment: string | null;
}

export interface BackupWalCheck {
  name: string;
  /** Segments from start to stop, on the stop segment's timeline lineage. */
  needed: string[];
  gaps: WalGap[];
  /** Whether its start lies on the lineage of the chain's timeline (it can restore to the newest WAL). */
  onChain: boolean;
}

export type ChainProblemKind = 'missing-history' | 'gap';

export interface ChainProblem {
  kind: ChainProblemKind;
  message: string;
  /** The WAL file the problem is about (a history file, the first missing segment). */
  walFile: string;
  gap?: WalGap;
}

export interface WalChainAnalysis {
  /** The timeline the chain ends on: the highest timeline with an archived segment. */
  timeline: number;
  spans: TimelineSpan[];
  /** The checked range; null when there is neither a backup nor a segment. */
  from: string | null;
  to: string | null;
  /** Every segment from `from` to `to` a restore would replay. */
  chain: string[];
  gaps: WalGap[];
  backups: BackupWalCheck[];
  problems: ChainProblem[];
  /** Things worth saying that are not failures. */
  notes: string[];
}

export interface WalChainInput {
  /** Names of every archived WAL file (segments, .partial, .history, .backup). */
  walFiles: Iterable<string>;
  /** Parsed history files by timeline (those that could be read). */
  histories: ReadonlyMap<number, TimelineSwitch[]>;
  backups: BackupWalRange[];
  segmentSize?: number;
}

/** Describes a gap: `000000010000000000000005 (between ...04 and ...06)`. */
export function describeGap(g: WalGap): string {
  const what = g.count === 1 ? `WAL segment ${g.first}` : `WAL segments ${g.first} to ${g.last} (${g.count})`;
  const around = g.before && g.after ? `between ${g.before} and ${g.after}` : g.before ? `after ${g.before}, the newest archived` : g.after ? `before ${g.after}` : 'none archived';
  const partial = g.partialOnly.length ? `; only as .partial: ${g.partialOnly.join(', ')}` : '';
  return `${what} (${around}${partial})`;
}

export function analyzeWalChain(input: WalChainInput): WalChainAnalysis {
  const segmentSize = input.segmentSize ?? SEGMENT_SIZE;
  const files = classifyWalFiles(input.walFiles);
  const problems: ChainProblem[] = [];
  const notes: string[] = [];
  const lineageCache = new Map<number, ReturnType<typeof timelineLineage>>();
  const lineage = (t: number) => {
    let l = lineageCache.get(t);
    if (!l) lineageCache.set(t, (l = timelineLineage(t, input.histories, segmentSize)));
    return l;
  };
  const missingHistoryReported = new Set<number>();
  const reportMissingHistory = (t: number, why: string) => {
    if (missingHistoryReported.has(t)) return;
    missingHistoryReported.add(t);
    const name = historyFileName(t);
    const state = files.historyTimelines.has(t) ? 'is unreadable' : 'is not archived';
    problems.push({ kind: 'missing-history', walFile: name, message: `timeline history file ${name} ${state}: ${why}` });
  };

  // The chain ends on the highest timeline that has segments (what recovery_target_timeline=latest follows).
  let timeline = 1;
  for (const s of files.segments) timeline = Math.max(timeline, parseSegmentName(s).timeline);
  if (!files.segments.size) for (const t of files.historyTimelines) timeline = Math.max(timeline, t);
  for (const t of files.historyTimelines)
    if (t > timeline) notes.push(`timeline ${t} has a history file but no archived segment: recovery with recovery_target_timeline=latest would follow it`);
  const main = lineage(timeline);
  if (main.missingHistory) reportMissingHistory(timeline, `without it recovery cannot follow the switch to timeline ${timeline}`);
  const onLineage = (segment: string) => {
    const p = parseSegmentName(segment);
    return timelineAt(main.spans, segmentNumber(segment, segmentSize)) === p.timeline;
  };

  // Each backup's own range: start to stop, on the lineage of the stop segment's timeline.
  const backups: BackupWalCheck[] = input.backups.map((b) => {
    const stop = b.stopSegment && segmentNumber(b.stopSegment, segmentSize) >= segmentNumber(b.startSegment, segmentSize) ? b.stopSegment : b.startSegment;
    const stopTimeline = parseSegmentName(stop).timeline;
    const l = lineage(stopTimeline);
    if (l.missingHistory && parseSegmentName(b.startSegment).timeline !== stopTimeline)
      reportMissingHistory(stopTimeline, `backup ${b.name} runs from timeline ${parseSegmentName(b.startSegment).timeline} into timeline ${stopTimeline}`);
    const needed = segmentsBetween(b.startSegment, stop, l.spans, segmentSize);
    // a backup that starts on its own timeline's lineage: needed[0] is its start segment
    if (needed[0] !== b.startSegment) needed[0] = b.startSegment;
    const onChain = onLineage(b.startSegment);
    if (!onChain) notes.push(`backup ${b.name} is not on the WAL history of timeline ${timeline}: it can restore only its own timeline`);
    return { name: b.name, needed, gaps: findGaps(needed, files), onChain };
  });

  // The chain: from the oldest backup on the lineage (or the oldest archived segment) to the newest.
  const onChainSegments = [...files.segments].filter(onLineage).map((s) => segmentNumber(s, segmentSize));
  const chainStarts = input.backups.filter((b) => onLineage(b.startSegment)).map((b) => segmentNumber(b.startSegment, segmentSize));
  // reduce, not Math.min(...): an archive can hold more segments than a call has arguments
  const lowest = (xs: number[]) => xs.reduce((a, b) => Math.min(a, b), Infinity);
  const highest = (xs: number[]) => xs.reduce((a, b) => Math.max(a, b), -Infinity);
  const fromNo: number | null = chainStarts.length ? lowest(chainStarts) : onChainSegments.length ? lowest(onChainSegments) : null;
  if (!input.backups.length && fromNo !== null) notes.push('no backups: the WAL chain is checked from the oldest archived segment');
  let chain: string[] = [];
  let from: string | null = null;
  let to: string | null = null;
  if (fromNo !== null) {
    const newest = onChainSegments.length ? highest(onChainSegments) : fromNo;
    const toNo = Math.max(fromNo, newest);
    from = segmentOfNumber(timelineAt(main.spans, fromNo), fromNo, segmentSize);
    to = segmentOfNumber(timelineAt(main.spans, toNo), toNo, segmentSize);
    chain = segmentsBetween(from, to, main.spans, segmentSize);
  }
  const gaps = findGaps(chain, files);
  for (const g of gaps) problems.push({ kind: 'gap', walFile: g.first, gap: g, message: `missing ${describeGap(g)}` });
  return { timeline, spans: main.spans, from, to, chain, gaps, backups, problems, notes };
}
