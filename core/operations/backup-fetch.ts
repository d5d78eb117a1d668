/** `backup-fetch DATADIR NAME|LATEST [--restore-spec FILE] [--pool-size N] [--json]`: restore a base backup into an empty directory. */
import { usageError } from '../errors.js';
import { fetchBackup, readRestoreSpec } from '../backup-restore.js';
import { fetchProgressLine } from '../fetch-progress.js';
import type { VerbRunner } from '../verbs.js';

const MiB = 1024 * 1024;

function poolSizeOption(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64) throw usageError(`--pool-size must be an integer from 1 to 64 (got '${value}')`);
  return n;
}

export const run: VerbRunner = async (ctx, [dataDirectory, nameOrLatest], options) => {
  const poolSize = poolSizeOption(options['pool-size']);
  const restoreSpec = typeof options['restore-spec'] === 'string' ? await readRestoreSpec(options['restore-spec']) : undefined;
  const rt = await ctx.runtime();
  const progress = process.stderr.isTTY && !ctx.json ? fetchProgressLine(process.stderr) : null;
  ctx.log.info('begin fetching a base backup', {
    detail: `Restoring ${nameOrLatest} from "${rt.storage.describe(rt.layout.backupsFolder())}" into "${dataDirectory}".`,
    structured: { action: 'backup-fetch', backup: nameOrLatest, state: 'begin' },
  });
  let result;
  try {
    result = await fetchBackup(rt, dataDirectory, nameOrLatest, { restoreSpec, poolSize, onProgress: progress ? (p) => progress.update(p) : undefined });
  } finally {
    progress?.end();
  }
  ctx.log.info('completed fetching a base backup', {
    detail:
      `Restored ${result.backup} into "${result.dataDirectory}": ${result.partitions} partition(s), ${result.files} files, ${(result.bytes / MiB).toFixed(1)} MiB in ${result.seconds.toFixed(1)} s; ` +
      (result.verification === 'sha256' ? 'every partition matched its recorded SHA-256.' : 'lzop/OpenPGP checksums verified (a WAL-E backup records no SHA-256).'),
    hint: 'bring postgresql.conf/pg_hba.conf if the backup has none, set restore_command (walrus wal-fetch %f %p) and create recovery.signal before starting PostgreSQL',
    structured: { action: 'backup-fetch', backup: result.backup, files: result.files, bytes: result.bytes, state: 'complete' },
  });
  if (ctx.json) ctx.out.write(JSON.stringify(result, null, 2) + '\n');
};
