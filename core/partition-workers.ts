/**
 * A small pool of worker threads that decode and extract partitions (core/partition-decode-worker.ts).
 * Decompression, checksums, SHA-256 and tar parsing are CPU work: on the main thread they kept
 * poolSize partitions on one core. Here the main thread only reads the storage (and decrypts, the
 * cipher being a plugin instance of this thread) and posts the bytes.
 *
 * Back-pressure: the bytes go in batches of BATCH_BYTES, at most MAX_IN_FLIGHT_BYTES not yet
 * consumed by the worker's chain; memory per partition stays bounded whatever its size.
 */
import { Worker } from 'node:worker_threads';
import { WalrusError } from './errors.js';
import type { Logger } from './log.js';
import type { PartitionDecodeResult } from './partition-decode.js';
import { deserializeError, serializeError, type FromWorker, type PartitionJob, type ToWorker } from './partition-worker-protocol.js';

const BATCH_BYTES = 512 * 1024;
const MAX_IN_FLIGHT_BYTES = 4 * BATCH_BYTES;
/** Chunks this large are transferred as they are, when nothing else can see their memory. */
const TRANSFER_AT_LEAST_BYTES = 64 * 1024;

/** A Buffer that spans its whole ArrayBuffer (not a slice of Node's shared pool or of a larger buffer): safe to transfer. */
function ownsItsMemory(chunk: Buffer): boolean {
  return chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength && chunk.buffer instanceof ArrayBuffer;
}

/**
 * The worker beside this module: `.js` in dist/. When tests run the sources through tsx, the
 * `.ts` module, loaded by a small bootstrap that registers tsx first: Node 20 does not apply the
 * parent's `--import tsx` loader hooks to a worker's entry module.
 */
function startWorker(): Worker {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return new Worker(new URL('./partition-decode-worker.js', here));
  const entry = new URL('./partition-decode-worker.ts', here).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  return new Worker(`import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); })`, { eval: true });
}

export interface DecodeHooks {
  /** Each chunk read from `source`, before batching (progress). */
  onChunk?: (bytes: number) => void;
  /** Sees the first bytes (up to 16) before anything is posted; throws to refuse the object. */
  checkHead?: (head: Buffer) => void;
}

export class PartitionWorkerPool {
  private readonly idle: Worker[] = [];
  private readonly all = new Set<Worker>();

  constructor(private readonly log: Logger) {}

  private spawn(): Worker {
    const worker = startWorker();
    this.all.add(worker);
    worker.once('exit', () => {
      this.all.delete(worker);
      const i = this.idle.indexOf(worker);
      if (i >= 0) this.idle.splice(i, 1);
    });
    // An idle worker must not keep the process alive (close() ends them; this covers a caller that never reaches it).
    worker.unref();
    return worker;
  }

  /** Starts up to `n` workers now, so that loading their modules overlaps other work. */
  prewarm(n: number): void {
    while (this.all.size < n) this.idle.push(this.spawn());
  }

  /**
   * Streams `source` into a worker that decodes and extracts it. Rejects with the source's own
   * error when reading failed (the worker is aborted and has cleaned up by then), else with the
   * worker's error (a WalrusError keeps its kind and message).
   */
  async decode(job: PartitionJob, source: AsyncIterable<Buffer>, hooks: DecodeHooks = {}): Promise<PartitionDecodeResult> {
    const worker = this.idle.pop() ?? this.spawn();
    worker.ref(); // while it works for us, its messages are what the process waits for
    let healthy = true;
    let inFlight = 0;
    let settled = false;
    let wakeSender: (() => void) | null = null;
    const wake = () => {
      const w = wakeSender;
      wakeSender = null;
      w?.();
    };

    const outcome = new Promise<PartitionDecodeResult>((resolve, reject) => {
      const finish = () => {
        settled = true;
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
        wake();
      };
      const onMessage = (m: FromWorker) => {
        switch (m.type) {
          case 'ack':
            inFlight -= m.bytes;
            wake();
            return;
          case 'log':
            this.log[m.level](m.message, m.fields);
            return;
          case 'done':
            finish();
            resolve(m.result);
            return;
          case 'failed':
            finish();
            reject(deserializeError(m.error));
            return;
        }
      };
      const onError = (e: Error) => {
        healthy = false;
        finish();
        reject(new WalrusError('INTERNAL', `a partition decode worker failed: ${e.message}`, { cause: e }));
      };
      const onExit = (code: number) => onError(new Error(`it exited (code ${code})`));
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    });
    outcome.catch(() => undefined); // awaited below; a failure while still sending must not be unhandled

    const post = (m: ToWorker, transfer?: ArrayBuffer[]) => worker.postMessage(m, transfer);
    post({ type: 'start', job });

    let sourceFailure: unknown = null;
    try {
      let batch = Buffer.allocUnsafeSlow(BATCH_BYTES);
      let filled = 0;
      let headChecked = !hooks.checkHead;
      const send = async (data: Buffer) => {
        if (!headChecked) {
          hooks.checkHead!(data.subarray(0, 16));
          headChecked = true;
        }
        while (!settled && inFlight + data.length > MAX_IN_FLIGHT_BYTES) await new Promise<void>((resolve) => (wakeSender = resolve));
        if (settled) return;
        inFlight += data.length;
        post({ type: 'chunk', data }, [data.buffer as ArrayBuffer]);
      };
      reading: for await (const chunk of source) {
        hooks.onChunk?.(chunk.length);
        if (chunk.length >= TRANSFER_AT_LEAST_BYTES && ownsItsMemory(chunk)) {
          // Large enough to go as it is: moved, not copied, and not left as garbage in this thread.
          if (filled > 0) {
            await send(batch.subarray(0, filled));
            batch = Buffer.allocUnsafeSlow(BATCH_BYTES);
            filled = 0;
          }
          if (!settled) await send(chunk);
          if (settled) break reading;
          continue;
        }
        for (let offset = 0; offset < chunk.length; ) {
          const n = Math.min(chunk.length - offset, BATCH_BYTES - filled);
          chunk.copy(batch, filled, offset, offset + n);
          filled += n;
          offset += n;
          if (filled === BATCH_BYTES) {
            await send(batch);
            batch = Buffer.allocUnsafeSlow(BATCH_BYTES);
            filled = 0;
          }
          if (settled) break reading; // the worker failed: stop reading (this closes the source)
        }
      }
      if (!settled) {
        await send(batch.subarray(0, filled));
        if (!settled) post({ type: 'end' });
      }
    } catch (e) {
      sourceFailure = e;
      if (!settled) post({ type: 'abort', error: serializeError(e) });
    }

    try {
      const result = await outcome;
      if (sourceFailure !== null) throw sourceFailure;
      return result;
    } catch (e) {
      // The source's failure is the cause of whatever the worker saw after it.
      throw sourceFailure ?? e;
    } finally {
      worker.unref();
      if (healthy) this.idle.push(worker);
      else void worker.terminate();
    }
  }

  /** Ends every worker (they hold no state between partitions). */
  async close(): Promise<void> {
    this.idle.length = 0;
    await Promise.all([...this.all].map((w) => w.terminate()));
  }
}
