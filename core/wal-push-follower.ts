/**
 * The push follower (`wal-push --follow PG_WAL`): one long-lived process per pg_wal of a running
 * server that pushes each segment as soon as PostgreSQL marks it ready (archive_status/NAME.ready),
 * poolSize at once, and records it in pg_wal/.walrus/pushed/NAME once its object is complete in
 * storage. PostgreSQL's archive_command calls then end in the sh front (bin/walrus-push-hit): it
 * takes the record, or, when the push is still running, asks the follower (.ask-NAME) and waits
 * for the record. What pgBackRest's archive-push async does with its spool, without a node start
 * per call.
 *
 * The follower never tells PostgreSQL anything itself: archive_status/ is only read, and a segment
 * counts as archived only when PostgreSQL's own call for it gets exit 0 from the front, which
 * checks that the record names that very file under the same, unchanged config. A push the
 * follower cannot make is answered with .failed-NAME: the front then runs the full wal-push, which
 * reports the error with its exit code in PostgreSQL's log.
 *
 * It ends when nothing was ready for `idleMs`, when the server stops (postmaster.pid gone or its
 * process dead), or when the config file changes or archive_command names another one (a later
 * wal-push, which loads that config, starts another).
 */
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import PQueue from 'p-queue';
import { DirectoryWaker } from './directory-waker.js';
import { isSegmentName } from './layout.js';
import type { ServerRuntime } from './runtime.js';
import { cleanPushMarkers, configStampOf, fileIdentityOf, followerLockHeld, PUSH_FAST_PATH_SH, lockFollower, processAlive, pushedDirectory, pushWalFile } from './wal-archive.js';

/** The sh front's request to push NAME now and record it: `.ask-NAME` in pg_wal/.walrus/pushed/. */
export const PUSH_ASK_PREFIX = '.ask-';
/** The follower's answer when it could not push NAME: the front runs the full wal-push. */
export const PUSH_FAILED_PREFIX = '.failed-';
/** A segment whose push failed is tried again after this long (at once when the front asks). */
const RETRY_FAILED_MS = 5_000;

export interface PushFollowOptions {
  /** Segments pushed at once. */
  poolSize: number;
  /** Exit after this long with nothing ready and nothing asked (default 60 s). */
  idleMs?: number;
  /** Look at archive_status/ at least this often even without a change seen (default 1 s). */
  pollMs?: number;
  /** The fleet config it runs with: when the file changes, it stops. */
  configPath?: string;
  /** Called on each segment pushed (a watchdog's heartbeat). */
  onActivity?: () => void;
  /** Called on each push that failed. */
  onFailure?: (name: string, error: Error) => void;
}

