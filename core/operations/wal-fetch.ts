/** `wal-fetch WAL_NAME DESTINATION`: PostgreSQL's restore_command. */
import { existsSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { EXIT, WalrusError } from '../errors.js';
import { isSegmentName } from '../layout.js';
import { cleanPartialFiles, cleanPrefetched, fetchWalFile, followerRunning, recordFastPathSettings, recordRequested, segmentsAfter, takePrefetched } from '../wal-archive.js';
import type { VerbRunner } from '../verbs.js';
import { reportFailure, type VerbContext } from '../cli.js';
import { startFollower } from '../start-follower.js';

/**
 * During archive recovery (recovery.signal, no standby.signal) any exit status 1-125 makes
 * PostgreSQL end recovery and promote: after a corrupt or unreachable segment that would silently
 * drop every later transaction. So there, failures other than "not found" exit above 125.
 */
function inArchiveRecovery(dest: string): boolean {
  const dataDirectory = basename(dirname(resolve(dest))) === 'pg_wal' ? dirname(dirname(resolve(dest))) : process.cwd();
  return existsSync(resolve(dataDirectory, 'recovery.signal')) && !existsSync(resolve(dataDirectory, 'standby.signal'));
}

const RECOVERY_CODES: Partial<Record<WalrusError['kind'], number>> = {
  STORAGE: EXIT.RECOVERY_STORAGE,
  INTEGRITY: EXIT.RECOVERY_INTEGRITY,
  KEY: EXIT.RECOVERY_KEY,
};

/** Start a detached `walrus wal-prefetch --follow` after `name` unless one follows this pg_wal already. */
function startPrefetcher(ctx: VerbContext, walDirectory: string, name: string, count: number) {
  return startFollower(ctx, () => followerRunning(walDirectory), ['wal-prefetch', walDirectory, segmentsAfter(name, 1)[0], '--count', String(count), '--follow']);
}

export const run: VerbRunner = async (ctx, [name, dest]) => {
  const walDirectory = dirname(resolve(dest));
  const server = ctx.server();
  try {
    const follows = isSegmentName(name) && server.prefetch > 0;
    if (follows) await recordRequested(walDirectory, name).catch(() => {});
    const prefetched = isSegmentName(name) && (await takePrefetched(walDirectory, name, dest));
    if (prefetched) {
      ctx.log.info('promoted a prefetched WAL segment', { detail: `${name} → ${dest}`, structured: { action: 'wal-fetch', seg: name, state: 'complete', prefetch: 'hit' } });
    } else {
      const rt = await ctx.runtime();
      // The follower starts once the segment is known to be there (a standby asking past the
      // archive's end starts none) and before it is downloaded: its start-up overlaps the download,
      // and it is fetching the next segments when PostgreSQL asks for them.
      await fetchWalFile(rt, name, dest, { onFound: follows ? () => startPrefetcher(ctx, walDirectory, name, server.prefetch) : undefined });
    }
    await cleanPartialFiles(walDirectory).catch(() => {});
    if (follows) {
      // a hit: the follower that fetched it may have ended since
      if (prefetched) await startPrefetcher(ctx, walDirectory, name, server.prefetch);
      await cleanPrefetched(walDirectory, name).catch(() => {});
      if (ctx.configPath) await recordFastPathSettings(walDirectory, ctx.configPath, ctx.serverName ?? null, server.name, server.prefetch).catch(() => {});
    }
  } catch (e) {
    if (e instanceof WalrusError && e.kind === 'NOT_FOUND') {
      // PostgreSQL asks for files that do not exist (next timeline's history, the end of the archive): normal.
      ctx.log.info(e.message, { structured: { action: 'wal-fetch', seg: name, state: 'not-found' } });
      return EXIT.NOT_FOUND;
    }
    const recoveryCode = e instanceof WalrusError && inArchiveRecovery(dest) ? RECOVERY_CODES[e.kind] : undefined;
    if (recoveryCode) {
      reportFailure(e, ctx.log, ctx.debug);
      ctx.log.error(`stopping archive recovery: ${name} cannot be restored, and ending recovery here would lose every later transaction`, {
        hint: 'fix the archive or the key, then start PostgreSQL again; recovery resumes where it stopped',
      });
      return recoveryCode;
    }
    throw e;
  }
};
