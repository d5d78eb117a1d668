/**
 * Renders scheduled walrus jobs as a crontab, an /etc/cron.d file, or systemd service + timer
 * units. Each format has its own escaping, applied here on top of the sh-quoted command line:
 * cron turns an unescaped % into a newline, systemd expands %specifiers and $VARIABLES.
 */
import { WalrusError } from '../../core/errors.js';
import { shellQuote } from '../../core/pg-settings.js';
import type { ScheduledJob, ScheduleExporter, ScheduleFormat } from '../../core/operations/export-cron.js';
import { cronToOnCalendar } from './cron-calendar.js';

const JOB_TITLES: Record<ScheduledJob['job'], string> = {
  backup: 'base backup (backup-push)',
  retention: 'retention (delete --confirm retain N)',
};

/** The sh command a cron line runs: quoted argv, output appended to the job's log. */
function cronCommand(job: ScheduledJob): string {
  const command = `${job.argv.map(shellQuote).join(' ')} >> ${shellQuote(job.logFile)} 2>&1`;
  // cron(8) reads an unescaped % as end of command (the rest becomes stdin); \% is a literal %
  return command.replace(/%/g, '\\%');
}

function renderCron(jobs: ScheduledJob[], header: string[], withUser: boolean): string {
  const lines = header.map((h) => `# ${h}`);
  let server: string | undefined;
  for (const job of jobs) {
    if (job.server !== server) {
      server = job.server;
      lines.push('', `# server ${job.server}${withUser ? '' : ` (its jobs run as OS user ${job.osUser})`}`);
    }
    lines.push(`${job.schedule}${withUser ? ` ${job.osUser}` : ''} ${cronCommand(job)}`);
  }
  return lines.join('\n') + '\n';
}

/**
 * A systemd ExecStart= word: bare when safe, else double-quoted with C escapes; % doubled
 * (specifiers). $ is doubled in arguments (variables), but the executable is not expanded, and
 * systemd refuses an executable path with quotes, backslashes or control characters outright.
 */
export function systemdQuote(word: string, role: 'executable' | 'argument' = 'argument'): string {
  if (role === 'executable' && /["'\\\x00-\x1f\x7f]/.test(word)) {
    throw new WalrusError('USAGE', `systemd cannot run ${JSON.stringify(word)}: an executable path there may not contain quotes, backslashes or control characters`, {
      hint: 'install node under a plain path, or use --format crontab / cron.d',
    });
  }
  let literal = word.replace(/%/g, '%%');
  if (role === 'argument') literal = literal.replace(/\$/g, '$$$$');
  if (/^[A-Za-z0-9_@+=:,./-]+$/.test(literal)) return literal;
  return `"${literal.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

export function unitBaseName(job: ScheduledJob): string {
  return `walrus-${job.server}-${job.job}`;
}

function renderSystemd(jobs: ScheduledJob[], header: string[]): string {
  const out: string[] = header.map((h) => `# ${h}`);
  out.push('# Each unit follows its file name; put them in /etc/systemd/system/, then:');
  out.push('#   systemctl daemon-reload && systemctl enable --now ' + jobs.map((j) => `${unitBaseName(j)}.timer`).join(' '));
  for (const job of jobs) {
    const name = unitBaseName(job);
    const description = `walrus ${JOB_TITLES[job.job]} of server ${job.server}`.replace(/%/g, '%%');
    out.push(
      '',
      `# ${name}.service`,
      '[Unit]',
      `Description=${description}`,
      'Wants=network-online.target',
      'After=network-online.target',
      '',
      '[Service]',
      'Type=oneshot',
      `User=${job.osUser}`,
      `ExecStart=${job.argv.map((w, i) => systemdQuote(w, i === 0 ? 'executable' : 'argument')).join(' ')}`,
      `StandardOutput=append:${job.logFile.replace(/%/g, '%%')}`,
      'StandardError=inherit',
      '',
      `# ${name}.timer`,
      '[Unit]',
      `Description=${description}: ${job.schedule.replace(/%/g, '%%')} (cron)`,
      '',
      '[Timer]',
      ...cronToOnCalendar(job.schedule).map((spec) => `OnCalendar=${spec}`),
      '# run a schedule missed while the machine was down once it is up again',
      'Persistent=true',
      '',
      '[Install]',
      'WantedBy=timers.target',
    );
  }
  return out.join('\n') + '\n';
}

export function createScheduleExporter(format: ScheduleFormat): ScheduleExporter {
  return {
    format,
    render(jobs, header) {
      if (format === 'systemd') return renderSystemd(jobs, header);
      return renderCron(jobs, header, format === 'cron.d');
    },
  };
}
