/**
 * `cron-export`: the exporter behind `walrus export-cron`. Turns the fleet's schedules (already
 * resolved to absolute command lines by the core) into a crontab, a cron.d file or systemd units.
 */
import type { PluginManifest } from '../../core/types.js';
import type { ScheduleExporter, ScheduleFormat } from '../../core/operations/export-cron.js';

export interface CronExportOptions {
  format?: ScheduleFormat;
}

export const SCHEDULE_FORMATS: ScheduleFormat[] = ['crontab', 'cron.d', 'systemd'];

export const manifest: PluginManifest<'exporter', CronExportOptions, ScheduleExporter> = {
  name: 'cron-export',
  kind: 'exporter',
  optionsSchema: {
    type: 'object',
    additionalProperties: false,
    properties: {
      format: { enum: SCHEDULE_FORMATS, default: 'crontab', description: 'crontab (no user column), cron.d (user column) or systemd (service + timer units)' },
    },
  },
  async create(options) {
    const { createScheduleExporter } = await import('./schedule-formats.js');
    return createScheduleExporter(options.format ?? 'crontab');
  },
};
