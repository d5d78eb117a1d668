/**
 * `verify [--json]`: reads back everything a restore would need and says what is wrong with it.
 *
 * - every backup with a sentinel: extended_version.txt exists; every tar partition exists and
 *   decrypts and decompresses to the end (the codec's and cipher's own checks); with walrus's block
 *   in the sentinel, stored and tar sizes and SHA-256 match it;
 * - the WAL from each backup's start segment to its stop segment is archived;
 * - the WAL from the oldest backup's start to the newest archived segment has no gap, following
 *   timeline history files (core/wal-chain.ts), and each of those segments decodes to a whole segment.
 *
 * Nothing is written. Every problem names the object (as the storage describes its key). Exit 4 when
 * any object is missing or damaged; 6 when the only problems are key failures (the objects may be
 * fine); 3 when the only problems are storage failures; 0 otherwise.
 */
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EXIT, WalrusError, type ErrorKind } from '../errors.js';
import { DigestTap, asIntegrityError, openObject } from '../pipeline.js';
import { SEGMENT_SIZE } from '../layout.js';
import { listBackups, readSentinel, type BackupEntry } from '../backup-catalog.js';
import { analyzeWalChain, describeGap, parseHistoryFile, timelineOfHistoryFile, type TimelineSwitch, type WalGap } from '../wal-chain.js';
import type { BackupSentinel } from '../backup-sentinel.js';
import type { ServerRuntime } from '../runtime.js';
import type { StorageObjectInfo } from '../types.js';
import type { VerbRunner } from '../verbs.js';
import { codecOfKey } from '../codec-by-suffix.js';

export type ProblemKind = Extract<ErrorKind, 'INTEGRITY' | 'KEY' | 'STORAGE'>;

export interface VerifyProblem {
  kind: ProblemKind;
  message: string;
  /** The storage key the problem is about (present or missing). */
  key?: string;
  backup?: string;
}

export interface BackupVerification {
  name: string;
  ok: boolean;
  problems: VerifyProblem[];
  objects: number;
  storedBytes: number;
  tarBytes: number;
  /** Whether the sentinel carries walrus's block (sizes and checksums to compare). */
  checksums: boolean;
  wal: { from: string; to: string | null; segments: number };
}

export interface WalVerification {
  timeline: number;
  from: string | null;
  to: string | null;
  segments: number;
  gaps: Array<WalGap & { keys: string[] }>;
  decodedSegments: number;
}

export interface VerifyReport {
  ok: boolean;
  backups: BackupVerification[];
  wal: WalVerification;
  problems: VerifyProblem[];
  notes: string[];
  objects: number;
  storedBytes: number;
  decodedBytes: number;
}

export interface VerifyProgress {
  done: number;
  total: number;
  decodedBytes: number;
}

export interface VerifyOptions {
  /** Objects read at once (default: the server's poolSize). */
  concurrency?: number;
  /** Called after each object and every `progressIntervalMs` while reading. */
  onProgress?: (p: VerifyProgress) => void;
  progressIntervalMs?: number;
}

const MAX_HISTORY_BYTES = 1024 * 1024;

function problemKind(e: unknown): ProblemKind {
  if (e instanceof WalrusError && (e.kind === 'KEY' || e.kind === 'STORAGE')) return e.kind;
  return 'INTEGRITY';
}


interface DecodedObject {
  storedBytes: number;
  storedSha256: string;
  contentBytes: number;
  contentSha256: string;
}

/** Bytes decoded so far, including objects still being read: for the progress line. */
class DecodeProgress {
  private finished = 0;
  private readonly reading = new Set<DigestTap>();
  start(tap: DigestTap): void {
    this.reading.add(tap);
  }
  end(tap: DigestTap): void {
    this.reading.delete(tap);
    this.finished += tap.bytes;
  }
  get bytes(): number {
    let n = this.finished;
    for (const t of this.reading) n += t.bytes;
    return n;
  }
}

/** Reads `key` to the end through cipher and codec; null when it does not exist. */
async function decodeObject(rt: ServerRuntime, key: string, progress: DecodeProgress, options: { codec: boolean } = { codec: true }): Promise<DecodedObject | null> {
  const stored = new DigestTap();
  const body = await openObject(rt.storage, key, { codec: rt.codec, cipher: rt.cipher, expectCodec: options.codec ? await codecOfKey(rt, key) : null, storedTap: stored });
  if (!body) return null;
  const content = new DigestTap();
  progress.start(content);
  try {
    await pipeline(body, content, new Writable({ highWaterMark: 1024 * 1024, write: (_chunk, _encoding, done) => done() }));
  } finally {
    progress.end(content);
  }
  return { storedBytes: stored.bytes, storedSha256: stored.digest(), contentBytes: content.bytes, contentSha256: content.digest() };
}

