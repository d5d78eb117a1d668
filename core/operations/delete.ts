/**
 * `delete [--confirm] [--include-incomplete] retain N | before NAME | everything | old-versions`.
 * Plans with core/retention.ts; without --confirm only prints the plan. With it: each backup's
 * sentinel goes first (the backup stops existing in one step), then its folder, then the WAL no
 * retained backup needs. WAL last: an interrupted delete never leaves a listed backup without
 * its WAL.
 */
import { notFound, usageError } from '../errors.js';
import { planDeletion, RetentionPlanError, type DeletionPlan, type PlannedBackup, type RetentionRule } from '../retention.js';
import type { StorageObjectInfo } from '../types.js';
import type { ServerRuntime } from '../runtime.js';
import type { VerbRunner } from '../verbs.js';

const BATCH = 1000;

function ruleOf(positionals: string[]): RetentionRule {
  const [kind, arg] = positionals;
  const hint = 'walrus delete --help';
  switch (kind) {
    case 'retain': {
      if (arg === undefined || !/^\d+$/.test(arg) || Number(arg) < 1) throw usageError(`delete retain needs a number of backups to keep, at least 1 (got ${arg === undefined ? 'nothing' : `'${arg}'`})`, { hint: 'to remove every backup: delete everything' });
      return { kind, count: Number(arg) };
    }
    case 'before':
      if (arg === undefined) throw usageError('delete before needs a backup name', { hint: 'walrus backup-list shows the names' });
      return { kind, name: arg };
    case 'everything':
    case 'old-versions':
      if (arg !== undefined) throw usageError(`delete ${kind} takes no argument (got '${arg}')`, { hint });
      return { kind };
    default:
      throw usageError(`unknown delete target '${kind}': use retain N, before NAME, everything or old-versions`, { hint });
  }
}

async function listObjects(rt: ServerRuntime, rule: RetentionRule): Promise<StorageObjectInfo[]> {
  const prefixes = rule.kind === 'old-versions' ? [rt.layout.prefix] : [rt.layout.backupsFolder(), rt.layout.walFolder()];
  const out: StorageObjectInfo[] = [];
  for (const p of prefixes) for await (const o of rt.storage.list(p)) out.push(o);
  return out;
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
const objects = (n: number) => `${n} object${n === 1 ? '' : 's'}`;

function describePlan(plan: DeletionPlan, dryRun: boolean): string {
  const verb = dryRun ? 'would delete' : 'deleted';
  const lines: string[] = [];
  if (dryRun) lines.push('dry run: nothing is deleted (add --confirm to delete)');
  for (const b of plan.backups) lines.push(`${verb} backup ${b.name} (completed ${b.completedAt!.toISOString()}, ${objects(b.folderKeys.length + 1)}, ${mib(b.bytes)})`);
  for (const b of plan.incomplete) lines.push(`${verb} interrupted backup ${b.name} (no sentinel, ${objects(b.folderKeys.length)}, ${mib(b.bytes)})`);
  if (plan.wal.keys.length) lines.push(`${verb} ${plan.wal.keys.length} WAL file${plan.wal.keys.length === 1 ? '' : 's'}, ${plan.wal.first} .. ${plan.wal.last} (${mib(plan.wal.bytes)})`);
  if (plan.otherKeys.length) lines.push(`${verb} ${objects(plan.otherKeys.length)} ${plan.rule.kind === 'old-versions' ? 'of older WAL-E layouts' : 'of no backup or WAL file'} (${mib(plan.otherBytes)})`);
  if (!plan.backups.length && !plan.incomplete.length && !plan.wal.keys.length && !plan.otherKeys.length) lines.push('nothing to delete');
  if (plan.rule.kind === 'retain' || plan.rule.kind === 'before') {
    lines.push(
      plan.retained.length
        ? `keeping ${plan.retained.length} backup${plan.retained.length === 1 ? '' : 's'}: ${plan.retained.map((b) => b.name).join(', ')}; WAL from segment ${plan.walHorizon} on (by segment number, any timeline); timeline history files always`
        : 'no complete backup: keeping all WAL',
    );
  }
  for (const b of plan.incompleteKept) lines.push(`keeping interrupted backup ${b.name} (no sentinel; it may be running; --include-incomplete removes it)`);
  return lines.join('\n') + '\n';
}

function planJson(plan: DeletionPlan, dryRun: boolean) {
  const backup = (b: PlannedBackup) => ({ name: b.name, completedAt: b.completedAt?.toISOString() ?? null, objects: b.folderKeys.length + (b.sentinelKey ? 1 : 0), bytes: b.bytes });
  return {
    dryRun,
    rule: plan.rule,
    backups: plan.backups.map(backup),
    incomplete: plan.incomplete.map(backup),
    retained: plan.retained.map((b) => b.name),
    incompleteKept: plan.incompleteKept.map((b) => b.name),
    wal: { count: plan.wal.keys.length, bytes: plan.wal.bytes, first: plan.wal.first, last: plan.wal.last, horizon: plan.walHorizon },
    other: { count: plan.otherKeys.length, bytes: plan.otherBytes, keys: plan.otherKeys },
  };
}

async function deleteInBatches(rt: ServerRuntime, keys: string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += BATCH) await rt.storage.delete(keys.slice(i, i + BATCH));
}

async function carryOut(rt: ServerRuntime, plan: DeletionPlan): Promise<void> {
  for (const b of plan.backups) {
    // The sentinel first: from this call on the backup is not listed, restorable or counted.
    await rt.storage.delete([b.sentinelKey!]);
    await deleteInBatches(rt, b.folderKeys);
    rt.log.info(`deleted backup ${b.name}`, { structured: { action: 'delete', backup: b.name, objects: b.folderKeys.length + 1, state: 'complete' } });
  }
  for (const b of plan.incomplete) {
    await deleteInBatches(rt, b.folderKeys);
    rt.log.info(`deleted interrupted backup ${b.name}`, { structured: { action: 'delete', backup: b.name, objects: b.folderKeys.length, state: 'complete' } });
  }
  if (plan.wal.keys.length) {
    await deleteInBatches(rt, plan.wal.keys);
    rt.log.info(`deleted ${plan.wal.keys.length} WAL files`, { detail: `${plan.wal.first} .. ${plan.wal.last}`, structured: { action: 'delete', wal: plan.wal.keys.length, state: 'complete' } });
  }
  if (plan.otherKeys.length) {
    await deleteInBatches(rt, plan.otherKeys);
    rt.log.info(`deleted ${objects(plan.otherKeys.length)} ${plan.rule.kind === 'old-versions' ? 'of older WAL-E layouts' : 'of no backup or WAL file'}`);
  }
}

export const run: VerbRunner = async (ctx, positionals, options) => {
  const rule = ruleOf(positionals);
  const dryRun = !options.confirm;
  const rt = await ctx.runtime();
  let plan: DeletionPlan;
  try {
    plan = planDeletion(rt.layout, await listObjects(rt, rule), rule, { includeIncomplete: !!options['include-incomplete'] });
  } catch (e) {
    if (e instanceof RetentionPlanError) {
      if (e.reason === 'unknown-backup') throw notFound(`${e.message} in ${rt.storage.describe(rt.layout.backupsFolder())}`, { hint: 'walrus backup-list shows the backups there are' });
      throw usageError(e.message);
    }
    throw e;
  }
  if (!dryRun) await carryOut(rt, plan);
  if (ctx.json) ctx.out.write(JSON.stringify(planJson(plan, dryRun), null, 2) + '\n');
  else ctx.out.write(describePlan(plan, dryRun));
};