/** The process id in the data directory's postmaster.pid (its first line), or null. */
async function postmasterPid(dataDirectory: string): Promise<number | null> {
  const text = await readFile(join(dataDirectory, 'postmaster.pid'), 'utf8').catch(() => '');
  const pid = Number(text.split('\n', 1)[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/** Whether `walDirectory` is the pg_wal of a running server: the only place a follower is useful. */
export async function serverRunningFor(walDirectory: string): Promise<boolean> {
  const pid = await postmasterPid(dirname(resolve(walDirectory)));
  return pid !== null && processAlive(pid);
}

/** Whether a live push follower holds this pg_wal's lock. */
export async function pushFollowerRunning(walDirectory: string): Promise<boolean> {
  return followerLockHeld(pushedDirectory(walDirectory));
}

/**
 * Follow a running server's archiving until it goes quiet, stops or the config changes. Returns
 * false at once when another follower holds the lock.
 */
export async function followArchiving(rt: ServerRuntime, walDirectory: string, options: PushFollowOptions): Promise<boolean> {
  const dir = pushedDirectory(walDirectory);
  const statusDirectory = join(walDirectory, 'archive_status');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!(await lockFollower(dir))) return false;
  const dataDirectory = dirname(resolve(walDirectory));
  const postmaster = await postmasterPid(dataDirectory);
  const serverAlive = async () => postmaster !== null && (await postmasterPid(dataDirectory)) === postmaster && processAlive(postmaster);
  const idleMs = options.idleMs ?? 60_000;
  const pollMs = options.pollMs ?? 1_000;
  const configStamp = await configStampOf(options.configPath);
  // archive_command now names another config file (the sh front's settings, written by each wal-push): that one's follower takes over.
  const frontUsesConfig = async () => {
    const settings = await readFile(join(dir, PUSH_FAST_PATH_SH), 'utf8').catch(() => null);
    return settings === null || !options.configPath || settings.split('\n', 1)[0] === resolve(options.configPath);
  };

  // Wake on any change in archive_status/ (a segment marked ready) or in pushed/ (an ask), else poll.
  const waker = new DirectoryWaker([statusDirectory, dir]);

  const queue = new PQueue({ concurrency: Math.max(1, options.poolSize) });
  const running = new Set<string>();
  /** name → identity of the file this follower recorded: not pushed again while it is the same file. */
  const recorded = new Map<string, string>();
  const failedAt = new Map<string, number>();
  let lastActivity = Date.now();

  const push = async (name: string, asked: boolean) => {
    const path = join(walDirectory, name);
    const ask = join(dir, PUSH_ASK_PREFIX + name);
    try {
      // Asked: always through pushWalFile, which takes a current record or checks storage and records it.
      const identity = await fileIdentityOf(path);
      if (asked || (identity !== null && recorded.get(name) !== identity)) {
        await pushWalFile(rt, path, { recordAsPushedAhead: true, configStamp });
        if (identity !== null) recorded.set(name, identity);
        lastActivity = Date.now();
        options.onActivity?.();
      }
      failedAt.delete(name);
    } catch (e) {
      failedAt.set(name, Date.now());
      options.onFailure?.(name, e as Error);
      // a front waiting for it (asked now or while it ran) runs the full wal-push, which reports the error
      if (asked || (await stat(ask).then(() => true, () => false))) await writeFile(join(dir, PUSH_FAILED_PREFIX + name), '', { mode: 0o600 }).catch(() => {});
    } finally {
      // answered: by the record (written before this) or by .failed-NAME
      await rm(ask, { force: true }).catch(() => {});
      running.delete(name);
      waker.notify();
    }
  };

  try {
    for (;;) {
      if ((await configStampOf(options.configPath)) !== configStamp || !(await serverAlive()) || !(await frontUsesConfig())) break;
      const entries = await readdir(dir).catch(() => [] as string[]);
      const asked = entries.filter((e) => e.startsWith(PUSH_ASK_PREFIX) && isSegmentName(e.slice(PUSH_ASK_PREFIX.length))).map((e) => e.slice(PUSH_ASK_PREFIX.length));
      const ready = (await readdir(statusDirectory).catch(() => [] as string[]))
        .filter((e) => e.endsWith('.ready') && isSegmentName(e.slice(0, -'.ready'.length)))
        .map((e) => e.slice(0, -'.ready'.length));
      const now = Date.now();
      if (asked.length) lastActivity = now;
      // Asked first (PostgreSQL waits on them), then the oldest ready ones this follower has not
      // recorded yet; a push that failed is tried again after a while, or at once when asked.
      const askedSet = new Set(asked);
      const wanted = [...asked.sort(), ...ready.sort().filter((name) => !askedSet.has(name) && !recorded.has(name) && now - (failedAt.get(name) ?? 0) > RETRY_FAILED_MS)];
      for (const name of wanted) {
        if (running.size >= queue.concurrency) break;
        if (running.has(name)) continue;
        running.add(name);
        void queue.add(() => push(name, askedSet.has(name)));
      }
      if (running.size === 0 && now - lastActivity > idleMs) break;
      await waker.pause(running.size >= queue.concurrency ? 60_000 : pollMs);
      if (recorded.size > 512) for (const name of [...recorded.keys()].slice(0, 256)) recorded.delete(name);
    }
    await queue.onIdle();
    await cleanPushMarkers(walDirectory).catch(() => {});
  } finally {
    waker.close();
  }
  return true;
}