async function readSmallObject(rt: ServerRuntime, key: string): Promise<string | null> {
  const body: Readable | null = await openObject(rt.storage, key, { ...rt, expectCodec: await codecOfKey(rt, key) });
  if (!body) return null;
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    length += (chunk as Buffer).length;
    if (length > MAX_HISTORY_BYTES) {
      body.destroy();
      throw new WalrusError('INTEGRITY', `larger than ${MAX_HISTORY_BYTES} bytes: not a timeline history file`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** `what: error` then the object, unless the error already names it. */
function failureMessage(rt: ServerRuntime, what: string, key: string, e: unknown): string {
  const where = rt.storage.describe(key);
  const reason = asIntegrityError(e, what).message;
  return reason.includes(where) ? `${what}: ${reason}` : `${what}: ${reason}: ${where}`;
}

const PARTITION = /tar_partitions\/part_(\d{8})\.tar[^/]*$/;

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

/** Runs `tasks` with at most `concurrency` at once. */
async function runPool(tasks: Array<() => Promise<void>>, concurrency: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) await tasks[next++]();
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, tasks.length)) }, worker));
}

export async function verifyArchive(rt: ServerRuntime, options: VerifyOptions = {}): Promise<VerifyReport> {
  const { storage, layout } = rt;
  const problems: VerifyProblem[] = [];
  const notes: string[] = [];
  let objects = 0;
  let storedBytes = 0;
  let decodedBytes = 0;
  const decodeProgress = new DecodeProgress();

  // ---- what is there
  const walObjects = new Map<string, StorageObjectInfo>();
  for await (const info of storage.list(layout.walFolder())) {
    const name = layout.walFileOfKey(info.key);
    if (name !== null) walObjects.set(name, info);
  }
  const walKey = (name: string) => walObjects.get(name)?.key ?? layout.walKey(name);

  const backupObjects = new Map<string, StorageObjectInfo[]>();
  for await (const info of storage.list(layout.backupsFolder())) {
    const name = layout.backupOfKey(info.key);
    if (name === null) continue;
    let list = backupObjects.get(name);
    if (!list) backupObjects.set(name, (list = []));
    list.push(info);
  }

  // ---- timeline history files: small, read first because the chain depends on them
  const histories = new Map<number, TimelineSwitch[]>();
  for (const [name, info] of walObjects) {
    const timeline = timelineOfHistoryFile(name);
    if (timeline === null) continue;
    objects++;
    storedBytes += info.size;
    try {
      const text = await readSmallObject(rt, info.key);
      if (text === null) throw new WalrusError('INTEGRITY', 'vanished while being read');
      decodedBytes += Buffer.byteLength(text);
      histories.set(timeline, parseHistoryFile(text, name));
    } catch (e) {
      problems.push({ kind: problemKind(e), key: info.key, message: failureMessage(rt, `timeline history file ${name} is unreadable`, info.key, e) });
    }
  }

  // ---- backups and their sentinels
  const entries: BackupEntry[] = await listBackups(rt);
  const sentinels = new Map<string, BackupSentinel>();
  const verifications = new Map<string, BackupVerification>();
  const addBackupProblem = (backup: string, p: Omit<VerifyProblem, 'backup'>) => {
    const full = { ...p, backup };
    verifications.get(backup)!.problems.push(full);
    problems.push(full);
  };
  for (const e of entries) {
    verifications.set(e.name, { name: e.name, ok: true, problems: [], objects: 0, storedBytes: 0, tarBytes: 0, checksums: false, wal: { from: e.startSegment, to: null, segments: 0 } });
    try {
      const sentinel = await readSentinel(rt, e.name);
      sentinels.set(e.name, sentinel);
      verifications.get(e.name)!.checksums = !!sentinel.walrus;
    } catch (err) {
      addBackupProblem(e.name, { kind: problemKind(err), key: e.sentinelKey, message: failureMessage(rt, `backup ${e.name}: the stop sentinel is unreadable`, e.sentinelKey, err) });
    }
  }

  // ---- the WAL chain
  const analysis = analyzeWalChain({
    walFiles: walObjects.keys(),
    histories,
    backups: entries.map((e) => ({ name: e.name, startSegment: e.startSegment, stopSegment: sentinels.get(e.name)?.wal_segment_backup_stop ?? null })),
  });
  notes.push(...analysis.notes);
  const gapKeys = (g: WalGap) => (g.count === 1 ? [storage.describe(walKey(g.first))] : [storage.describe(walKey(g.first)), storage.describe(walKey(g.last))]);
  const gapWhere = (g: WalGap) => (g.count === 1 ? gapKeys(g)[0] : gapKeys(g).join(' to '));
  for (const p of analysis.problems) {
    if (p.kind === 'gap') problems.push({ kind: 'INTEGRITY', key: walKey(p.walFile), message: `${p.message}: ${gapWhere(p.gap!)}` });
    else problems.push({ kind: 'INTEGRITY', key: walKey(p.walFile), message: `${p.message}: ${storage.describe(walKey(p.walFile))}` });
  }
  for (const b of analysis.backups) {
    const v = verifications.get(b.name)!;
    v.wal = { from: b.needed[0], to: b.needed[b.needed.length - 1] ?? null, segments: b.needed.length };
    for (const g of b.gaps)
      addBackupProblem(b.name, {
        kind: 'INTEGRITY',
        key: walKey(g.first),
        message: `backup ${b.name} needs ${describeGap(g)} from its start ${b.needed[0]} to its stop ${b.needed[b.needed.length - 1]}, not archived: ${gapWhere(g)}`,
      });
  }

  // ---- objects to read to the end
  const tasks: Array<() => Promise<void>> = [];
  /** An object read to the end (damaged objects count as read, their bytes do not). */
  const attempted = (v: BackupVerification | null) => {
    objects++;
    if (v) v.objects++;
  };
  const counted = (v: BackupVerification | null, info: { storedBytes: number; contentBytes: number }) => {
    storedBytes += info.storedBytes;
    decodedBytes += info.contentBytes;
    if (v) v.storedBytes += info.storedBytes;
  };

  for (const e of entries) {
    const v = verifications.get(e.name)!;
    const sentinel = sentinels.get(e.name);
    const listed = new Map((backupObjects.get(e.name) ?? []).map((o) => [o.key, o]));

    const versionKey = layout.extendedVersionKey(e.name);
    const versionRecord = sentinel?.walrus?.extendedVersion;
    if (!listed.has(versionKey)) addBackupProblem(e.name, { kind: 'INTEGRITY', key: versionKey, message: `backup ${e.name}: extended_version.txt is missing: ${storage.describe(versionKey)}` });
    else
      tasks.push(async () => {
        attempted(v);
        try {
          // stored as is by WAL-E (plain text); walrus records its stored size and SHA-256
          const got = await decodeObject(rt, versionKey, decodeProgress, { codec: false });
          if (!got) throw new WalrusError('INTEGRITY', 'vanished while being read');
          counted(v, { storedBytes: got.storedBytes, contentBytes: 0 });
          if (versionRecord && (got.storedBytes !== versionRecord.storedBytes || got.storedSha256 !== versionRecord.storedSha256))
            addBackupProblem(e.name, {
              kind: 'INTEGRITY',
              key: versionKey,
              message: `backup ${e.name}: extended_version.txt is ${got.storedBytes} bytes with SHA-256 ${got.storedSha256.slice(0, 16)}…, the sentinel says ${versionRecord.storedBytes} bytes, ${versionRecord.storedSha256.slice(0, 16)}…: ${storage.describe(versionKey)}`,
            });
        } catch (err) {
          addBackupProblem(e.name, { kind: problemKind(err), key: versionKey, message: failureMessage(rt, `backup ${e.name}: extended_version.txt is unreadable`, versionKey, err) });
        }
      });

    // The partitions: the sentinel's list when walrus wrote it, else what is in tar_partitions/.
    const listedPartitions = [...listed.values()]
      .map((o) => ({ key: o.key, number: Number(PARTITION.exec(o.key)?.[1] ?? NaN) }))
      .filter((p) => !Number.isNaN(p.number))
      .sort((a, b) => a.number - b.number);
    type Expected = { number: number; key: string; tarBytes?: number; tarSha256?: string; storedBytes?: number; storedSha256?: string };
    let expected: Expected[];
    if (sentinel?.walrus) {
      expected = [...sentinel.walrus.partitions].sort((a, b) => a.number - b.number);
      const recorded = new Set(expected.map((p) => p.key));
      for (const p of listedPartitions)
        if (!recorded.has(p.key)) notes.push(`backup ${e.name}: ${storage.describe(p.key)} is not in the sentinel's partition list (left over from a retried upload?)`);
    } else {
      expected = listedPartitions;
      const highest = listedPartitions.length ? listedPartitions[listedPartitions.length - 1].number : -1;
      const present = new Set(listedPartitions.map((p) => p.number));
      for (let n = 0; n <= highest; n++) if (!present.has(n)) expected.push({ number: n, key: layout.partitionKey(e.name, n) });
      expected.sort((a, b) => a.number - b.number);
      if (highest < 0)
        addBackupProblem(e.name, { kind: 'INTEGRITY', key: layout.partitionKey(e.name, 0), message: `backup ${e.name} has no tar partitions: ${storage.describe(layout.partitionKey(e.name, 0))}` });
    }
    for (const p of expected) {
      const label = `backup ${e.name} partition ${String(p.number).padStart(8, '0')}`;
      if (!listed.has(p.key)) {
        addBackupProblem(e.name, { kind: 'INTEGRITY', key: p.key, message: `${label} is missing: ${storage.describe(p.key)}` });
        continue;
      }
      tasks.push(async () => {
        attempted(v);
        try {
          const got = await decodeObject(rt, p.key, decodeProgress);
          if (!got) throw new WalrusError('INTEGRITY', 'vanished while being read');
          counted(v, got);
          v.tarBytes += got.contentBytes;
          const mismatches: string[] = [];
          if (p.storedBytes !== undefined && got.storedBytes !== p.storedBytes) mismatches.push(`stored size ${got.storedBytes} bytes, the sentinel says ${p.storedBytes}`);
          else if (p.storedSha256 !== undefined && got.storedSha256 !== p.storedSha256) mismatches.push(`stored SHA-256 ${got.storedSha256}, the sentinel says ${p.storedSha256}`);
          if (p.tarBytes !== undefined && got.contentBytes !== p.tarBytes) mismatches.push(`tar size ${got.contentBytes} bytes, the sentinel says ${p.tarBytes}`);
          else if (p.tarSha256 !== undefined && got.contentSha256 !== p.tarSha256) mismatches.push(`tar SHA-256 ${got.contentSha256}, the sentinel says ${p.tarSha256}`);
          if (mismatches.length) addBackupProblem(e.name, { kind: 'INTEGRITY', key: p.key, message: `${label} does not match its sentinel (${mismatches.join('; ')}): ${storage.describe(p.key)}` });
        } catch (err) {
          addBackupProblem(e.name, { kind: problemKind(err), key: p.key, message: failureMessage(rt, `${label} does not decode`, p.key, err) });
        }
      });
    }
  }

  // Every archived segment on the chain or in a backup's range, read to the end.
  const segmentsToRead = new Set<string>(analysis.chain);
  for (const b of analysis.backups) for (const s of b.needed) segmentsToRead.add(s);
  let decodedSegments = 0;
  for (const name of [...segmentsToRead].sort()) {
    const info = walObjects.get(name);
    if (!info) continue; // reported as a gap
    tasks.push(async () => {
      attempted(null);
      try {
        const got = await decodeObject(rt, info.key, decodeProgress);
        if (!got) throw new WalrusError('INTEGRITY', 'vanished while being read');
        counted(null, got);
        decodedSegments++;
        if (got.contentBytes !== SEGMENT_SIZE)
          problems.push({ kind: 'INTEGRITY', key: info.key, message: `WAL segment ${name} decodes to ${got.contentBytes} bytes, not ${SEGMENT_SIZE}: ${storage.describe(info.key)}` });
      } catch (err) {
        problems.push({ kind: problemKind(err), key: info.key, message: failureMessage(rt, `WAL segment ${name} does not decode`, info.key, err) });
      }
    });
  }

  let done = 0;
  const total = tasks.length;
  const report = () => options.onProgress?.({ done, total, decodedBytes: decodeProgress.bytes });
  const reporting = tasks.map((t) => async () => {
    await t();
    done++;
    report();
  });
  // a partition can take minutes: say how far it got in between
  const ticker = options.onProgress ? setInterval(report, options.progressIntervalMs ?? 500) : null;
  try {
    await runPool(reporting, options.concurrency ?? rt.server.poolSize);
  } finally {
    if (ticker) clearInterval(ticker);
  }

  const backups = entries.map((e) => {
    const v = verifications.get(e.name)!;
    v.ok = v.problems.length === 0;
    return v;
  });
  const wal: WalVerification = {
    timeline: analysis.timeline,
    from: analysis.from,
    to: analysis.to,
    segments: analysis.chain.length,
    gaps: analysis.gaps.map((g) => ({ ...g, keys: gapKeys(g) })),
    decodedSegments,
  };
  // workers finish in any order: a stable order for people and diffs
  const byKey = (a: VerifyProblem, b: VerifyProblem) => ((a.key ?? '') < (b.key ?? '') ? -1 : (a.key ?? '') > (b.key ?? '') ? 1 : 0);
  problems.sort(byKey);
  for (const b of backups) b.problems.sort(byKey);
  return { ok: problems.length === 0, backups, wal, problems, notes, objects, storedBytes, decodedBytes };
}

