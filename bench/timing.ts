/** Timing for the micro-benchmarks (bench/codecs.ts, bench/lzo-codec.ts). */

/** Runs `run` `runs` times, one after the other; the median wall time in seconds. */
export async function medianSeconds(run: () => Promise<unknown>, runs: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    await run();
    times.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(runs / 2)]!;
}
