import { createRequire } from 'node:module';

/**
 * Logging: winston, to stderr. Human lines shaped like WAL-E's so existing log greps keep working:
 *
 *   walrus INFO     MSG: completed archiving to a file
 *           DETAIL: Archiving to "s3://bucket/db1/wal_005/0000000100000000000000A1.lzo" complete at 17302.3KiB/s.
 *           STRUCTURED: time=2026-11-24T09:31:01.806Z pid=61703 action=push-wal key=... seg=... state=complete
 *
 * `--log-format json` writes one JSON object per line instead. Every string that came from a
 * `${env:}` / `${file:}` reference (secrets) is masked before anything is written.
 *
 * archive_command starts a process per segment and importing winston costs ~60–90 ms, so winston
 * is loaded (synchronously) on the first line that passes the level filter: `--help`, or a quiet
 * run, never pays for it. Lines are masked and formatted here; winston carries them to the stream.
 */
const require = createRequire(import.meta.url);

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
  /** Resolves once every line logged so far has reached the stream (call before exiting). */
  flush(): Promise<void>;
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

const LEVEL_RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export function createLogger(options: LoggerOptions = {}): Logger {
  const mask = new SecretMask();
  const format = options.format ?? 'text';
  const threshold = LEVEL_RANK[options.level ?? 'info'];
  const stream = options.stream ?? process.stderr;
  const textLine = (level: LogLevel, message: string, f: LogFields) => {
    const lines = [`walrus ${level.toUpperCase().padEnd(8)} MSG: ${message}`];
    if (f.detail) lines.push(`        DETAIL: ${String(f.detail).split('\n').join('\n                ')}`);
    if (f.hint) lines.push(`        HINT: ${f.hint}`);
    if (f.structured) lines.push(`        STRUCTURED: ${structuredLine(f.structured)}`);
    return lines.join('\n');
  };
  const jsonLine = (level: LogLevel, message: string, f: LogFields) => {
    const record: Record<string, unknown> = { time: new Date().toISOString(), pid: process.pid, level, message };
    if (f.detail) record.detail = f.detail;
    if (f.hint) record.hint = f.hint;
    if (f.structured) for (const [k, v] of Object.entries(f.structured)) if (v !== undefined) record[k] = v;
    return JSON.stringify(record);
  };
  const at = (level: LogLevel) => (message: string, fields: LogFields = {}) => {
    if (LEVEL_RANK[level] > threshold) return;
    // mask each value before formatting: JSON escapes `"` and `\`, and DETAIL's re-indent splits a
    // multi-line value, so a secret would no longer match in the formatted line
    const m = <T,>(v: T): T => (typeof v === 'string' ? (mask.apply(v) as T) : v);
    const masked: LogFields = {
      detail: m(fields.detail),
      hint: m(fields.hint),
      structured: fields.structured && Object.fromEntries(Object.entries(fields.structured).map(([k, v]) => [k, m(v)])),
    };
    transport().log({ level, message: mask.apply(format === 'json' ? jsonLine(level, m(message), masked) : textLine(level, m(message), masked)) });
  };
  let winstonLogger: { log(entry: { level: string; message: string }): void; end(): void; once(e: string, f: () => void): void } | undefined;
  const transport = () => {
    if (!winstonLogger) {
      const winston = require('winston') as typeof import('winston');
      winstonLogger = winston.createLogger({
        level: 'debug', // filtered above, before any formatting
        format: winston.format.printf((info) => String(info.message)),
        transports: [new winston.transports.Stream({ stream: stream as NodeJS.WritableStream })],
      });
    }
    return winstonLogger;
  };
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    addSecrets: (values) => mask.add(values),
    flush: () =>
      new Promise<void>((resolve) => {
        if (!winstonLogger) return resolve();
        const w = winstonLogger;
        winstonLogger = undefined;
        w.once('finish', () => resolve());
        w.end();
      }),
  };
}

/** A logger that drops everything: for plugin unit tests. */
export const silentLogger: Logger = {
  error() {},
  warn() {},
  info() {},
  debug() {},
  addSecrets() {},
  flush: async () => {},
};