/** Exit code for a report: damage first, then key failures, then storage failures. */
export function verifyExitCode(report: VerifyReport): number {
  if (report.problems.some((p) => p.kind === 'INTEGRITY')) return EXIT.INTEGRITY;
  if (report.problems.some((p) => p.kind === 'KEY')) return EXIT.KEY;
  if (report.problems.some((p) => p.kind === 'STORAGE')) return EXIT.STORAGE;
  return EXIT.OK;
}

export function formatVerifyReport(r: VerifyReport): string {
  const lines: string[] = [];
  for (const p of r.problems) lines.push(`problem: ${p.message}`);
  for (const b of r.backups) {
    const wal = b.wal.to ? `WAL ${b.wal.from} to ${b.wal.to}` : `WAL from ${b.wal.from}`;
    const what = `${plural(b.objects, 'object')}, ${mib(b.storedBytes)} stored, ${mib(b.tarBytes)} of tar${b.checksums ? ', sizes and SHA-256 compared with the sentinel' : ''}; ${wal}`;
    lines.push(`backup ${b.name}: ${b.ok ? 'ok' : `${b.problems.length} problem${b.problems.length === 1 ? '' : 's'}`} (${what})`);
  }
  if (r.wal.from)
    lines.push(
      `WAL ${r.wal.from} to ${r.wal.to} (timeline ${r.wal.timeline}): ${r.wal.segments} segment${r.wal.segments === 1 ? '' : 's'}, ` +
        `${r.wal.gaps.length ? `${r.wal.gaps.length} gap${r.wal.gaps.length === 1 ? '' : 's'}` : 'no gap'}, ${r.wal.decodedSegments} read to the end`,
    );
  else lines.push('WAL: nothing archived');
  for (const n of r.notes) lines.push(`note: ${n}`);
  const totals = `${r.backups.length} backup${r.backups.length === 1 ? '' : 's'}, ${plural(r.objects, 'object')} read, ${mib(r.storedBytes)} stored, ${mib(r.decodedBytes)} decoded`;
  lines.push(r.ok ? `verify: ok (${totals})` : `verify: ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'} (${totals})`);
  return lines.join('\n') + '\n';
}

