/**
 * Walking a data directory the way WAL-E's base backup does (shared/wal-e-format.md, "What a base
 * backup leaves out"). Needs only the filesystem, so `--while-offline` backups use it too.
 */
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join, resolve } from 'node:path';
import { databaseError, usageError } from '../../core/errors.js';
import type { DataFile, TablespaceSpec } from '../../core/types.js';

/** Top-level directories whose contents are left out (the directory itself is kept, empty). */
const TOP_LEVEL_EMPTIED = new Set(['pg_wal', 'pg_xlog', 'pg_replslot', 'pg_log', 'pg_stat_tmp']);
/** Directories emptied wherever they appear (temp files, our own and WAL-E's working space). */
const EMPTIED_ANYWHERE = new Set(['pgsql_tmp', '.wal-e', '.walrus']);
/**
 * Top-level files left out: the running server's own files, configuration (a restore brings its
 * own), and a backup_label/tablespace_map left on disk (the backup gets the ones pg_backup_stop returns).
 * postgresql.auto.conf is kept, as WAL-E keeps it.
 */
const TOP_LEVEL_FILES_LEFT_OUT = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'postgresql.conf',
  'pg_hba.conf',
  'pg_ident.conf',
  'backup_label',
  'tablespace_map',
]);
/** fsck's directory: often root-only, never PostgreSQL's; left out with its contents (as WAL-E). */
const LEFT_OUT_ANYWHERE = new Set(['lost+found']);

const isVanished = (e: unknown) => (e as NodeJS.ErrnoException)?.code === 'ENOENT';

function readError(path: string, e: unknown) {
  const code = (e as NodeJS.ErrnoException)?.code ?? 'error';
  return databaseError(`cannot read '${path}' in the data directory: ${code}`, {
    hint: code === 'EACCES' ? 'run walrus as the OS user that owns the data directory' : undefined,
    cause: e,
  });
}

function entryOf(relativePath: string, absolutePath: string, s: Stats, type: DataFile['type'], linkTarget?: string): DataFile {
  return {
    relativePath,
    absolutePath,
    type,
    size: type === 'file' ? s.size : 0,
    mode: s.mode & 0o7777,
    mtime: s.mtime,
    ...(linkTarget === undefined ? {} : { linkTarget }),
  };
}

/** Names in code-unit order, so the listing is the same on every run and every machine. */
async function sortedNames(directory: string): Promise<string[] | null> {
  try {
    const names = await readdir(directory);
    return names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  } catch (e) {
    if (isVanished(e)) return null; // dropped (a database, a temp dir) while we walked: WAL replay repairs
    throw readError(directory, e);
  }
}

/**
 * Every entry to back up, in a deterministic order: names sorted, each directory before its
 * contents. The data directory itself is not listed. Entries that vanish while walking are skipped.
 * Tablespace links `pg_tblspc/<oid>` are listed as symlinks and their targets' contents follow as
 * `pg_tblspc/<oid>/...` (absolutePath inside the target).
 */
export async function* listDataFiles(dataDirectory: string): AsyncGenerator<DataFile> {
  const root = resolve(dataDirectory);
  let s: Stats;
  try {
    s = await stat(root);
  } catch (e) {
    throw usageError(`cannot read data directory '${root}': ${(e as NodeJS.ErrnoException).code ?? e}`, {
      hint: "check the server's dataDirectory in the config",
      cause: e,
    });
  }
  if (!s.isDirectory()) throw usageError(`data directory '${root}' is not a directory`, { hint: "check the server's dataDirectory in the config" });
  yield* walk(root, '', 0);
}

async function* walk(absoluteDirectory: string, relativeDirectory: string, depth: number): AsyncGenerator<DataFile> {
  const names = await sortedNames(absoluteDirectory);
  if (names === null) return;
  for (const name of names) {
    if (LEFT_OUT_ANYWHERE.has(name)) continue;
    if (depth === 0 && TOP_LEVEL_FILES_LEFT_OUT.has(name)) continue;
    const absolutePath = join(absoluteDirectory, name);
    const relativePath = relativeDirectory === '' ? name : `${relativeDirectory}/${name}`;
    let s: Stats;
    try {
      s = await lstat(absolutePath);
    } catch (e) {
      if (isVanished(e)) continue;
      throw readError(absolutePath, e);
    }
    const emptied = EMPTIED_ANYWHERE.has(name) || (depth === 0 && TOP_LEVEL_EMPTIED.has(name));
    if (s.isSymbolicLink()) {
      let target: string;
      try {
        target = await readlink(absolutePath);
      } catch (e) {
        if (isVanished(e)) continue;
        throw readError(absolutePath, e);
      }
      if (emptied) {
        // pg_wal linked elsewhere (initdb -X): keep an empty directory, not a link to a place a restore may not have
        yield { relativePath, absolutePath, type: 'directory', size: 0, mode: 0o700, mtime: s.mtime };
        continue;
      }
      yield entryOf(relativePath, absolutePath, s, 'symlink', target);
      if (relativeDirectory === 'pg_tblspc') {
        const targetPath = resolve(absoluteDirectory, target);
        yield* walk(targetPath, relativePath, depth + 1);
      }
    } else if (s.isDirectory()) {
      yield entryOf(relativePath, absolutePath, s, 'directory');
      if (!emptied) yield* walk(absolutePath, relativePath, depth + 1);
    } else if (s.isFile()) {
      yield entryOf(relativePath, absolutePath, s, 'file');
    }
    // sockets, fifos, devices: not PostgreSQL data, nothing a tar restore should recreate
  }
}

/**
 * The tablespaces, from the `pg_tblspc/<oid>` links, sorted by name. `loc` ends with `/`, as WAL-E
 * writes it in the sentinel's spec. In-place tablespaces (real directories) have no location to record.
 */
export async function readTablespaces(dataDirectory: string): Promise<TablespaceSpec[]> {
  const directory = join(resolve(dataDirectory), 'pg_tblspc');
  const names = await sortedNames(directory);
  if (names === null) return [];
  const specs: TablespaceSpec[] = [];
  for (const name of names) {
    const path = join(directory, name);
    let target: string;
    try {
      const s = await lstat(path);
      if (!s.isSymbolicLink()) continue;
      target = await readlink(path);
    } catch (e) {
      if (isVanished(e)) continue; // tablespace dropped meanwhile
      throw readError(path, e);
    }
    const loc = resolve(directory, target);
    specs.push({ name, loc: loc.endsWith('/') ? loc : `${loc}/`, link: `pg_tblspc/${name}` });
  }
  return specs;
}
