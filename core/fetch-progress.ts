/** Progress of a backup fetch for a person watching a terminal (backup-fetch, restore). */
import type { FetchProgress } from './backup-restore.js';

const MiB = 1024 * 1024;

/** One self-overwriting line on a terminal, at most a few times a second. */
export function fetchProgressLine(stream: NodeJS.WriteStream) {
  let last = 0;
  return {
    update(p: FetchProgress) {
      const now = Date.now();
      if (now - last < 250 && p.partitionsDone < p.partitionsTotal) return;
      last = now;
      const total = p.storedBytesTotal ? ` of ${(p.storedBytesTotal / MiB).toFixed(1)}` : '';
      stream.write(`\rbackup-fetch ${p.backup}: ${p.partitionsDone}/${p.partitionsTotal} partitions, ${(p.storedBytes / MiB).toFixed(1)}${total} MiB read\x1b[K`);
    },
    end() {
      if (last) stream.write('\n');
    },
  };
}

