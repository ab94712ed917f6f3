import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { push } from '../src/index.js';
import { createServer, type XferServer } from '../src/server/server.js';
import { writeRandomFile } from './helpers/cli.js';
import { startRelay } from './helpers/server.js';

const MiB = 1024 * 1024;
describe('uploads queued on a connection do not exhaust the client\'s HTTP/2 session', () => {
  let dir: string;
  let server: XferServer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-upload-memory-'));
    server = await createServer({ root: join(dir, 'root'), port: 0 });
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('uploads sent again at once after a cut are not refused by the client\'s own session (ENHANCE_YOUR_CALM)', async () => {
    // After a reconnect, the uploads that were cut go again at once. Node counts the bytes
    // queued on a client's HTTP/2 streams against the session's memory (10 MB, which undici
    // cannot raise): whole 4 MiB bodies queued there went over it, and the session refused
    // an answer's headers, resetting that request with ENHANCE_YOUR_CALM (the server had
    // answered it). Such a reset is one more retry, and its body is sent again.
    const src = join(dir, 'src.bin');
    await writeRandomFile(src, 128 * MiB, 91);
    const relay = await startRelay(server.url);
    const retries: string[] = [];
    try {
      const pushed = push(src, `${relay.url}/f.bin`, { onRetry: (e) => retries.push(String((e.error as Error)?.message ?? e.error)) });
      for (let i = 0; i < 2000 && relay.bytesUp() < 16 * MiB; i++) await new Promise((r) => setTimeout(r, 2));
      relay.cut();
      await pushed;
    } finally {
      await relay.close();
    }
    assert.ok(retries.length > 0, 'the cut was retried');
    assert.deepEqual(retries.filter((m) => /ENHANCE_YOUR_CALM/.test(m)), [], retries.join('\n'));
    assert.ok((await readFile(join(dir, 'root', 'files', 'f.bin'))).equals(await readFile(src)), 'the pushed copy');
  });
});
