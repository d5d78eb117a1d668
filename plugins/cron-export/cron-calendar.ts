/**
 * Cron expressions (the 5-field subset cron(8) accepts: lists, ranges, steps, month and weekday
 * names, nicknames) expanded to value sets, and rendered as systemd OnCalendar= specs.
 *
 * One difference decides the shape: cron runs when day-of-month OR day-of-week matches if both
 * are restricted (neither starts with `*`), while OnCalendar requires both. Such an expression
 * becomes two OnCalendar specs, one per day field; a timer fires at the union of its specs.
 */

export interface CronSchedule {
  minutes: number[];
  hours: number[];
  daysOfMonth: number[];
  months: number[];
  /** 0 = Sunday .. 6 = Saturday (cron's 7 is folded into 0). */
  daysOfWeek: number[];
  /** Whether the field was written starting with `*` (cron's test for the OR rule). */
  dayOfMonthStar: boolean;
  dayOfWeekStar: boolean;
}

const NICKNAMES: Record<string, string> = {
  '@hourly': '0 * * * *',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@weekly': '0 0 * * 0',
  '@monthly': '0 0 1 * *',
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
};

const MONTH_NAMES = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const WEEKDAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const SYSTEMD_WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

interface FieldSpec {
  label: string;
  min: number;
  max: number;
  names?: string[];
  /** Value of names[0] (1 for months, 0 for weekdays). */
  nameBase?: number;
}

const FIELDS: FieldSpec[] = [
  { label: 'minute', min: 0, max: 59 },
  { label: 'hour', min: 0, max: 23 },
  { label: 'day of month', min: 1, max: 31 },
  { label: 'month', min: 1, max: 12, names: MONTH_NAMES, nameBase: 1 },
  { label: 'day of week', min: 0, max: 7, names: WEEKDAY_NAMES, nameBase: 0 },
];

export class CronSyntaxError extends Error {}

function parseValue(text: string, field: FieldSpec, expression: string): number {
  const named = field.names?.indexOf(text.toLowerCase()) ?? -1;
  if (named >= 0) return named + (field.nameBase ?? 0);
  if (!/^\d+$/.test(text)) throw new CronSyntaxError(`'${expression}': ${field.label} '${text}' is not a number${field.names ? ' or name' : ''}`);
  const n = Number(text);
  if (n < field.min || n > field.max) throw new CronSyntaxError(`'${expression}': ${field.label} ${n} is outside ${field.min}-${field.max}`);
  return n;
}

function parseField(text: string, field: FieldSpec, expression: string): Set<number> {
  const values = new Set<number>();
  for (const part of text.split(',')) {
    const [range, stepText, extra] = part.split('/');
    if (extra !== undefined) throw new CronSyntaxError(`'${expression}': ${field.label} '${part}' has two steps`);
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d+$/.test(stepText) || Number(stepText) === 0) throw new CronSyntaxError(`'${expression}': ${field.label} step '${stepText}' is not a positive number`);
      step = Number(stepText);
    }
    let lo: number;
    let hi: number;
    if (range === '*') {
      lo = field.min;
      hi = field.max;
    } else {
      const [a, b, more] = range.split('-');
      if (more !== undefined || a === '') throw new CronSyntaxError(`'${expression}': ${field.label} '${range}' is not a value or range`);
      lo = parseValue(a, field, expression);
      // `N/step` (no upper bound) runs to the end of the field, as cronie reads it
      hi = b !== undefined ? parseValue(b, field, expression) : stepText !== undefined ? field.max : lo;
      if (hi < lo) throw new CronSyntaxError(`'${expression}': ${field.label} range '${range}' runs backwards`);
    }
    for (let v = lo; v <= hi; v += step) values.add(v);
  }
  return values;
}

/** Expands a cron expression; throws CronSyntaxError on anything cron would reject. */
export function parseCronExpression(expression: string): CronSchedule {
  const trimmed = expression.trim();
  const expanded = trimmed.startsWith('@') ? NICKNAMES[trimmed.toLowerCase()] : trimmed;
  if (expanded === undefined) throw new CronSyntaxError(`'${expression}': unknown nickname (known: ${Object.keys(NICKNAMES).join(', ')})`);
  const fields = expanded.split(/\s+/);
  if (fields.length !== 5) throw new CronSyntaxError(`'${expression}': ${fields.length} fields, cron needs 5 (minute hour day-of-month month day-of-week)`);
  const sets = fields.map((f, i) => parseField(f, FIELDS[i], expression));
  const weekdays = sets[4];
  if (weekdays.delete(7)) weekdays.add(0);
  const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);
  return {
    minutes: sorted(sets[0]),
    hours: sorted(sets[1]),
    daysOfMonth: sorted(sets[2]),
    months: sorted(sets[3]),
    daysOfWeek: sorted(weekdays),
    dayOfMonthStar: fields[2].startsWith('*'),
    dayOfWeekStar: fields[4].startsWith('*'),
  };
}

const pad2 = (n: number) => String(n).padStart(2, '0');

/**
 * One OnCalendar component from a sorted value set: `*` when it is the whole field, `a/step` when
 * it is an arithmetic run to the field's end (systemd's repetition), else a list with `a..b` runs.
 */
function renderComponent(values: number[], min: number, max: number, format: (n: number) => string): string {
  if (values.length === max - min + 1) return '*';
  // two values read better as a list (05,35) than as a repetition (05/30)
  if (values.length >= 3) {
    const step = values[1] - values[0];
    const isProgression = values.every((v, i) => v === values[0] + i * step);
    if (isProgression && step > 1 && values[values.length - 1] + step > max) return `${format(values[0])}/${step}`;
  }
  return renderRuns(values, format, '..');
}

function renderRuns(values: number[], format: (n: number) => string, rangeMark: string): string {
  const parts: string[] = [];
  for (let i = 0; i < values.length; ) {
    let j = i;
    while (j + 1 < values.length && values[j + 1] === values[j] + 1) j++;
    if (j - i >= 2) parts.push(`${format(values[i])}${rangeMark}${format(values[j])}`);
    else for (let k = i; k <= j; k++) parts.push(format(values[k]));
    i = j + 1;
  }
  return parts.join(',');
}

function calendarSpec(s: CronSchedule, daysOfMonth: number[], daysOfWeek: number[]): string {
  const weekday = daysOfWeek.length === 7 ? '' : `${renderRuns(daysOfWeek, (n) => SYSTEMD_WEEKDAYS[n], '..')} `;
  const month = renderComponent(s.months, 1, 12, pad2);
  const day = renderComponent(daysOfMonth, 1, 31, pad2);
  const hour = renderComponent(s.hours, 0, 23, pad2);
  const minute = renderComponent(s.minutes, 0, 59, pad2);
  return `${weekday}*-${month}-${day} ${hour}:${minute}:00`;
}

const ALL_DAYS_OF_MONTH = Array.from({ length: 31 }, (_, i) => i + 1);
const ALL_DAYS_OF_WEEK = [0, 1, 2, 3, 4, 5, 6];

/** OnCalendar= values equivalent to a cron expression (one, or two for cron's day OR rule). */
export function cronToOnCalendar(expression: string): string[] {
  const s = parseCronExpression(expression);
  if (!s.dayOfMonthStar && !s.dayOfWeekStar) {
    return [calendarSpec(s, s.daysOfMonth, ALL_DAYS_OF_WEEK), calendarSpec(s, ALL_DAYS_OF_MONTH, s.daysOfWeek)];
  }
  return [calendarSpec(s, s.daysOfMonth, s.daysOfWeek)];
}
