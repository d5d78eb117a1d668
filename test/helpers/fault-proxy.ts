/**
 * An HTTP proxy on 127.0.0.1, in the test process, in front of an S3 test server (s3rver): the S3
 * plugin is pointed at it (`endpoint: proxy.endpoint`, `forcePathStyle: true`) so that tests can
 * inject the failures a real network and a real S3 produce, without mocking the SDK.
 *
 * Requests are forwarded unchanged (the Host header too: SigV4 signs it). A seeded PRNG picks which
 * requests fail, so a run is reproducible for a given request order; the kind of each fault is taken
 * from `kinds` in rotation, so every kind occurs once enough faults happened. Fault kinds:
 * - `error500`: answer 500 InternalError (S3's XML error body), upstream never sees the request;
 * - `slowdown503`: answer 503 SlowDown (S3's throttling error);
 * - `reset`: forward the request, then cut the connection half-way through the response body
 *   (before the response when it has no body);
 * - `stall`: accept the request and never answer, for `stallMs` (bounded), then close.
 * `trickle` slows every forwarded body (request or response) down, to catch a command mid-transfer.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export type FaultKind = 'error500' | 'slowdown503' | 'reset' | 'stall';
export const FAULT_KINDS: readonly FaultKind[] = ['error500', 'slowdown503', 'reset', 'stall'];

export interface ProxiedRequest {
  method: string;
  /** Path and query, e.g. `/bucket/db1/wal_005/...lzo?uploadId=...`. */
  url: string;
  /** 1-based arrival order. */
  index: number;
}

export interface TrickleOptions {
  /** Which bodies to slow down. */
  direction: 'request' | 'response';
  /** Bytes passed on per tick. */
  bytesPerTick: number;
  tickMs: number;
}

export interface FaultProxyOptions {
  /** Upstream, `http://127.0.0.1:<port>` (s3rver's endpoint). */
  target: string;
  /** Fraction of (matching) requests faulted, 0..1. Default 0. */
  faultFraction?: number;
  /** Kinds used in rotation. Default: all four. */
  kinds?: readonly FaultKind[];
  /** PRNG seed. Default 1. */
  seed?: number;
  /** Only requests for which this is true can be faulted. Default: all. */
  match?: (r: ProxiedRequest) => boolean;
  /** How long a `stall` holds the connection before closing it. Default 5000 ms, at most 60 s. */
  stallMs?: number;
  trickle?: TrickleOptions | null;
}

export interface FaultProxyStats {
  requests: number;
  faults: number;
  byKind: Record<FaultKind, number>;
  /** Body bytes passed upstream (requests) and back (responses) for forwarded requests. */
  requestBodyBytes: number;
  responseBodyBytes: number;
}

export interface FaultProxy {
  /** `http://127.0.0.1:<port>`: use as the S3 endpoint with forcePathStyle. */
  endpoint: string;
  port: number;
  readonly stats: FaultProxyStats;
  /** Change the fault settings for the requests that arrive from now on; a `seed` restarts the PRNG and the kind rotation. */
  configure(options: Partial<Omit<FaultProxyOptions, 'target'>>): void;
  /** Zero the counters. */
  resetStats(): void;
  /** Resolves once `predicate(stats)` holds (checked on every byte count change); rejects after `timeoutMs`. */
  waitFor(predicate: (s: FaultProxyStats) => boolean, timeoutMs?: number): Promise<void>;
  /** Closes the listener and every connection (stalls included). Safe to call twice. */
  stop(): Promise<void>;
}

const MAX_STALL_MS = 60_000;

