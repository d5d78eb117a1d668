import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { storageError, usageError } from '../../core/errors.js';
import type { PluginContext, Storage, StorageObjectInfo } from '../../core/types.js';
import type { FileStorageOptions } from './index.js';

/** Temp files carry this marker; list() never reports them and they are never a key. */
const TEMP_MARK = '.walrus-tmp-';

function ioError(action: string, path: string, e: unknown) {
  const err = e as NodeJS.ErrnoException;
  return storageError(`file storage: ${action} ${path} failed: ${err.code ?? ''} ${err.message}`.replace(/\s+/g, ' ').trim(), { cause: e });
}

export class FileStorage implements Storage {
  readonly root: string;
  private readonly fsync: boolean;

  constructor(options: FileStorageOptions, context: Pick<PluginContext, 'configDirectory'>) {
    this.root = resolve(context.configDirectory, options.path);
    this.fsync = options.fsync ?? true;
  }

  describe(key = ''): string {
    return pathToFileURL(join(this.root, key)).href + (key === '' ? '/' : '');
  }

  private pathOf(key: string): string {
    if (!key || key.startsWith('/') || key.split('/').some((part) => part === '..' || part === '.') || key.includes('\0') || key.includes(TEMP_MARK))
      throw usageError(`file storage: invalid key '${key}'`);
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, body: Readable): Promise<void> {
    const target = this.pathOf(key);
    const dir = dirname(target);
    const temp = join(dir, `${TEMP_MARK}${randomBytes(6).toString('hex')}`);
    try {
      await mkdir(dir, { recursive: true });
      // flush: fsync before close, so the rename below never publishes unwritten data
      await pipeline(body, createWriteStream(temp, { flags: 'wx', mode: 0o600, flush: this.fsync }));
      await rename(temp, target);
      if (this.fsync) await this.syncDirectory(dir);
    } catch (e) {
      await unlink(temp).catch(() => {});
      body.destroy();
      throw ioError('put', target, e);
    }
  }

  private async syncDirectory(dir: string): Promise<void> {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  async get(key: string): Promise<Readable | null> {
    const path = this.pathOf(key);
    try {
      const handle = await open(path, 'r');
      return handle.createReadStream({ highWaterMark: 256 * 1024 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw ioError('get', path, e);
    }
  }

  async head(key: string): Promise<StorageObjectInfo | null> {
    const path = this.pathOf(key);
    try {
      const s = await stat(path);
      if (!s.isFile()) return null;
      return { key, size: s.size, lastModified: s.mtime };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw ioError('head', path, e);
    }
  }

  async *list(prefix: string): AsyncIterable<StorageObjectInfo> {
    // Walk only the deepest directory the prefix names, then filter by the remaining text.
    const slash = prefix.lastIndexOf('/');
    const dirKey = slash >= 0 ? prefix.slice(0, slash) : '';
    if (dirKey.split('/').some((p) => p === '..')) throw usageError(`file storage: invalid prefix '${prefix}'`);
    const start = dirKey ? join(this.root, ...dirKey.split('/')) : this.root;
    const stack: string[] = [start];
    while (stack.length) {
      const dir = stack.pop()!;
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') continue;
        throw ioError('list', dir, e);
      }
      for (const entry of entries) {
        if (entry.name.startsWith(TEMP_MARK)) continue;
        const full = join(dir, entry.name);
        const key = relative(this.root, full).split(sep).join('/');
        if (entry.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(key + '/')) stack.push(full);
          continue;
        }
        if (!entry.isFile() || !key.startsWith(prefix)) continue;
        try {
          const s = await stat(full);
          yield { key, size: s.size, lastModified: s.mtime };
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('list', full, e);
        }
      }
    }
  }

  async delete(keys: string[]): Promise<void> {
    for (const key of keys) {
      const path = this.pathOf(key);
      try {
        await rm(path, { force: true });
      } catch (e) {
        throw ioError('delete', path, e);
      }
    }
    // Remove directories left empty (basebackups_005/base_X/tar_partitions): they would look like leftovers.
    const dirs = new Set(keys.map((k) => dirname(this.pathOf(k))));
    for (const d of [...dirs].sort((a, b) => b.length - a.length)) {
      let dir = d;
      while (dir.startsWith(this.root + sep) && isAbsolute(dir)) {
        try {
          await rmdir(dir); // only succeeds when empty
        } catch {
          break;
        }
        dir = dirname(dir);
      }
    }
  }
}
