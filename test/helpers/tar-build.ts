/** Tar archives built member by member with tar-stream: how tests make normal and hostile partitions. */
import tarStream from 'tar-stream';

export type EntryHeader = Parameters<tarStream.Pack['entry']>[0];

export async function buildTar(entries: Array<{ header: EntryHeader; body?: Buffer }>): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const { header, body } of entries) {
    await new Promise<void>((resolve, reject) => {
      if (body) pack.entry({ mtime: new Date(0), ...header }, body, (e) => (e ? reject(e) : resolve()));
      else pack.entry({ mtime: new Date(0), ...header }, (e) => (e ? reject(e) : resolve()));
    });
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}