export const run: VerbRunner = async (ctx, positionals, options) => {
  // The drill (restore into a scratch cluster, start it, query it) is its own module.
  if (options.drill) return (await import('./verify-drill.js')).run(ctx, positionals, options);
  if (options.backup !== undefined || options.sql !== undefined) throw new WalrusError('USAGE', 'verify: --backup and --sql go with --drill', { hint: 'walrus verify --drill --backup NAME' });
  const rt = await ctx.runtime();
  const tty = !ctx.json && (process.stderr as NodeJS.WriteStream).isTTY;
  const report = await verifyArchive(rt, {
    onProgress: tty ? (p) => process.stderr.write(`\rverify: ${p.done}/${p.total} objects read, ${mib(p.decodedBytes)} decoded `) : undefined,
  });
  if (tty) process.stderr.write('\r\x1b[K');
  if (ctx.json) {
    const { ok, backups, wal, problems, notes, objects, storedBytes, decodedBytes } = report;
    ctx.out.write(JSON.stringify({ ok, backups, wal, problems, notes, objects, storedBytes, decodedBytes }, null, 2) + '\n');
  } else ctx.out.write(formatVerifyReport(report));
  const code = verifyExitCode(report);
  if (code !== EXIT.OK)
    ctx.log.error(`verify found ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'} in ${storage(rt)}`, {
      hint:
        code === EXIT.KEY
          ? 'the configured key cannot decrypt these objects: check encryption in the fleet config'
          : 'a backup with a problem cannot be trusted: take a new backup; a WAL gap limits point-in-time restore to before it',
    });
  return code;
};

function storage(rt: ServerRuntime): string {
  return rt.storage.describe(rt.layout.prefix);
}