/** mulberry32: small, seedable, good enough to pick faults. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function s3ErrorXml(code: string, message: string, url: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><Resource>${url.replace(/[<>&]/g, '')}</Resource><RequestId>fault-proxy</RequestId></Error>`;
}

function emptyStats(): FaultProxyStats {
  return { requests: 0, faults: 0, byKind: { error500: 0, slowdown503: 0, reset: 0, stall: 0 }, requestBodyBytes: 0, responseBodyBytes: 0 };
}

export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(options.target);
  let settings = { faultFraction: 0, kinds: FAULT_KINDS, seed: 1, match: (_r: ProxiedRequest) => true, stallMs: 5000, trickle: null as TrickleOptions | null };
  let random = prng(settings.seed);
  let rotation = 0;
  const apply = (o: Partial<Omit<FaultProxyOptions, 'target'>>) => {
    const { target: _ignored, ...rest } = o as FaultProxyOptions;
    settings = { ...settings, ...Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)) } as typeof settings;
    if (o.trickle === null) settings.trickle = null;
    settings.stallMs = Math.min(Math.max(settings.stallMs, 0), MAX_STALL_MS);
    if (!settings.kinds.length) throw new Error('fault proxy: kinds must not be empty');
    if (rest.seed !== undefined) {
      // a seed (re)starts the sequence: the same seed and request order give the same faults
      random = prng(settings.seed);
      rotation = 0;
    }
  };
  apply(options);

  let stats = emptyStats();
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of [...waiters]) w();
  };
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let stopping = false;

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
    return t;
  };

  /** Passes chunks from `from` to `write`, in ticks of `trickle` bytes when slowed, with back-pressure. */
  const relay = (from: IncomingMessage, to: { write(c: Buffer): boolean; end(): void; once(e: 'drain', f: () => void): unknown; destroyed?: boolean }, slow: TrickleOptions | null, count: (n: number) => void, onDone?: () => void) => {
    if (!slow) {
      from.on('data', (chunk: Buffer) => {
        count(chunk.length);
        if (!to.write(chunk)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      });
      from.on('end', () => {
        to.end();
        onDone?.();
      });
      return;
    }
    const queue: Buffer[] = [];
    let ended = false;
    let ticking = false;
    const tick = () => {
      if (to.destroyed || stopping) return;
      let budget = slow.bytesPerTick;
      while (budget > 0 && queue.length) {
        const head = queue[0];
        const piece = head.subarray(0, budget);
        if (piece.length === head.length) queue.shift();
        else queue[0] = head.subarray(piece.length);
        budget -= piece.length;
        count(piece.length);
        to.write(piece);
      }
      if (queue.length) later(slow.tickMs, tick);
      else {
        ticking = false;
        if (ended) {
          to.end();
          onDone?.();
        } else from.resume();
      }
    };
    from.on('data', (chunk: Buffer) => {
      queue.push(chunk);
      from.pause();
      if (!ticking) {
        ticking = true;
        later(slow.tickMs, tick);
      }
    });
    from.on('end', () => {
      ended = true;
      if (!ticking) {
        to.end();
        onDone?.();
      }
    });
  };

  const answerError = (req: IncomingMessage, res: ServerResponse, status: number, code: string, message: string) => {
    req.resume();
    req.on('end', () => {
      const body = s3ErrorXml(code, message, req.url ?? '');
      res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), 'x-amz-request-id': 'fault-proxy' });
      res.end(body);
    });
  };

  const forward = (req: IncomingMessage, res: ServerResponse, fault: 'reset' | null) => {
    const trickle = settings.trickle;
    const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers, agent: false });
    // the client went away (killed, timed out): so does the upstream request, as it would through a real network
    const abandon = () => {
      if (!res.writableFinished) out.destroy();
    };
    res.on('close', abandon);
    out.on('error', () => {
      if (!res.headersSent) res.destroy();
      else res.destroy();
    });
    out.on('response', (up) => {
      const length = Number(up.headers['content-length'] ?? 0);
      const hasBody = req.method !== 'HEAD' && length > 0;
      if (fault === 'reset' && !hasBody) {
        up.resume();
        req.socket.destroy();
        return;
      }
      res.writeHead(up.statusCode ?? 502, up.statusMessage, up.rawHeaders as unknown as Record<string, string>);
      if (fault === 'reset') {
        // half the body, then the connection dies
        const cutAt = Math.max(1, Math.floor(length / 2));
        let sent = 0;
        up.on('data', (chunk: Buffer) => {
          if (sent >= cutAt) return;
          const piece = chunk.subarray(0, cutAt - sent);
          sent += piece.length;
          stats.responseBodyBytes += piece.length;
          res.write(piece);
          if (sent >= cutAt) {
            up.destroy();
            // let the written bytes reach the client before the connection goes
            later(20, () => req.socket.destroy());
          }
        });
        return;
      }
      relay(up, res, trickle?.direction === 'response' ? trickle : null, (n) => {
        stats.responseBodyBytes += n;
        notify();
      });
    });
    relay(req, out, trickle?.direction === 'request' ? trickle : null, (n) => {
      stats.requestBodyBytes += n;
      notify();
    });
  };

  const server: Server = createServer((req, res) => {
    if (stopping) {
      req.socket.destroy();
      return;
    }
    stats.requests++;
    const info: ProxiedRequest = { method: req.method ?? 'GET', url: req.url ?? '/', index: stats.requests };
    let kind: FaultKind | null = null;
    if (settings.faultFraction > 0 && settings.match(info) && random() < settings.faultFraction) {
      kind = settings.kinds[rotation++ % settings.kinds.length];
      stats.faults++;
      stats.byKind[kind]++;
    }
    notify();
    switch (kind) {
      case 'error500':
        return answerError(req, res, 500, 'InternalError', 'We encountered an internal error. Please try again.');
      case 'slowdown503':
        return answerError(req, res, 503, 'SlowDown', 'Please reduce your request rate.');
      case 'stall': {
        req.resume(); // take the body, never answer
        const timer = later(settings.stallMs, () => req.socket.destroy());
        req.socket.once('close', () => {
          clearTimeout(timer);
          timers.delete(timer);
        });
        return;
      }
      case 'reset':
        return forward(req, res, 'reset');
      default:
        return forward(req, res, null);
    }
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_e, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;

  let stopped: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    get stats() {
      return stats;
    },
    configure: apply,
    resetStats() {
      stats = emptyStats();
    },
    waitFor(predicate, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!predicate(stats)) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`fault proxy: condition not reached within ${timeoutMs} ms (stats ${JSON.stringify(stats)})`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    stop() {
      return (stopped ??= (async () => {
        stopping = true;
        for (const t of timers) clearTimeout(t);
        timers.clear();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const s of sockets) s.destroy();
        await closed;
      })());
    },
  };
}
