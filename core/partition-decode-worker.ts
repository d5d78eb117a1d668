/**
 * Worker thread entry: decodes and extracts one partition at a time (core/partition-decode.ts)
 * from bytes the main thread posts, acknowledging each chunk once the chain consumed it (that is
 * the back-pressure: the main thread keeps only a few chunks in flight).
 */
import { parentPort } from 'node:worker_threads';
import { createCodec } from './registry.js';
import { decodePartition } from './partition-decode.js';
import { deserializeError, serializeError, type FromWorker, type PartitionJob, type ToWorker } from './partition-worker-protocol.js';
import type { LogFields, Logger, LogLevel } from './log.js';
import type { Codec } from './types.js';

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
function codecFor(job: PartitionJob): Promise<Codec | null> {
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

let inbox: Inbox | null = null;

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'start': {
      const current = (inbox = new Inbox());
      void run(m.job, current);
      return;
    }
    case 'chunk':
      inbox?.push(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength));
      return;
    case 'end':
      inbox?.end();
      return;
    case 'abort':
      inbox?.abort(deserializeError(m.error));
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
    });
    post({ type: 'done', result });
  } catch (e) {
    post({ type: 'failed', error: serializeError(e) });
  }
}
