/**
 * Every failure walrus reports is a WalrusError with one code from this table.
 * The table is the contract printed in the README ("Exit codes"): scripts and
 * PostgreSQL's archive/restore commands depend on these numbers.
 */
export const EXIT = {
  OK: 0,
  /** The object asked for does not exist (what restore_command must return for a missing segment). */
  NOT_FOUND: 1,
  /** Bad command line, bad or unreadable config, unknown plugin. */
  USAGE: 2,
  /** The storage failed after every retry (network, 5xx, permissions, unreachable). */
  STORAGE: 3,
  /** Checksum mismatch, decryption failure, corrupt or truncated stream, hostile archive entry. */
  INTEGRITY: 4,
  /** Refused to act: the archived copy differs, the target directory is not empty, the backup is busy. */
  REFUSED: 5,
  /** Wrong key or passphrase: the object may be fine, the key is not the one it was written for. */
  KEY: 6,
  /** A PostgreSQL server call failed (connection refused, backup functions failed). */
  DATABASE: 7,
  /** `status`: a server's newest archived WAL or newest backup is older than its threshold (or there is none). */
  STALE: 8,
  /** A bug or an unexpected condition; run with --debug for the stack. */
  INTERNAL: 9,
  /** A local file could not be read or written (permissions, disk full) in the data directory or restore target. */
  LOCAL_IO: 10,
  /**
   * wal-fetch during archive recovery: storage or integrity failure. PostgreSQL treats any
   * exit status above 125 as fatal and stops recovery instead of promoting past a hole.
   */
  RECOVERY_STORAGE: 203,
  RECOVERY_INTEGRITY: 204,
  RECOVERY_KEY: 206,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
export type ErrorKind = Exclude<keyof typeof EXIT, 'OK'>;

export interface WalrusErrorOptions {
  /** Extra line: what exactly, to what (printed as DETAIL). */
  detail?: string;
  /** What the operator should do (printed as HINT). */
  hint?: string;
  cause?: unknown;
}

export class WalrusError extends Error {
  readonly kind: ErrorKind;
  readonly detail?: string;
  readonly hint?: string;

  constructor(kind: ErrorKind, message: string, options: WalrusErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WalrusError';
    this.kind = kind;
    this.detail = options.detail;
    this.hint = options.hint;
  }

  get exitCode(): ExitCode {
    return EXIT[this.kind];
  }
}

export const notFound = (message: string, o?: WalrusErrorOptions) => new WalrusError('NOT_FOUND', message, o);
export const usageError = (message: string, o?: WalrusErrorOptions) => new WalrusError('USAGE', message, o);
export const storageError = (message: string, o?: WalrusErrorOptions) => new WalrusError('STORAGE', message, o);
export const integrityError = (message: string, o?: WalrusErrorOptions) => new WalrusError('INTEGRITY', message, o);
export const refusedError = (message: string, o?: WalrusErrorOptions) => new WalrusError('REFUSED', message, o);
export const keyError = (message: string, o?: WalrusErrorOptions) => new WalrusError('KEY', message, o);
export const localIoError = (message: string, o?: WalrusErrorOptions) => new WalrusError('LOCAL_IO', message, o);
export const databaseError = (message: string, o?: WalrusErrorOptions) => new WalrusError('DATABASE', message, o);

export function isWalrusError(e: unknown): e is WalrusError {
  return e instanceof WalrusError;
}

/** The README's exit-code table, generated from EXIT so the two never disagree. */
export const EXIT_CODE_DESCRIPTIONS: Record<ErrorKind | 'OK', string> = {
  OK: 'done',
  NOT_FOUND: 'not found (a segment or backup that does not exist; what restore_command must return)',
  USAGE: 'bad usage or configuration',
  STORAGE: 'storage failure after retries',
  INTEGRITY: 'integrity failure: checksum, corrupt or truncated stream, hostile archive entry',
  REFUSED: 'refused: archived copy differs, target not empty, or similar',
  KEY: 'wrong key or passphrase',
  DATABASE: 'PostgreSQL call failed',
  STALE: 'status: archive or backups older than the thresholds (status.maxArchiveAgeMinutes, status.maxBackupAgeHours), or none at all',
  INTERNAL: 'internal error (a bug: run with --debug)',
  LOCAL_IO: 'local file system error (permission denied, disk full) reading the data directory or writing a restore',
  RECOVERY_STORAGE: 'wal-fetch during archive recovery: storage failure (above 125: PostgreSQL stops instead of promoting)',
  RECOVERY_INTEGRITY: 'wal-fetch during archive recovery: integrity failure',
  RECOVERY_KEY: 'wal-fetch during archive recovery: wrong key or passphrase',
};
