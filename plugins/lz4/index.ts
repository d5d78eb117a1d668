/**
 * `lz4` codec: standard LZ4 frames (`lz4 -c` / `lz4 -d`), opt-in for new archives. WAL-E cannot
 * read them. Cheap to import: the native lz4-napi binding loads on the first frame coded.
 */
import type { Codec, PluginManifest } from '../../core/types.js';
import { isLz4Frame, lz4CompressStream, lz4DecompressStream } from './lz4-frame.js';

/** No options: one LZ4 frame (4 MiB block maximum, content checksum) per MiB of input. */
export type Lz4Options = Record<string, never>;

export function createLz4Codec(): Codec {
  return {
    name: 'lz4',
    suffix: '.lz4',
    compress: () => lz4CompressStream(),
    decompress: () => lz4DecompressStream(),
    recognizes: (head) => isLz4Frame(head),
  };
}

export const manifest: PluginManifest<'codec', Lz4Options> = {
  name: 'lz4',
  kind: 'codec',
  optionsSchema: { type: 'object', additionalProperties: false, properties: {} },
  create: () => createLz4Codec(),
};
