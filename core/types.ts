/**
 * The plugin interfaces. A plugin is one folder under plugins/ whose index exports
 * `manifest: PluginManifest`; `create(options, context)` returns the object of its kind.
 * The core knows these kinds, never a particular plugin.
 */
import type { Readable, Duplex } from 'node:stream';
import type { Logger } from './log.js';

export type PluginKind = 'storage' | 'codec' | 'cipher' | 'source' | 'exporter';

export type JsonSchema = Record<string, unknown>;

export interface PluginContext {
  log: Logger;
  /** Directory of the config file, for resolving relative paths in options. */
  configDirectory: string;
  /** The instance name in the config (`storages.<name>`, `keys.<name>`), or the plugin name. */
  instanceName: string;
}

export interface PluginManifest<Kind extends PluginKind = PluginKind, Options = any, Instance = PluginInstance<Kind>> {
  name: string;
  kind: Kind;
  /** JSON Schema for the options (the config block minus `plugin`). Validated by the registry. */
  optionsSchema: JsonSchema;
  create(options: Options, context: PluginContext): Instance | Promise<Instance>;
}

export type PluginInstance<Kind extends PluginKind> = Kind extends 'storage'
  ? Storage
  : Kind extends 'codec'
    ? Codec
    : Kind extends 'cipher'
      ? Cipher
      : Kind extends 'source'
        ? unknown
        : Kind extends 'exporter'
          ? unknown
          : never;

// ---------------------------------------------------------------- storage

export interface StorageObjectInfo {
  key: string;
  size: number;
  lastModified: Date;
}

/**
 * Keys are plain strings (`db1/wal_005/000000010000000000000001.lzo`), never starting with `/`.
 * Retries, multipart and atomicity live inside the plugin:
 * - `put` resolves only once the object is complete and visible; a reader never sees a partial object.
 *   If `body` errors, nothing is left visible under `key`.
 * - `get` resolves to `null` when the key does not exist ("not found" is not an error).
 * - `list` yields every object whose key starts with `prefix` (any order; callers sort).
 * - `delete` removes the keys given (missing keys are not an error), any number of them.
 * Failures that outlast retries reject with WalrusError kind STORAGE.
 */
export interface Storage {
  put(key: string, body: Readable, options?: PutOptions): Promise<void>;
  get(key: string): Promise<Readable | null>;
  head(key: string): Promise<StorageObjectInfo | null>;
  list(prefix: string): AsyncIterable<StorageObjectInfo>;
  delete(keys: string[]): Promise<void>;
  /** Human description for logs: `file:///var/backups/walrus/`, `s3://bucket/`. Never secrets. */
  describe(key?: string): string;
  /** Release sockets, handles. Optional. */
  close?(): Promise<void>;
}

export interface PutOptions {
  /** Expected size in bytes when known (lets S3 skip multipart for small objects). */
  size?: number;
}

// ---------------------------------------------------------------- codec & cipher

/** A compression format. Streams are Node transform streams with back-pressure. */
export interface DecompressOptions {
  /**
   * The caller checks the object's stored bytes against a SHA-256 recorded when it was written
   * (a walrus backup's partitions) and fails the whole object on a mismatch. The format may then
   * skip checksums of the decoded data that only repeat that proof (lzo's per-block adler32 of
   * the data, ~30% of decoding); its structure and bounds are still checked.
   */
  storedBytesVerified?: boolean;
}

export interface Codec {
  name: string;
  /** Object-name suffix, e.g. `.lzo`. WAL-E's layout always uses `.lzo`. */
  suffix: string;
  compress(): Duplex;
  /** Verifies the format's own checksums; a corrupt stream errors with WalrusError INTEGRITY. */
  decompress(options?: DecompressOptions): Duplex;
  /** True when `head` (the first bytes of an object, at least 16 if available) is this format. */
  recognizes(head: Buffer): boolean;
}

export interface Cipher {
  name: string;
  encrypt(): Duplex;
  /**
   * Errors with WalrusError KEY on a wrong key/passphrase and INTEGRITY on a tampered stream.
   * Bytes may be emitted before authentication completes: consumers must only commit
   * (rename into place, write a sentinel) after the stream finished without error.
   */
  decrypt(): Duplex;
  /** True when `head` looks like this cipher's output (e.g. an OpenPGP packet header). */
  recognizes(head: Buffer): boolean;
}

// ---------------------------------------------------------------- source (PostgreSQL)

/** One entry of a data directory to back up, as listed (sizes are those seen when listed). */
export interface DataFile {
  /** Path relative to the data directory, `/`-separated, no leading `/` (e.g. `base/1/1259`, `pg_wal`). */
  relativePath: string;
  absolutePath: string;
  type: 'file' | 'directory' | 'symlink';
  /** Bytes; 0 for directories and symlinks. The packer pads/truncates to this size. */
  size: number;
  mode: number;
  mtime: Date;
  /** For symlinks (tablespaces under pg_tblspc/): the link target. */
  linkTarget?: string;
}

export interface ServerIdentity {
  /** `select version()` text: goes into extended_version.txt. */
  versionText: string;
  /** server_version_num, e.g. 150018. */
  versionNum: number;
  systemIdentifier: string;
  timeline: number;
  dataDirectory: string;
}

export interface BackupStart {
  startLsn: string;
  /** WAL segment name holding the start LSN (timeline-qualified, 24 hex). */
  startSegment: string;
  /** Byte offset of the start LSN inside that segment. */
  startOffset: number;
  timeline: number;
  startedAt: Date;
}

export interface BackupStop {
  stopLsn: string;
  stopSegment: string;
  stopOffset: number;
  /** Contents to write as `backup_label` into the backup (non-exclusive mode). */
  backupLabel: string;
  tablespaceMap: string | null;
  stoppedAt: Date;
}

export interface TablespaceSpec {
  /** pg_tblspc/<oid> link name. */
  name: string;
  /** Absolute location the link points to. */
  loc: string;
  /** `pg_tblspc/<oid>` */
  link: string;
}

/** The `postgres` source plugin's instance: one held connection for the whole backup. */
export interface BackupSource {
  identify(): Promise<ServerIdentity>;
  /** Take the one-backup-at-a-time lock of this server; false when another backup-push holds it. */
  lockBackups(): Promise<boolean>;
  startBackup(label: string, options: { fast: boolean }): Promise<BackupStart>;
  stopBackup(): Promise<BackupStop>;
  /** Every entry to back up, WAL-E's exclusions applied, tablespaces followed. */
  listDataFiles(dataDirectory: string): AsyncIterable<DataFile>;
  tablespaces(dataDirectory: string): Promise<TablespaceSpec[]>;
  close(): Promise<void>;
}
