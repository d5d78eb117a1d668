/**
 * A server's runtime: its storage, codec and cipher instantiated from the validated config, and
 * the layout of its objects. Built once per command, passed down explicitly (no global state).
 */
import { ArchiveLayout } from './layout.js';
import { createCodec, createPlugin } from './registry.js';
import type { FleetConfig, ServerConfig } from './config/fleet-config.js';
import type { Logger } from './log.js';
import type { Cipher, Codec, Storage } from './types.js';

export interface ServerRuntime {
  fleet: FleetConfig;
  server: ServerConfig;
  log: Logger;
  storage: Storage;
  /** Codec new objects are written with (null: compression none). */
  codec: Codec | null;
  cipher: Cipher | null;
  layout: ArchiveLayout;
  close(): Promise<void>;
}

export async function openServerRuntime(fleet: FleetConfig, server: ServerConfig, log: Logger): Promise<ServerRuntime> {
  const o = { fleet, configDirectory: fleet.directory, log };
  const [storage, codec, cipher] = await Promise.all([
    createPlugin('storage', server.storage, o),
    createCodec(server.compression, o, server.compressionYamlPath),
    server.encryption ? createPlugin('cipher', server.encryption, o) : Promise.resolve(null),
  ]);
  return {
    fleet,
    server,
    log,
    storage,
    codec,
    cipher,
    layout: new ArchiveLayout(server.prefix, codec ? codec.suffix : ''),
    close: async () => {
      await storage.close?.();
    },
  };
}
