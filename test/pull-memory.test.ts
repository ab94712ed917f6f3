import { strict as assert } from 'node:assert';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createServer, type XferServer } from '../src/server/server.js';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';

const MiB = 1024 * 1024;
/** A file of one 1 MiB random block repeated: thousands of chunks that come from memory at once. */
const FILE_BYTES = 256 * MiB;
/**
 * Peak RSS a pull of it may reach. Measured: about 150 MiB. When chunks that completed out
 * of order did not hold their fetch window slot, they piled up behind each slow fetch, one
 * copy each: 467 MiB for 384 MiB of repeats, 1.1 GB for 1 GiB (and 1.8 GB for a 20 GiB
 * sparse image, issue 14).
 */
const MAX_PULL_RSS_BYTES = 250 * MiB;

describe('a pull holds memory bounded by its fetch window, however much of the file repeats', () => {
  let dir: string;
  let server: XferServer;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-pull-memory-'));
    server = await createServer({ root: join(dir, 'root'), port: 0 });
  });
  after(async () => {
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('pulling a file of one block repeated stays under its memory bound', async () => {
    const src = join(dir, 'repeats.img');
    const block = pseudoRandom(MiB, 7);
    const fh = await open(src, 'w');
    try {
      for (let o = 0; o < FILE_BYTES; o += MiB) await fh.write(block, 0, MiB, o);
    } finally {
      await fh.close();
    }
    const push = await runCli(['push', src, `${server.url}/repeats.img`]);
    assert.equal(push.code, 0, push.stderr);
    // The child writes its own peak RSS (getrusage) to a file as it exits.
    const rssFile = join(dir, 'rss');
    const hook = `data:text/javascript,${encodeURIComponent(`import { writeFileSync } from 'node:fs'; process.on('exit', () => writeFileSync(${JSON.stringify(rssFile)}, String(process.resourceUsage().maxRSS * 1024)));`)}`;
    const pull = await runCli(['pull', `${server.url}/repeats.img`, join(dir, 'out.img')], { env: { NODE_OPTIONS: `--import=${hook}` } });
    assert.equal(pull.code, 0, pull.stderr);
    const rss = Number(await readFile(rssFile, 'utf8'));
    assert.ok(rss > 0 && rss < MAX_PULL_RSS_BYTES, `peak RSS ${(rss / MiB).toFixed(0)} MiB`);
  });
});
