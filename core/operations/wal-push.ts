/** `wal-push WAL_PATH`: PostgreSQL's archive_command. */
import { dirname, join } from 'node:path';
import PQueue from 'p-queue';
import { cleanPushMarkers, configStampOf, pushWalFile, readySegmentsAfter, recordPushFastPath } from '../wal-archive.js';
import type { VerbRunner } from '../verbs.js';

/**
 * Segments pushed ahead per upload slot: with poolSize 2, the asked-for segment and up to 7 more
 * that PostgreSQL has marked ready. PostgreSQL's later calls for them are answered by
 * archive_command's sh front (bin/walrus-push-hit) in a few milliseconds instead of a node start
 * each (~0.1-0.3 s, the largest cost of archiving when WAL is written fast).
 */
const PUSHED_AHEAD_PER_SLOT = 4;

export const run: VerbRunner = async (ctx, [path], options) => {
  const rt = await ctx.runtime();
  const poolSize = options['pool-size'] !== undefined ? Number(options['pool-size']) : rt.server.poolSize;
  const walDirectory = dirname(path);
  const ahead = poolSize > 1 ? await readySegmentsAfter(walDirectory, path.split('/').pop()!, poolSize * PUSHED_AHEAD_PER_SLOT - 1) : [];
  // what the records of segments pushed ahead need (nothing when none is)
  const configStamp = ahead.length ? await configStampOf(ctx.configPath) : '-';
  if (ahead.length && ctx.configPath) await recordPushFastPath(walDirectory, ctx.configPath, ctx.serverName ?? null).catch(() => {});
  // The asked-for file first and decides the exit code; segments pushed ahead only save later calls' time.
  const queue = new PQueue({ concurrency: Math.max(1, poolSize) });
  const [main] = await Promise.allSettled([
    queue.add(() => pushWalFile(rt, path)),
    ...ahead.map((name) =>
      queue.add(() => pushWalFile(rt, join(walDirectory, name), { recordAsPushedAhead: true, configStamp })).catch((e) => {
        ctx.log.warn(`parallel push of ${name} failed; PostgreSQL will ask for it again`, { detail: (e as Error).message });
      }),
    ),
  ]);
  await cleanPushMarkers(walDirectory).catch(() => {});
  if (main.status === 'rejected') throw main.reason;
};
