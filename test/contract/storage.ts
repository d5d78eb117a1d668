/**
 * The storage contract: one suite, parameterised by a factory, that every storage plugin passes
 * (`file`, `s3`, and any user plugin). Call `storageContract(name, factory)` from a *.test.ts file.
 * It only uses the documented Storage interface (core/types.ts).
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import type { Storage } from '../../core/types.js';

export interface StorageUnderTest {
  storage: Storage;
  /** Remove everything the test created (bucket, temp folder). */
  cleanup(): Promise<void>;
}

export type StorageFactory = () => Promise<StorageUnderTest>;

/** A stream of `size` pseudo-random bytes made chunk by chunk, never held whole. */
export function generatedStream(size: number, seed = 1, chunkSize = 64 * 1024): { stream: Readable; digest: Promise<string> } {
  const hash = createHash('sha256');
  let sent = 0;
  let state = seed >>> 0;
  let resolveDigest!: (d: string) => void;
  const digest = new Promise<string>((r) => (resolveDigest = r));
  const stream = new Readable({
    read() {
      if (sent >= size) {
        resolveDigest(hash.digest('hex'));
        this.push(null);
        return;
      }
      const n = Math.min(chunkSize, size - sent);
      const chunk = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i += 4) {
        state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
        chunk.writeUInt32LE(state, i <= n - 4 ? i : 0);
      }
      if (n % 4) chunk.fill(7, n - (n % 4));
      hash.update(chunk);
      sent += n;
      this.push(chunk);
    },
  });
  return { stream, digest };
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function digestOf(stream: Readable): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const c of stream) {
    hash.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { digest: hash.digest('hex'), size };
}

async function listKeys(storage: Storage, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of storage.list(prefix)) keys.push(o.key);
  return keys.sort();
}

/**
 * Samples heap + array buffers while `work` runs; returns the peak growth in bytes. Garbage that
 * is merely not collected yet would count too, so when gc is exposed (npm test runs with
 * --expose-gc) it collects before each sample: what remains is what the plugin really holds.
 */
async function peakMemoryGrowth(work: () => Promise<void>): Promise<number> {
  const gc = globalThis.gc as (() => void) | undefined;
  gc?.();
  const used = () => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const base = used();
  let peak = base;
  const timer = setInterval(() => {
    gc?.();
    peak = Math.max(peak, used());
  }, gc ? 25 : 5);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, used()) - base;
}

async function withConcurrency<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

