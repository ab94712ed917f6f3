/**
 * `node dist/bench/rtt-trace.js [--file-size 32M] [--tree-size 16M] [--rtt 173] [--only file,tree]`
 *
 * Where a re-sync's time goes on a long link: pushes a file and a tree (a first copy, then
 * a re-sync after ten 4 KiB edits, as bench/wan.ts does) through the WAN relay to an
 * in-process server, and prints each request the server saw with its start and end
 * (relative to the push's start, in round trips) so serial round trips show. Exploration
 * tool for issue 17 item 4; never part of npm test.
 */
import { spawnSync } from 'node:child_process';
import { cp, mkdir, rm, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeTree } from '../fixtures/index.js';
import { parseSize } from '../src/core/sizes.js';
import { push } from '../src/api.js';
import { createServer } from '../src/server/server.js';
import { writeRandomFile } from '../test/helpers/cli.js';
import { editFile, filesUnder } from './edits.js';
import { startWanRelay } from './wan-relay.js';

const { values } = parseArgs({
  options: {
    'file-size': { type: 'string', default: '32M' },
    'tree-size': { type: 'string', default: '16M' },
    rtt: { type: 'string', default: '173' },
    only: { type: 'string', default: 'file,tree' },
    work: { type: 'string', default: '/tmp/xfer-rtt-trace' },
  },
});
const rtt = Number(values.rtt);
const work = values.work!;
const log = (s: string) => process.stdout.write(`${s}\n`);


await rm(work, { recursive: true, force: true });
await mkdir(work, { recursive: true });
type Seen = { method: string; path: string; status: number; ms: number; end: number; bytesIn: number; bytesOut: number };
let seen: Seen[] = [];
const logger = {
  debug() {},
  warn(f: object, m?: string) { log(`warn ${m} ${JSON.stringify(f)}`); },
  error(f: object, m?: string) { log(`error ${m} ${JSON.stringify(f)}`); },
  info(f: object, message?: string) {
    if (message !== 'request') return;
    const r = f as Seen;
    seen.push({ ...r, end: performance.now() });
  },
};
const server = await createServer({ root: join(work, 'root'), port: 0, logger });
const relay = await startWanRelay(Number(new URL(server.url).port), { rttMs: rtt });
try {
  const run = async (label: string, source: string, target: string) => {
    seen = [];
    const t0 = performance.now();
    const r = await push(source, `http://127.0.0.1:${relay.port}/${target}`);
    const wall = performance.now() - t0;
    await new Promise((res) => setTimeout(res, 100));
    log(`${label}: ${(wall / 1000).toFixed(2)} s = ${(wall / rtt).toFixed(1)} RTT, ${seen.length} requests, sent ${r.bytesSent} B, relay up ${relay.bytesUp} down ${relay.bytesDown}, conns ${relay.connections}`);
    for (const s of seen.sort((a, b) => a.end - a.ms - (b.end - b.ms))) {
      const start = (s.end - s.ms - t0) / rtt;
      const end = (s.end - t0) / rtt;
      log(`  ${start.toFixed(2).padStart(6)} .. ${end.toFixed(2).padStart(6)} RTT  ${s.method} ${s.path} ${s.status} in ${s.bytesIn} out ${s.bytesOut}`);
    }
    relay.reset();
  };
  const only = new Set(values.only!.split(','));
  if (only.has('file')) {
    const size = parseSize(values['file-size']!, '--file-size');
    await mkdir(join(work, 'a'));
    await mkdir(join(work, 'b'));
    await writeRandomFile(join(work, 'a', 'big.bin'), size, 17);
    await cp(join(work, 'a', 'big.bin'), join(work, 'b', 'big.bin'));
    await editFile(join(work, 'b', 'big.bin'), size, 5000, 10);
    const earlier = new Date(Date.now() - 86_400_000);
    await utimes(join(work, 'a', 'big.bin'), earlier, earlier);
    await run('file first copy', join(work, 'a', 'big.bin'), 'big.bin');
    await run('file re-sync', join(work, 'b', 'big.bin'), 'big.bin');
  }
  if (only.has('tree')) {
    await writeTree(join(work, 'ta', 'tree'), { sizeBytes: parseSize(values['tree-size']!, '--tree-size'), seed: 2026 });
    await mkdir(join(work, 'tb'));
    spawnSync('cp', ['-a', join(work, 'ta', 'tree'), join(work, 'tb')]);
    const c = (await filesUnder(join(work, 'tb', 'tree'))).filter((f) => f.bytes >= 8192);
    for (let i = 0; i < 10; i++) {
      const f = c[Math.floor(((i + 0.5) / 10) * c.length)]!;
      await editFile(join(work, 'tb', 'tree', f.path), f.bytes, 6000 + i, 1);
    }
    await run('tree first copy', join(work, 'ta', 'tree'), 'tree');
    await run('tree re-sync', join(work, 'tb', 'tree'), 'tree');
  }
} finally {
  await relay.close();
  await server.close();
  await rm(work, { recursive: true, force: true });
}
