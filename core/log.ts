/**
 * Logging: winston, to stderr. Human lines shaped like WAL-E's so existing log greps keep working:
 *
 *   walrus INFO     MSG: completed archiving to a file
 *           DETAIL: Archiving to "s3://bucket/db1/wal_005/0000000100000000000000A1.lzo" complete at 17302.3KiB/s.
 *           STRUCTURED: time=2026-11-24T09:31:01.806Z pid=61703 action=push-wal key=... seg=... state=complete
 *
 * `--log-format json` writes one JSON object per line instead. Every string that came from a
 * `${env:}` / `${file:}` reference (secrets) is masked before anything is written.
 */
import winston from 'winston';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type LogFormat = 'text' | 'json';

export interface LogFields {
  detail?: string;
  hint?: string;
  /** key=value pairs for the STRUCTURED line (action, key, seg, state, rate, ...). */
  structured?: Record<string, string | number | boolean | undefined>;
}

export interface Logger {
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  /** Register values that must never appear in output (passphrases, keys, tokens). */
  addSecrets(values: Iterable<string>): void;
}

const MASK = '********';
const MIN_SECRET_LENGTH = 4; // shorter values would mask ordinary words; a 3-char secret is not one

class SecretMask {
  private values: string[] = [];
  add(values: Iterable<string>): void {
    for (const v of values) {
      if (typeof v !== 'string' || v.length < MIN_SECRET_LENGTH || this.values.includes(v)) continue;
      this.values.push(v);
      // multi-line secrets (armored keys): each long line is a secret on its own too
      for (const line of v.split(/\r?\n/)) if (line.trim().length >= 16 && !this.values.includes(line.trim())) this.values.push(line.trim());
    }
    this.values.sort((a, b) => b.length - a.length);
  }
  apply(text: string): string {
    let out = text;
    for (const v of this.values) if (out.includes(v)) out = out.split(v).join(MASK);
    return out;
  }
}

function structuredLine(s: LogFields['structured']): string {
  if (!s) return '';
  const parts = [`time=${new Date().toISOString()}`, `pid=${process.pid}`];
  for (const [k, v] of Object.entries(s)) if (v !== undefined) parts.push(`${k}=${v}`);
  return parts.join(' ');
}

export interface LoggerOptions {
  level?: LogLevel;
  format?: LogFormat;
  /** Where to write; stderr by default (stdout is for a verb's output). */
  stream?: NodeJS.WritableStream;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const mask = new SecretMask();
  const format = options.format ?? 'text';
  const textFormat = winston.format.printf((info) => {
    // mask each field before the DETAIL re-indent splits a multi-line secret
    const lines = [`walrus ${String(info.level).toUpperCase().padEnd(8)} MSG: ${mask.apply(String(info.message))}`];
    if (info.detail) lines.push(`        DETAIL: ${mask.apply(String(info.detail)).split('\n').join('\n                ')}`);
    if (info.hint) lines.push(`        HINT: ${mask.apply(String(info.hint))}`);
    if (info.structured) lines.push(`        STRUCTURED: ${structuredLine(info.structured as LogFields['structured'])}`);
    return mask.apply(lines.join('\n'));
  });
  const jsonFormat = winston.format.printf((info) => {
    const { level, message, detail, hint, structured } = info as any;
    const record: Record<string, unknown> = { time: new Date().toISOString(), pid: process.pid, level, message };
    if (detail) record.detail = detail;
    if (hint) record.hint = hint;
    if (structured) for (const [k, v] of Object.entries(structured)) if (v !== undefined) record[k] = v;
    // mask the values before encoding: JSON escapes `"` and `\`, so a secret holding them would not match afterwards
    return mask.apply(JSON.stringify(record, (_key, value) => (typeof value === 'string' ? mask.apply(value) : value)));
  });
  const logger = winston.createLogger({
    level: options.level ?? 'info',
    format: format === 'json' ? jsonFormat : textFormat,
    transports: [new winston.transports.Stream({ stream: options.stream ?? process.stderr })],
  });
  const at = (level: LogLevel) => (message: string, fields: LogFields = {}) => logger.log({ level, message, ...fields });
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    addSecrets: (values) => mask.add(values),
  };
}

/** A logger that drops everything: for plugin unit tests. */
export const silentLogger: Logger = {
  error() {},
  warn() {},
  info() {},
  debug() {},
  addSecrets() {},
};