export function storageContract(name: string, factory: StorageFactory): void {
  describe(`storage contract: ${name}`, () => {
    let sut: StorageUnderTest;
    let s: Storage;
    const run = `contract-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;

    before(async () => {
      sut = await factory();
      s = sut.storage;
    });
    after(async () => {
      await s?.close?.();
      await sut?.cleanup();
    });

    it('round-trips an empty object', async () => {
      await s.put(`${run}/empty`, Readable.from([]));
      const body = await s.get(`${run}/empty`);
      assert.ok(body, 'get returned not-found for an object just put');
      assert.equal((await readAll(body)).length, 0);
      assert.equal((await s.head(`${run}/empty`))?.size, 0);
    });

    it('round-trips a small object and reports its size and time', async () => {
      const data = Buffer.from('hello walrus\n'.repeat(100));
      const before = Date.now();
      await s.put(`${run}/small.txt`, Readable.from([data]));
      const body = await s.get(`${run}/small.txt`);
      assert.ok(body);
      assert.deepEqual(await readAll(body), data);
      const info = await s.head(`${run}/small.txt`);
      assert.equal(info?.key, `${run}/small.txt`);
      assert.equal(info?.size, data.length);
      assert.ok(info!.lastModified instanceof Date);
      assert.ok(Math.abs(info!.lastModified.getTime() - before) < 5 * 60_000, 'lastModified is about now');
    });

    it('overwrites an existing key with the new content', async () => {
      await s.put(`${run}/over`, Readable.from([Buffer.from('first')]));
      await s.put(`${run}/over`, Readable.from([Buffer.from('second, longer')]));
      assert.equal((await readAll((await s.get(`${run}/over`))!)).toString(), 'second, longer');
    });

    it('streams a 50 MB object both ways without holding it in memory', async () => {
      const size = 50 * 1024 * 1024;
      const { stream, digest } = generatedStream(size, 42);
      const growthPut = await peakMemoryGrowth(() => s.put(`${run}/big.bin`, stream, { size }));
      const body = await s.get(`${run}/big.bin`);
      assert.ok(body);
      let got!: { digest: string; size: number };
      const growthGet = await peakMemoryGrowth(async () => {
        got = await digestOf(body);
      });
      assert.equal(got.size, size);
      assert.equal(got.digest, await digest);
      assert.equal((await s.head(`${run}/big.bin`))?.size, size);
      // A plugin that buffers the whole object would grow by >= 50 MB.
      assert.ok(growthPut < 40 * 1024 * 1024, `put grew memory by ${(growthPut / 1048576).toFixed(1)} MB`);
      assert.ok(growthGet < 40 * 1024 * 1024, `get grew memory by ${(growthGet / 1048576).toFixed(1)} MB`);
    });

    it('answers not-found (null) for a missing key, distinct from an error', async () => {
      assert.equal(await s.get(`${run}/missing/nothing-here`), null);
      assert.equal(await s.head(`${run}/missing/nothing-here`), null);
      assert.deepEqual(await listKeys(s, `${run}/missing/`), []);
    });

    it('keeps keys with spaces and unicode exactly', async () => {
      const keys = [`${run}/uni/with space.txt`, `${run}/uni/ünïcødé-ключ-鍵.txt`, `${run}/uni/plus+and=equals&amp.txt`];
      for (const [i, k] of keys.entries()) await s.put(k, Readable.from([Buffer.from(`v${i}`)]));
      assert.deepEqual(await listKeys(s, `${run}/uni/`), [...keys].sort());
      for (const [i, k] of keys.entries()) assert.equal((await readAll((await s.get(k))!)).toString(), `v${i}`);
    });

    it('lists by prefix past 1000 keys and deletes more than 1000 keys at once', async () => {
      const keys = Array.from({ length: 1105 }, (_, i) => `${run}/many/k${String(i).padStart(5, '0')}`);
      await withConcurrency(keys, 16, (k) => s.put(k, Readable.from([Buffer.from(k)])));
      await s.put(`${run}/many-sibling`, Readable.from([Buffer.from('not under many/')]));
      const listed = await listKeys(s, `${run}/many/`);
      assert.equal(listed.length, keys.length);
      assert.deepEqual(listed, keys);
      await s.delete(keys);
      assert.deepEqual(await listKeys(s, `${run}/many/`), []);
      assert.ok(await s.head(`${run}/many-sibling`), 'delete removed a key it was not given');
    });

    it('deletes missing keys without error', async () => {
      await s.delete([`${run}/never-existed-1`, `${run}/never-existed-2`]);
    });

    it('never shows a half-written object: a failing body leaves nothing', async () => {
      const key = `${run}/half/failed.bin`;
      let pushed = 0;
      const failing = new Readable({
        read() {
          if (pushed++ < 4) this.push(Buffer.alloc(256 * 1024, 1));
          else this.destroy(new Error('source died mid-stream'));
        },
      });
      await assert.rejects(s.put(key, failing));
      assert.equal(await s.head(key), null, 'a partial object is visible after a failed put');
      assert.equal(await s.get(key), null);
      assert.deepEqual(await listKeys(s, `${run}/half/`), []);
    });

    it('never shows a half-written object: readers during a slow put see nothing or everything', async () => {
      const key = `${run}/half/slow.bin`;
      const total = 8;
      let pushed = 0;
      const slow = new Readable({
        read() {
          if (pushed === total) return void this.push(null);
          pushed++;
          setTimeout(() => this.push(Buffer.alloc(64 * 1024, pushed)), 20);
        },
      });
      const putting = s.put(key, slow);
      let sawPartial = false;
      const probe = async () => {
        while (pushed < total) {
          const h = await s.head(key);
          if (h && h.size !== total * 64 * 1024) sawPartial = true;
          const body = await s.get(key);
          if (body && (await readAll(body)).length !== total * 64 * 1024) sawPartial = true;
          await new Promise((r) => setTimeout(r, 10));
        }
      };
      await Promise.all([putting, probe()]);
      assert.equal(sawPartial, false, 'a reader saw a partial object');
      assert.equal((await s.head(key))?.size, total * 64 * 1024);
    });
  });
}
