/**
 * `zstd` codec: Zstandard frames (`zstd -c` / `zstd -d`) with content checksums, opt-in for new
 * archives. WAL-E cannot read them. Cheap to import: the native zstd-napi binding loads on first use.
 */
import type { Codec, PluginManifest } from '../../core/types.js';
import { isZstdFrame, zstdCompressStream, zstdDecompressStream, ZSTD_DEFAULT_LEVEL } from './zstd-stream.js';

export interface ZstdOptions {
  /** Compression level 1..19 (default 3, zstd's own default). Reading needs no level. */
  level?: number;
}

export function createZstdCodec(options: ZstdOptions = {}): Codec {
  const level = options.level ?? ZSTD_DEFAULT_LEVEL;
  return {
    name: 'zstd',
    suffix: '.zst',
    compress: () => zstdCompressStream(level),
    decompress: () => zstdDecompressStream(),
    recognizes: (head) => isZstdFrame(head),
  };
}

export const manifest: PluginManifest<'codec', ZstdOptions> = {
  name: 'zstd',
  kind: 'codec',
  optionsSchema: {
    type: 'object',
    additionalProperties: false,
    properties: {
      level: { type: 'integer', minimum: 1, maximum: 19, default: ZSTD_DEFAULT_LEVEL, description: 'compression level (1 fastest .. 19 smallest); 3 by default' },
    },
  },
  create: (options) => createZstdCodec(options),
};
