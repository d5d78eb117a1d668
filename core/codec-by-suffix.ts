/**
 * An object's name says which codec wrote it (`.lzo`, `.lz4`, `.zst`; no suffix: stored as is).
 * Reading goes by that, not by the server's current `compression`: an archive whose compression
 * was changed from lzo to lz4 holds both, and every object in it must stay readable.
 */
import { createCodec } from './registry.js';
import type { ServerRuntime } from './runtime.js';
import type { Codec } from './types.js';

/** Built-in codecs by suffix. A user codec plugin is recognized by the configured codec's suffix. */
const BUILT_IN_CODEC_OF_SUFFIX: Record<string, string> = { '.lzo': 'lzo', '.lz4': 'lz4', '.zst': 'zstd' };

export type CodecRuntime = Pick<ServerRuntime, 'codec' | 'fleet' | 'log'>;

const loaded = new WeakMap<CodecRuntime, Map<string, Promise<Codec | null>>>();

/** The suffix of `key` that names a codec ('' when none does). */
export function codecSuffixOf(key: string, rt: CodecRuntime): string {
  if (rt.codec?.suffix && key.endsWith(rt.codec.suffix)) return rt.codec.suffix;
  return Object.keys(BUILT_IN_CODEC_OF_SUFFIX).find((s) => key.endsWith(s)) ?? '';
}

/** The codec to read `key` with: by its suffix; null for a key without one (compression none). */
export function codecOfKey(rt: CodecRuntime, key: string): Promise<Codec | null> {
  const suffix = codecSuffixOf(key, rt);
  if (rt.codec && suffix === rt.codec.suffix) return Promise.resolve(rt.codec);
  if (!suffix) return Promise.resolve(null);
  let cache = loaded.get(rt);
  if (!cache) loaded.set(rt, (cache = new Map()));
  let codec = cache.get(suffix);
  if (!codec) {
    codec = createCodec(BUILT_IN_CODEC_OF_SUFFIX[suffix], { configDirectory: rt.fleet.directory, log: rt.log }, ['compression']);
    cache.set(suffix, codec);
  }
  return codec;
}

/** Name of the codec plugin for a key (what a worker thread creates its own instance from). */
export function codecNameOfKey(rt: CodecRuntime & Pick<ServerRuntime, 'server'>, key: string): string {
  const suffix = codecSuffixOf(key, rt);
  if (rt.codec && suffix === rt.codec.suffix) return rt.server.compression;
  return suffix ? BUILT_IN_CODEC_OF_SUFFIX[suffix] : 'none';
}

/**
 * Where a WAL file may be: under the configured codec's suffix first, then the other codecs'
 * (and bare, for compression none), for archives written with another compression before.
 */
export function walKeyCandidates(rt: Pick<ServerRuntime, 'layout'> & CodecRuntime, fileName: string): string[] {
  const bare = rt.layout.walFolder() + fileName;
  const suffixes = [rt.layout.suffix, ...Object.keys(BUILT_IN_CODEC_OF_SUFFIX), ''];
  return [...new Set(suffixes)].map((s) => bare + s);
}
