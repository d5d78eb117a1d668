/** Small file-system steps that several operations need the same way. */
import { constants as fsConstants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';

/** fsync a directory, so that a rename or a new entry in it survives a crash. */
export async function fsyncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Whether anything (file, directory, link, even a dangling one) is at `path`. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}
