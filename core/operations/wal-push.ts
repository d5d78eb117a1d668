/** `wal-push WAL_PATH`: PostgreSQL's archive_command. `wal-push --follow PG_WAL`: the push follower. */
import { basename, dirname, join, resolve } from 'node:path';
import PQueue from 'p-queue';
import { cleanPushMarkers, configStampOf, pushWalFile, readySegmentsAfter, recordPushFastPath } from '../wal-archive.js';
import { followArchiving, pushFollowerRunning, serverRunningFor } from '../wal-push-follower.js';
import { usageError } from '../errors.js';
import { isSegmentName } from '../layout.js';
import type { VerbContext } from '../cli.js';
import { startFollower } from '../start-follower.js';
import type { VerbRunner } from '../verbs.js';

/**
 * Segments pushed ahead per upload slot: with poolSize 2, the asked-for segment and up to 7 more
 * that PostgreSQL has marked ready. PostgreSQL's later calls for them are answered by
 * archive_command's sh front (bin/walrus-push-hit) in a few milliseconds instead of a node start
 * each (~0.1-0.3 s, the largest cost of archiving when WAL is written fast).
 */
const PUSHED_AHEAD_PER_SLOT = 4;

/** Start a detached `walrus wal-push --follow PG_WAL` unless one follows this pg_wal already. */
function startPushFollower(ctx: VerbContext, walDirectory: string) {
  return startFollower(ctx, () => pushFollowerRunning(walDirectory), ['--log-level', 'error', 'wal-push', '--follow', resolve(walDirectory)]);
}

const follow: VerbRunner = async (ctx, [walDirectory], options) => {
  if (!(await serverRunningFor(walDirectory))) {
    throw usageError(`${walDirectory} is not the pg_wal of a running server (no live postmaster.pid beside it)`);
  }
  const rt = await ctx.runtime();
  const poolSize = options['pool-size'] !== undefined ? Number(options['pool-size']) : rt.server.poolSize;
  // A push that hangs (storage unreachable without an error) must not keep it forever: PostgreSQL's
  // calls that wait on it give up and run the full wal-push.
  let lastActivity = Date.now();
  setInterval(() => Date.now() - lastActivity > 10 * 60_000 && process.exit(0), 10_000).unref();
  const followed = await followArchiving(rt, walDirectory, {
    poolSize,
    configPath: ctx.configPath,
    onActivity: () => (lastActivity = Date.now()),
    onFailure: (name, e) => ctx.log.warn(`the push follower could not push ${name}; PostgreSQL's call for it runs the full wal-push`, { detail: e.message }),
  });
  ctx.log.debug(followed ? 'archiving went quiet: the push follower ends' : 'another push follower follows this pg_wal', { structured: { action: 'wal-push', follow: true } });
};

export const run: VerbRunner = async (ctx, positionals, options) => {
  if (options.follow) return follow(ctx, positionals, options);
  const [path] = positionals;
  const rt = await ctx.runtime();
  const poolSize = options['pool-size'] !== undefined ? Number(options['pool-size']) : rt.server.poolSize;
  const walDirectory = dirname(path);
  const name = basename(path);
  // A running server's pg_wal: from now on its follower pushes each segment as it is marked ready.
  const followed = rt.server.pushFollower && !!ctx.configPath && basename(resolve(walDirectory)) === 'pg_wal' && (await serverRunningFor(walDirectory));
  const ahead = poolSize > 1 ? await readySegmentsAfter(walDirectory, name, poolSize * PUSHED_AHEAD_PER_SLOT - 1) : [];
  // what the records of segments pushed ahead need (nothing when none is)
  const recorded = followed || ahead.length > 0;
  const configStamp = recorded ? await configStampOf(ctx.configPath) : '-';
  if (recorded && ctx.configPath) await recordPushFastPath(walDirectory, ctx.configPath, ctx.serverName ?? null).catch(() => {});
  // The asked-for file first and decides the exit code; segments pushed ahead only save later calls' time.
  const queue = new PQueue({ concurrency: Math.max(1, poolSize) });
  const [main] = await Promise.allSettled([
    // recorded too when a follower is to start: it then skips it instead of pushing it again
    queue.add(() => pushWalFile(rt, path, { recordWhenPushed: followed && isSegmentName(name), configStamp })),
    ...ahead.map((aheadName) =>
      queue.add(() => pushWalFile(rt, join(walDirectory, aheadName), { recordAsPushedAhead: true, configStamp })).catch((e) => {
        ctx.log.warn(`parallel push of ${aheadName} failed; PostgreSQL will ask for it again`, { detail: (e as Error).message });
      }),
    ),
  ]);
  await cleanPushMarkers(walDirectory).catch(() => {});
  if (main.status === 'rejected') throw main.reason;
  if (followed) await startPushFollower(ctx, walDirectory).catch((e) => ctx.log.debug('could not start the push follower', { detail: (e as Error).message }));
};
