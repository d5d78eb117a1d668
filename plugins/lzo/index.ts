/**
 * `lzo` codec: the lzop 1.04 file format that WAL-E writes (`lzop -c`) and reads (`lzop -d`).
 * Cheap to import: the native LZO binding loads on the first block compressed or decompressed.
 */
import type { Codec, PluginManifest } from '../../core/types.js';
import { isLzop, lzopCompressStream, lzopDecompressStream } from './lzop-format.js';

/** No options: blocks are LZO1X-1, the method `lzop` uses by default (the binding offers no other). */
export type LzoOptions = Record<string, never>;

export function createLzoCodec(): Codec {
  return {
    name: 'lzo',
    suffix: '.lzo',
    compress: () => lzopCompressStream(),
    decompress: (options) => lzopDecompressStream({ dataChecksums: !options?.storedBytesVerified }),
    recognizes: (head) => isLzop(head),
  };
}

export const manifest: PluginManifest<'codec', LzoOptions> = {
  name: 'lzo',
  kind: 'codec',
  optionsSchema: { type: 'object', additionalProperties: false, properties: {} },
  create: () => createLzoCodec(),
};
