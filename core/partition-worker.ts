/**
 * Worker thread entry, one partition at a time:
 * - decode (backup-fetch): decodes and extracts a partition (core/partition-decode.ts) from bytes
 *   the main thread posts, acknowledging each chunk once the chain consumed it (that is the
 *   back-pressure: the main thread keeps only a few chunks in flight);
 * - encode (backup-push): reads, packs, hashes and compresses a partition (core/partition-encode.ts)
 *   and posts the compressed bytes, keeping at most MAX_OUTPUT_IN_FLIGHT bytes not yet credited
 *   back by the main thread (which encrypts and stores them).
 */
import { parentPort } from 'node:worker_threads';
import { createCodec } from './registry.js';
import { decodePartition } from './partition-decode.js';
import { encodePartition } from './partition-encode.js';
import { deserializeError, serializeError, type FromWorker, type PartitionEncodeJob, type PartitionJob, type ToWorker } from './partition-worker-protocol.js';
import type { LogFields, Logger, LogLevel } from './log.js';
import type { Codec } from './types.js';
import { TransferBatches } from './transfer-batches.js';
import { YoungGarbageCadence } from './young-garbage.js';

/** Disk reads, codec blocks and posted batches are dead once passed on (see core/young-garbage.ts). */
const garbage = new YoungGarbageCadence();

const port = parentPort!;
const post = (m: FromWorker) => port.postMessage(m);

/** Log lines go to the main thread's logger (which masks secrets and formats). */
const log: Logger = {
  error: (message, fields) => forward('error', message, fields),
  warn: (message, fields) => forward('warn', message, fields),
  info: (message, fields) => forward('info', message, fields),
  debug: (message, fields) => forward('debug', message, fields),
  addSecrets: () => undefined,
  flush: async () => undefined,
};
function forward(level: LogLevel, message: string, fields?: LogFields) {
  post({ type: 'log', level, message, fields });
}

const codecs = new Map<string, Promise<Codec | null>>();
function codecFor(job: { codecSpec: string; configDirectory: string }): Promise<Codec | null> {
  const key = `${job.configDirectory}\u0000${job.codecSpec}`;
  let codec = codecs.get(key);
  if (!codec) codecs.set(key, (codec = createCodec(job.codecSpec, { configDirectory: job.configDirectory, log }, ['compression'])));
  return codec;
}

/** The current job's input: chunks as posted, the end, or the error that aborts it. */
class Inbox {
  private chunks: Buffer[] = [];
  private ended = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;

  push(chunk: Buffer) {
    this.chunks.push(chunk);
    this.notify();
  }
  end() {
    this.ended = true;
    this.notify();
  }
  abort(error: Error) {
    this.failure ??= error;
    this.chunks.length = 0;
    this.notify();
  }
  private notify() {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async *read(): AsyncGenerator<Buffer> {
    for (;;) {
      if (this.failure) throw this.failure;
      const chunk = this.chunks.shift();
      if (chunk) {
        yield chunk;
        // The chain asked for more: this chunk is its now, the main thread may send another.
        post({ type: 'ack', bytes: chunk.length });
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

/** Output posted in batches of about this size (fewer, larger messages). */
const OUTPUT_BATCH_BYTES = 512 * 1024;
const MAX_OUTPUT_IN_FLIGHT = 4 * OUTPUT_BATCH_BYTES;

/** The current encode job's link to the main thread: output credit, rate-limit answers, abort. */
class Outbox {
  private inFlight = 0;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  private readonly waitingToRead: Array<() => void> = [];
  onAbort: ((error: Error) => void) | null = null;

  credit(bytes: number) {
    this.inFlight -= bytes;
    this.notify();
  }
  go() {
    this.waitingToRead.shift()?.();
  }
  abort(error: Error) {
    this.failure ??= error;
    this.notify();
    for (const w of this.waitingToRead.splice(0)) w();
    this.onAbort?.(error);
  }
  private notify() {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** Posts `data` once the main thread has room for it (its ArrayBuffer is transferred: nothing else may use it). */
  async send(data: Buffer): Promise<void> {
    while (!this.failure && this.inFlight > 0 && this.inFlight + data.length > MAX_OUTPUT_IN_FLIGHT) {
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    if (this.failure) throw this.failure;
    this.inFlight += data.length;
    port.postMessage({ type: 'output', data } satisfies FromWorker, [data.buffer as ArrayBuffer]);
  }

  /** Waits for the main thread's rate limiter. */
  async throttle(bytes: number): Promise<void> {
    if (this.failure) throw this.failure;
    await new Promise<void>((resolve) => {
      this.waitingToRead.push(resolve);
      post({ type: 'throttle', bytes });
    });
    if (this.failure) throw this.failure;
  }
}

let inbox: Inbox | null = null;
let outbox: Outbox | null = null;

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'start': {
      const current = (inbox = new Inbox());
      void run(m.job, current);
      return;
    }
    case 'encode': {
      const current = (outbox = new Outbox());
      void encode(m.job, current);
      return;
    }
    case 'credit':
      outbox?.credit(m.bytes);
      return;
    case 'go':
      outbox?.go();
      return;
    case 'chunk':
      inbox?.push(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength));
      return;
    case 'end':
      inbox?.end();
      return;
    case 'abort':
      inbox?.abort(deserializeError(m.error));
      outbox?.abort(deserializeError(m.error));
      return;
  }
});

async function run(job: PartitionJob, input: Inbox) {
  try {
    const codec = await codecFor(job);
    const result = await decodePartition(input.read(), {
      codec,
      hashInput: job.hashInput,
      storedBytesVerified: job.storedBytesVerified,
      dataRoot: job.dataRoot,
      tablespaces: job.tablespaces,
      fsync: job.fsync,
      log,
      onTarBytes: (n) => garbage.add(n),
    });
    post({ type: 'done', result });
  } catch (e) {
    post({ type: 'failed', error: serializeError(e) });
  }
}

async function encode(job: PartitionEncodeJob, out: Outbox) {
  try {
    const codec = await codecFor(job);
    let unreported = 0;
    const { output, result } = encodePartition(job.partition, {
      codec,
      inlineFiles: job.inlineFiles.map((f) => ({ ...f, content: Buffer.from(f.content.buffer, f.content.byteOffset, f.content.byteLength) })),
      log,
      onBytes: (n) => {
        garbage.add(n);
        unreported += n;
        if (unreported >= OUTPUT_BATCH_BYTES) {
          post({ type: 'read', bytes: unreported });
          unreported = 0;
        }
      },
      throttle: job.throttled ? (n) => out.throttle(n) : undefined,
    });
    out.onAbort = (error) => output.destroy(error);
    const batches = new TransferBatches(OUTPUT_BATCH_BYTES, (batch) => out.send(batch));
    for await (const chunk of output as AsyncIterable<Buffer>) await batches.add(chunk);
    await batches.flush();
    if (unreported > 0) post({ type: 'read', bytes: unreported });
    post({ type: 'encoded', result: await result });
  } catch (e) {
    post({ type: 'failed', error: serializeError(e) });
  } finally {
    if (outbox === out) outbox = null;
  }
}
