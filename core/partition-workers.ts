/**
 * A small pool of worker threads (core/partition-worker.ts) that decode and extract partitions
 * for backup-fetch, and read, pack, hash and compress them for backup-push. Compression,
 * checksums, SHA-256 and tar work are CPU work: on the main thread they kept poolSize partitions
 * on one core. Here the main thread only moves bytes between the storage (and the cipher, a
 * plugin instance of this thread) and the workers.
 *
 * Back-pressure, both ways: the bytes go in batches of BATCH_BYTES, at most MAX_IN_FLIGHT_BYTES
 * not yet consumed by the other side; memory per partition stays bounded whatever its size.
 */
import { Readable } from 'node:stream';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { WalrusError } from './errors.js';
import type { Logger } from './log.js';
import type { PartitionDecodeResult } from './partition-decode.js';
import type { EncodedPartition, PartitionEncodeResult } from './partition-encode.js';
import { TransferBatches } from './transfer-batches.js';
import { prepareYoungGarbageCollection, YoungGarbageCadence } from './young-garbage.js';
import { deserializeError, serializeError, type FromWorker, type PartitionEncodeJob, type PartitionJob, type ToWorker } from './partition-worker-protocol.js';

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
  prepareYoungGarbageCollection(); // before the worker starts: it inherits the collector
  const here = import.meta.url;
  const resourceLimits = { maxYoungGenerationSizeMb: YOUNG_GENERATION_MB };
  if (!here.endsWith('.ts')) return new Worker(new URL('./partition-worker.js', here), { resourceLimits });
  const entry = new URL('./partition-worker.ts', here).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  return new Worker(`import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); })`, { eval: true, resourceLimits });
}

/**
 * A worker's young generation. Its data passes through in short-lived buffers, collected often
 * (core/young-garbage.ts); V8's default lets the semi-spaces grow to 16 MiB each, ~10 MB more
 * RSS per worker for nothing.
 */
const YOUNG_GENERATION_MB = 4;

export interface DecodeHooks {
  /** Each chunk read from `source`, before batching (progress). */
  onChunk?: (bytes: number) => void;
  /** Sees the first bytes (up to 16) before anything is posted; throws to refuse the object. */
  checkHead?: (head: Buffer) => void;
}

/**
 * Partitions encoded or decoded at once for a poolSize: at most one per core. Each needs a worker
 * thread, and the work is CPU-bound: more workers than cores only add memory (~15 MB each at rest,
 * ~30-50 MB busy; backup-fetch with poolSize 4 on 2 cores peaked at ~197 MB against ~165 with 2).
 */
export function partitionsAtOnce(poolSize: number): number {
  return Math.max(1, Math.min(poolSize, availableParallelism()));
}

export interface EncodeHooks {
  /** Member bytes read from the data directory (progress), reported every few hundred KiB. */
  onBytesRead?: (bytes: number) => void;
  /** Awaited before the worker reads `bytes` from disk (a rate limit shared by every partition). */
  throttle?: (bytes: number) => Promise<void>;
}

export class PartitionWorkerPool {
  private readonly idle: Worker[] = [];
  private readonly all = new Set<Worker>();
  /** The batches this thread posts and receives are dead once handed on (see core/young-garbage.ts). */
  private readonly garbage = new YoungGarbageCadence();

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

  /** An idle worker (or a new one), referenced while it works for the caller: its messages are what the process waits for. */
  private acquire(): Worker {
    const worker = this.idle.pop() ?? this.spawn();
    worker.ref();
    return worker;
  }

  /** Back to the idle workers, or ended when it may not be reused (it crashed, or was told to abort). */
  private release(worker: Worker, reusable: boolean): void {
    worker.unref();
    if (reusable) this.idle.push(worker);
    else void worker.terminate();
  }

  /**
   * Listens to `worker` for one job: its log lines go to this thread's logger, other messages to
   * `handle`; its crash or exit is an INTERNAL error. Returns what stops listening.
   */
  private watch(worker: Worker, job: 'decode' | 'encode', handle: (m: FromWorker) => void, onCrash: (e: WalrusError) => void): () => void {
    const onMessage = (m: FromWorker) => (m.type === 'log' ? this.log[m.level](m.message, m.fields) : handle(m));
    const onError = (e: Error) => onCrash(new WalrusError('INTERNAL', `a partition ${job} worker failed: ${e.message}`, { cause: e }));
    const onExit = (code: number) => onError(new Error(`it exited (code ${code})`));
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
    return () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
  }

