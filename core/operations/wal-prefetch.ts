/**
 * `wal-prefetch WAL_DIRECTORY SEGMENT [--count N] [--follow]`: download segments ahead of recovery
 * (WAL-E's helper verb). With --follow (how wal-fetch starts it) it stays, keeping N segments ready
 * ahead of each request, until recovery has gone quiet.
 */
import { usageError } from '../errors.js';
import { isSegmentName } from '../layout.js';
import { followRecovery, prefetchSegments, segmentsAfter } from '../wal-archive.js';
import type { VerbRunner } from '../verbs.js';

export const run: VerbRunner = async (ctx, [walDirectory, first], options) => {
  if (!isSegmentName(first)) throw usageError(`'${first}' is not a WAL segment name`);
  const rt = await ctx.runtime();
  const count = options.count !== undefined ? Number(options.count) : rt.server.prefetch;
  if (!Number.isInteger(count) || count < 1 || count > 256) throw usageError(`--count must be an integer from 1 to 256`);
  if (options.follow) {
    // A fetch that hangs (storage unreachable without an error) must not keep it forever.
    const idleMs = 15_000;
    let lastActivity = Date.now();
    setInterval(() => Date.now() - lastActivity > 5 * idleMs && process.exit(0), 10_000).unref();
    const followed = await followRecovery(rt, walDirectory, first, { count, idleMs, configPath: ctx.configPath, onActivity: () => (lastActivity = Date.now()) });
    ctx.log.debug(followed ? 'recovery went quiet: prefetching ends' : 'another prefetcher follows this recovery', { structured: { action: 'wal-prefetch', from: first, follow: true } });
    return;
  }
  // A detached helper must never linger (a storage that hangs, a deleted directory): at most 10 minutes.
  setTimeout(() => process.exit(0), 10 * 60 * 1000).unref();
  const names = [first, ...segmentsAfter(first, count - 1)];
  const fetched = await prefetchSegments(rt, walDirectory, names);
  ctx.log.debug(`prefetched ${fetched} of ${names.length} segments`, { structured: { action: 'wal-prefetch', from: first, fetched } });
};
