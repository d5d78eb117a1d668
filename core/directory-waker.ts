/**
 * What the long-lived followers (wal-prefetch --follow, wal-push --follow) sleep on: a pause that
 * ends early on any change in the watched directories (inotify through fs.watch) or on notify().
 * A change while nobody was pausing is remembered: the next pause returns at once. Where a
 * directory cannot be watched, pauses simply run their time (the followers poll).
 */
import { watch, type FSWatcher } from 'node:fs';

export class DirectoryWaker {
  private wake: (() => void) | null = null;
  private changed = false;
  private readonly watchers: FSWatcher[];

  constructor(directories: string[]) {
    this.watchers = directories.flatMap((d) => {
      try {
        return [watch(d, () => this.notify())];
      } catch {
        return [];
      }
    });
  }

  notify(): void {
    this.changed = true;
    this.wake?.();
  }

  /** Wait up to `ms`, less if something changed (or had changed since the last pause). */
  pause(ms: number): Promise<void> {
    return new Promise<void>((done) => {
      if (this.changed) {
        this.changed = false;
        done();
        return;
      }
      const timer = setTimeout(() => {
        this.wake = null;
        done();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = null;
        this.changed = false;
        done();
      };
    });
  }

  close(): void {
    for (const w of this.watchers) w.close();
  }
}
