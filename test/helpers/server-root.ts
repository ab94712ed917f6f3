/**
 * What tests of a server root share (server-one-copy, remote-push-pull, serve-store-only):
 * a server of its own for one step, the chunks push cuts a buffer into, and the bytes a
 * root takes on disk.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createChunker } from '../../src/chunker/index.js';
import { DEFAULT_CHUNKER } from '../../src/chunker/params.js';
import { digestOf } from '../../src/hash/digest.js';
import { createServer, type ServerOptions } from '../../src/server/server.js';
import { cutAll } from './chunks.js';

/** Runs `fn` with an in-process server of its own on `root`, started for it and closed after (a fresh one: no cached reads). */
export async function withServer<T>(root: string, fn: (url: string) => Promise<T>, options: Omit<ServerOptions, 'root' | 'port'> = {}): Promise<T> {
  const srv = await createServer({ ...options, root, port: 0 });
  try {
    return await fn(srv.url);
  } finally {
    await srv.close();
  }
}

/** Chunk digests (hex) and lengths of a buffer, as push cuts it (default chunker, BLAKE3). */
export function chunksOf(data: Buffer): Map<string, number> {
  const m = new Map<string, number>();
  let o = 0;
  for (const len of cutAll(createChunker(DEFAULT_CHUNKER), data)) {
    m.set(digestOf('blake3', data.subarray(o, o + len)).toString('hex'), len);
    o += len;
  }
  return m;
}

/** Apparent bytes of every file under `dir` (du -sb). */
export async function apparentBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    n += e.isDirectory() ? await apparentBytes(p) : (await lstat(p)).size;
  }
  return n;
}
