/**
 * `restore DATADIR [--target-...] [--backup NAME] [--standby]`: the whole point-in-time restore.
 * Picks the backup, fetches it, writes the recovery settings, supplies missing config files, and
 * says what to run next. The seed runbook's `backup-list | tail -1 | cut | xargs` and hand-written
 * recovery.conf, in one verb.
 */
import { resolve } from 'node:path';
import { refusedError } from '../errors.js';
import { parseLsn, segmentNumber, SEGMENT_SIZE } from '../layout.js';
import { listBackups, type BackupEntry } from '../backup-catalog.js';
import { fetchBackup } from '../backup-restore.js';
import { fetchProgressLine } from '../fetch-progress.js';
import { restoreCommandFor } from '../pg-settings.js';
import { describeTarget, recoverySettingLines, supplyMissingConfigFiles, targetFromOptions, writeRecoverySettings, type RecoveryTarget } from '../recovery-settings.js';
import { giveToOsUser, readRecoveryMinimums } from '../local-postgres.js';
import type { VerbRunner } from '../verbs.js';

/** When the backup became consistent-able: walrus records it; for WAL-E backups the sentinel's time. */
function finishedAt(b: BackupEntry): Date {
  const stopped = b.sentinel?.walrus?.stoppedAt;
  return stopped ? new Date(stopped) : b.lastModified;
}

/** The backup's stop position; for WAL-E backups the end of its stop segment (an upper bound). */
function stopPosition(b: BackupEntry): bigint | null {
  const lsn = b.sentinel?.walrus?.stopLsn;
  if (lsn) return parseLsn(lsn);
  const seg = b.stopSegment ?? b.sentinel?.wal_segment_backup_stop;
  return seg ? BigInt(segmentNumber(seg) + 1) * BigInt(SEGMENT_SIZE) : null;
}

export function chooseBackup(backups: BackupEntry[], target: RecoveryTarget): BackupEntry | undefined {
  const newestFirst = [...backups].reverse();
  if (target.kind === 'time') {
    const t = Date.parse(target.value.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00'));
    return newestFirst.find((b) => finishedAt(b).getTime() <= t);
  }
  if (target.kind === 'lsn') {
    const t = parseLsn(target.value);
    return newestFirst.find((b) => {
      const p = stopPosition(b);
      return p !== null && p <= t;
    });
  }
  return newestFirst[0];
}

export const run: VerbRunner = async (ctx, [datadir], options) => {
  const rt = await ctx.runtime();
  const dataDirectory = resolve(datadir);
  const target = targetFromOptions(options);
  const standby = !!options.standby;
  const backups = await listBackups(rt, { detail: true });
  const listing = backups.map((b) => `${b.name} (finished ${finishedAt(b).toISOString()})`).join(', ') || 'none';
  let chosen: BackupEntry | undefined;
  if (options.backup) {
    const wanted = String(options.backup) === 'LATEST' ? backups[backups.length - 1]?.name : String(options.backup);
    chosen = backups.find((b) => b.name === wanted);
    if (!chosen) throw refusedError(`backup ${options.backup} does not exist`, { detail: `backups: ${listing}` });
  } else {
    chosen = chooseBackup(backups, target);
    if (!chosen)
      throw refusedError(backups.length ? `no backup finished before ${describeTarget(target)}: the target is older than every backup` : `there are no backups of ${ctx.server().name} to restore`, {
        detail: `backups: ${listing}`,
        // a target before the oldest backup's end cannot be reached from any backup: only a later target helps
        hint: backups.length ? `pick a target after ${new Date(backups.reduce((m, b) => Math.min(m, finishedAt(b).getTime()), Infinity)).toISOString()}, when the first backup finished` : 'take one with backup-push',
      });
  }

  ctx.log.info(`restoring ${chosen.name} to ${dataDirectory}`, { detail: `recovery target: ${describeTarget(target)}`, structured: { action: 'restore', backup: chosen.name, state: 'begin' } });
  const progress = process.stderr.isTTY && !ctx.json ? fetchProgressLine(process.stderr) : null;
  try {
    await fetchBackup(rt, dataDirectory, chosen.name, { poolSize: rt.server.poolSize, onProgress: progress ? (p) => progress.update(p) : undefined });
  } finally {
    progress?.end();
  }
  // pg_control read as whoever runs walrus: before giveToOsUser the directory is still ours
  const supplied = await supplyMissingConfigFiles(dataDirectory, await readRecoveryMinimums(rt.server.pgBinDirectory, dataDirectory));
  const restoreCommand = restoreCommandFor(rt.fleet.file, rt.server);
  await writeRecoverySettings(dataDirectory, recoverySettingLines(restoreCommand, target, standby), standby);
  await giveToOsUser(dataDirectory, rt.server.osUser);

  const summary = {
    dataDirectory,
    backup: chosen.name,
    target: describeTarget(target),
    signal: standby ? 'standby.signal' : 'recovery.signal',
    suppliedConfigFiles: supplied,
    next: `pg_ctl -D ${dataDirectory} start`,
  };
  if (ctx.json) ctx.out.write(JSON.stringify(summary, null, 2) + '\n');
  else
    ctx.out.write(
      [
        `restored ${chosen.name} into ${dataDirectory}`,
        `recovery: ${summary.signal}, restore_command through walrus, target ${summary.target}${target.kind !== 'end' && !standby ? ', then promote' : ''}`,
        ...(supplied.length ? [`supplied ${supplied.join(', ')} (the backup had none): review them`] : []),
        '',
        'next:',
        `  ${rt.server.osUser === 'postgres' ? 'sudo -u postgres ' : ''}${rt.server.pgBinDirectory}/pg_ctl -D ${dataDirectory} start`,
        '  watch the server log: recovery replays the archived WAL, then the server accepts writes',
      ].join('\n') + '\n',
    );
  ctx.log.info(`restore of ${chosen.name} prepared`, { structured: { action: 'restore', backup: chosen.name, state: 'complete' } });
};
