/**
 * The input of a stream parser (the lzop, LZ4 frame decoders and the lzop encoder's block
 * cutter): chunks kept as they came, copied only when a read spans two of them.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The unsigned little-endian 32-bit word at `index`, without consuming anything. */
  peekUInt32LE(index: number): number {
    let value = 0;
    for (let k = 3; k >= 0; k--) value = value * 256 + this.peek(index + k);
    return value;
  }

  /** The byte at `index`, without consuming anything. */
  peek(index: number): number {
    for (const chunk of this.chunks) {
      if (index < chunk.length) return chunk[index]!;
      index -= chunk.length;
    }
    throw new RangeError('peek past the end of the queue');
  }

  /** Removes the first `n` bytes and returns them as the chunks they were in (no copy). */
  takeParts(n: number): Buffer[] {
    const parts: Buffer[] = [];
    while (n > 0) {
      const chunk = this.chunks[0]!;
      if (chunk.length <= n) {
        parts.push(chunk);
        this.chunks.shift();
        n -= chunk.length;
        this.length -= chunk.length;
      } else {
        parts.push(chunk.subarray(0, n));
        this.chunks[0] = chunk.subarray(n);
        this.length -= n;
        n = 0;
      }
    }
    return parts;
  }

  /**
   * The first `n` bytes, removed: the chunk itself when they lie in one, else copied into
   * `scratch` (at least `n` bytes long), whose contents the caller must use before the next call.
   */
  takeInto(n: number, scratch: Buffer): Buffer {
    const parts = this.takeParts(n);
    if (parts.length === 1) return parts[0]!;
    let at = 0;
    for (const part of parts) at += part.copy(scratch, at);
    return scratch.subarray(0, n);
  }

  take(n: number): Buffer {
    const parts = this.takeParts(n);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }
}
