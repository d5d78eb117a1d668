/**
 * Starting a long-lived follower (wal-prefetch --follow from wal-fetch, wal-push --follow from
 * wal-push): bin/walrus again, detached, with this run's config file (absolute) and server.
 */
import { spawn } from 'node:child_process';
import { basename, resolve } from 'node:path';
import type { VerbContext } from './cli.js';

/**
 * Start `walrus --config FILE --server NAME ...verbArguments` detached, unless `running()` says a
 * follower is there already. Nothing when this process is not bin/walrus or has no config file to pass.
 */
export async function startFollower(ctx: VerbContext, running: () => Promise<boolean>, verbArguments: string[]): Promise<void> {
  const bin = process.argv[1];
  if (!bin || basename(bin) !== 'walrus' || !ctx.configPath) return;
  if (await running()) return;
  const args = [bin, '--config', resolve(ctx.configPath), '--server', ctx.server().name, ...verbArguments];
  const child = spawn(process.execPath, args, { detached: true, stdio: 'ignore', env: ctx.env });
  child.unref();
}