  /**
   * Streams `source` into a worker that decodes and extracts it. Rejects with the source's own
   * error when reading failed (the worker is aborted and has cleaned up by then), else with the
   * worker's error (a WalrusError keeps its kind and message).
   */
  async decode(job: PartitionJob, source: AsyncIterable<Buffer>, hooks: DecodeHooks = {}): Promise<PartitionDecodeResult> {
    const worker = this.acquire();
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
        unwatch();
        wake();
      };
      const unwatch = this.watch(worker, 'decode', (m) => {
        switch (m.type) {
          case 'ack':
            inFlight -= m.bytes;
            wake();
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
      }, (crash) => {
        healthy = false;
        finish();
        reject(crash);
      });
    });
    outcome.catch(() => undefined); // awaited below; a failure while still sending must not be unhandled

    const post = (m: ToWorker, transfer?: ArrayBuffer[]) => worker.postMessage(m, transfer);
    post({ type: 'start', job });

    let sourceFailure: unknown = null;
    try {
      let headChecked = !hooks.checkHead;
      const send = async (data: Buffer) => {
        if (!headChecked) {
          hooks.checkHead!(data.subarray(0, 16));
          headChecked = true;
        }
        while (!settled && inFlight + data.length > MAX_IN_FLIGHT_BYTES) await new Promise<void>((resolve) => (wakeSender = resolve));
        if (settled) return;
        inFlight += data.length;
        this.garbage.add(data.length);
        post({ type: 'chunk', data }, [data.buffer as ArrayBuffer]);
      };
      const batches = new TransferBatches(BATCH_BYTES, send);
      for await (const chunk of source) {
        hooks.onChunk?.(chunk.length);
        if (chunk.length >= TRANSFER_AT_LEAST_BYTES && ownsItsMemory(chunk)) {
          // Large enough to go as it is: moved, not copied, and not left as garbage in this thread.
          await batches.flush();
          if (!settled) await send(chunk);
        } else {
          await batches.add(chunk);
        }
        if (settled) break; // the worker failed: stop reading (this closes the source)
      }
      if (!settled) {
        await batches.flush();
        if (!headChecked) hooks.checkHead!(Buffer.alloc(0)); // an empty object
        if (!settled) post({ type: 'end' });
      }
    } catch (e) {
      sourceFailure = e;
      if (!settled) {
        // not reused afterwards: the abort might reach it after its next job started
        healthy = false;
        post({ type: 'abort', error: serializeError(e) });
      }
    }

    try {
      const result = await outcome;
      if (sourceFailure !== null) throw sourceFailure;
      return result;
    } catch (e) {
      // The source's failure is the cause of whatever the worker saw after it.
      throw sourceFailure ?? e;
    } finally {
      this.release(worker, healthy);
    }
  }

  /**
   * A worker reads, packs, hashes and compresses `job.partition`; `output` gives the compressed
   * bytes in order (credit goes back as they are read, so a slow storage slows the worker down).
   * Destroying `output` aborts the worker, which stops reading. `result` (the tar's size and
   * SHA-256) resolves after the last byte, or rejects with the worker's error, which `output`
   * fails with too.
   */
  encode(job: PartitionEncodeJob, hooks: EncodeHooks = {}): EncodedPartition {
    const worker = this.acquire();
    const post = (m: ToWorker) => worker.postMessage(m);
    let settled = false;
    // A worker told to abort is not reused: the abort might reach it after its next job started.
    let aborted = false;
    let owed = 0;
    let resolveResult!: (r: PartitionEncodeResult) => void;
    let rejectResult!: (e: unknown) => void;
    const result = new Promise<PartitionEncodeResult>((resolve, reject) => {
      resolveResult = resolve;
      rejectResult = reject;
    });
    result.catch(() => undefined); // the reader of `output` sees the failure first; `result` may go unawaited
    const output = new Readable({
      highWaterMark: MAX_IN_FLIGHT_BYTES,
      read() {
        if (owed > 0 && !settled) post({ type: 'credit', bytes: owed });
        owed = 0;
      },
      destroy(error, callback) {
        if (!settled) {
          aborted = true;
          post({ type: 'abort', error: serializeError(error ?? new Error('the partition upload stopped')) });
        }
        callback(error);
      },
    });
    const finish = (healthy: boolean) => {
      settled = true;
      unwatch();
      this.release(worker, healthy && !aborted);
    };
    const fail = (e: Error, healthy: boolean) => {
      finish(healthy);
      output.destroy(e);
      rejectResult(e);
    };
    const unwatch = this.watch(worker, 'encode', (m) => {
      switch (m.type) {
        case 'output': {
          const data = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
          this.garbage.add(data.length);
          if (output.destroyed) return;
          if (output.push(data)) post({ type: 'credit', bytes: data.length });
          else owed += data.length;
          return;
        }
        case 'read':
          hooks.onBytesRead?.(m.bytes);
          return;
        case 'throttle':
          (hooks.throttle ? hooks.throttle(m.bytes) : Promise.resolve()).then(
            () => {
              if (!settled) post({ type: 'go' });
            },
            (e: unknown) => output.destroy(e instanceof Error ? e : new Error(String(e))),
          );
          return;
        case 'encoded':
          finish(true);
          output.push(null);
          resolveResult(m.result);
          return;
        case 'failed':
          fail(deserializeError(m.error), true);
          return;
        default:
          return;
      }
    }, (crash) => fail(crash, false));
    // Inline files' bytes are copied by postMessage (structured clone); partitions list paths only.
    post({ type: 'encode', job });
    return { output, result };
  }

  /** Ends every worker (they hold no state between partitions). */
  async close(): Promise<void> {
    this.idle.length = 0;
    await Promise.all([...this.all].map((w) => w.terminate()));
  }
}
