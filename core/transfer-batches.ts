/**
 * Bytes crossing between threads go in batches: one postMessage per 256 KiB disk read or per
 * codec block cost more than the copy into a batch, and a batch that owns its memory is moved
 * (transferred), not copied again. Used both ways by the partition workers.
 */
export class TransferBatches {
  private batch: Buffer;
  private filled = 0;

  /** `send` gets each full batch, then the last, shorter one; each owns its ArrayBuffer (transferable). */
  constructor(
    private readonly size: number,
    private readonly send: (batch: Buffer) => Promise<void>,
  ) {
    this.batch = Buffer.allocUnsafeSlow(size);
  }

  /** Copies `chunk` into batches, sending each as it fills. */
  async add(chunk: Buffer): Promise<void> {
    for (let offset = 0; offset < chunk.length; ) {
      const n = Math.min(chunk.length - offset, this.size - this.filled);
      chunk.copy(this.batch, this.filled, offset, offset + n);
      this.filled += n;
      offset += n;
      if (this.filled === this.size) await this.flush();
    }
  }

  /** Sends what is gathered (a view of the batch's ArrayBuffer, which goes with it) and starts a new batch. */
  async flush(): Promise<void> {
    if (this.filled === 0) return;
    const full = this.batch.subarray(0, this.filled);
    this.batch = Buffer.allocUnsafeSlow(this.size);
    this.filled = 0;
    await this.send(full);
  }
}
