/** `backup-list [QUERY] [--detail] [--json]`: WAL-E's listing of the base backups, oldest first. */
import { EXIT } from '../errors.js';
import { backupListRow, filterBackups, formatBackupList, listBackups, readBackupDetails } from '../backup-catalog.js';
import type { VerbRunner } from '../verbs.js';

export const run: VerbRunner = async (ctx, [query], options) => {
  const rt = await ctx.runtime();
  // List cheaply, filter, then read only the sentinels still wanted.
  const entries = filterBackups(await listBackups(rt), query);
  if (options.detail) await readBackupDetails(rt, entries);
  if (ctx.json) ctx.out.write(JSON.stringify(entries.map(backupListRow), null, 2) + '\n');
  else ctx.out.write(formatBackupList(entries));
  if (query !== undefined && entries.length === 0) {
    ctx.log.warn(query === 'LATEST' ? 'no base backups' : `no base backup named ${query}`, {
      detail: `in ${rt.storage.describe(rt.layout.backupsFolder())}`,
    });
    return EXIT.NOT_FOUND;
  }
};
