import { strict as assert } from 'node:assert';
import { chmod, mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { useServer } from './helpers/server.js';

const MiB = 1024 * 1024;

/** Files of every staging path: small (in memory), buffered, and O_DIRECT (8 MiB and more). */
const FILES: { name: string; size: number; mode: number; mtimeS: number }[] = [
  { name: 'empty.txt', size: 0, mode: 0o644, mtimeS: 1_500_000_000 },
  { name: 'run.sh', size: 10_000, mode: 0o755, mtimeS: 1_500_000_001.25 },
  { name: 'sub/secret.key', size: 700, mode: 0o600, mtimeS: 1_500_000_002 },
  { name: 'sub/mid.bin', size: 2 * MiB + 3, mode: 0o640, mtimeS: 1_500_000_003 },
  { name: 'sub/edge.bin', size: 64 * 1024, mode: 0o640, mtimeS: 1_500_000_005 },
  { name: 'sub/big.img', size: 9 * MiB + 5, mode: 0o444, mtimeS: 1_500_000_004 },
];

async function expectCopy(dir: string): Promise<void> {
  for (const f of FILES) {
    const st = await stat(join(dir, f.name));
    assert.equal(st.mode & 0o7777, f.mode, `${f.name} mode`);
    assert.equal(Math.round(st.mtimeMs), Math.trunc(f.mtimeS * 1000), `${f.name} mtime`);
    assert.ok((await readFile(join(dir, f.name))).equals(pseudoRandom(f.size, f.size)), `${f.name} content`);
  }
}

describe('trees keep their files\' content, modes and mtimes through push and pull', () => {
  const fx = useServer('xfer-attrs-');

  it('locally and over HTTP/2, small and large files alike', async () => {
    const src = join(fx.dir, 'tree');
    await mkdir(join(src, 'sub'), { recursive: true });
    for (const f of FILES) {
      const p = join(src, f.name);
      await writeFile(p, pseudoRandom(f.size, f.size));
      await chmod(p, f.mode);
      await utimes(p, f.mtimeS, f.mtimeS);
    }
    const local = join(fx.dir, 'backup');
    assert.equal((await runCli(['push', src, `${local}/`])).code, 0);
    await expectCopy(join(local, 'tree'));
    assert.equal((await runCli(['push', src, `${fx.server.url}/`])).code, 0);
    await expectCopy(join(fx.root, 'files', 'tree'));
    const pulled = join(fx.dir, 'pulled');
    assert.equal((await runCli(['pull', `${fx.server.url}/tree`, pulled])).code, 0);
    await expectCopy(pulled);
    const pulledLocal = join(fx.dir, 'pulled-local');
    assert.equal((await runCli(['pull', join(local, 'tree'), pulledLocal])).code, 0);
    await expectCopy(pulledLocal);
  });
});
