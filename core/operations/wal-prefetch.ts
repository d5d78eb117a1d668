/** `wal-prefetch WAL_DIRECTORY SEGMENT [--count N]`: download segments ahead of recovery (WAL-E's helper verb). */
import { usageError } from '../errors.js';
import { isSegmentName } from '../layout.js';
import { prefetchSegments, segmentsAfter } from '../wal-archive.js';
import type { VerbRunner } from '../verbs.js';

export const run: VerbRunner = async (ctx, [walDirectory, first], options) => {
  if (!isSegmentName(first)) throw usageError(`'${first}' is not a WAL segment name`);
  // A detached helper must never linger (a storage that hangs, a deleted directory): at most 10 minutes.
  setTimeout(() => process.exit(0), 10 * 60 * 1000).unref();
  const rt = await ctx.runtime();
  const count = options.count !== undefined ? Number(options.count) : rt.server.prefetch;
  if (!Number.isInteger(count) || count < 1 || count > 256) throw usageError(`--count must be an integer from 1 to 256`);
  const names = [first, ...segmentsAfter(first, count - 1)];
  const fetched = await prefetchSegments(rt, walDirectory, names);
  ctx.log.debug(`prefetched ${fetched} of ${names.length} segments`, { structured: { action: 'wal-prefetch', from: first, fetched } });
};
