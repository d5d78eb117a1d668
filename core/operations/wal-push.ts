/** `wal-push WAL_PATH`: PostgreSQL's archive_command. */
import { dirname } from 'node:path';
import { cleanPushMarkers, pushWalFile, readySegmentsAfter } from '../wal-archive.js';
import { join } from 'node:path';
import type { VerbRunner } from '../verbs.js';

export const run: VerbRunner = async (ctx, [path], options) => {
  const rt = await ctx.runtime();
  const poolSize = options['pool-size'] !== undefined ? Number(options['pool-size']) : rt.server.poolSize;
  const walDirectory = dirname(path);
  const ahead = await readySegmentsAfter(walDirectory, path.split('/').pop()!, poolSize - 1);
  // The asked-for file decides the exit code; segments pushed ahead only save later calls' time.
  const [main] = await Promise.allSettled([
    pushWalFile(rt, path),
    ...ahead.map((name) =>
      pushWalFile(rt, join(walDirectory, name), { recordAsPushedAhead: true }).catch((e) => {
        ctx.log.warn(`parallel push of ${name} failed; PostgreSQL will ask for it again`, { detail: (e as Error).message });
      }),
    ),
  ]);
  await cleanPushMarkers(walDirectory).catch(() => {});
  if (main.status === 'rejected') throw main.reason;
};
