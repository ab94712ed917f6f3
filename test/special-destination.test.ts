import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { lstat, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { EXIT_CODES } from '../src/core/errors.js';
import { isOneLineError, runCli } from './helpers/cli.js';
import { useServer } from './helpers/server.js';

const isRoot = process.getuid?.() === 0;

/** Makes a node with mkfifo(1) or mknod(1); false if the tool is missing. */
function makeNode(args: string[]): boolean {
  try {
    execFileSync(args[0]!, args.slice(1), { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The destination's node is still what it was: same type, same device and inode. */
async function assertUntouched(path: string, before: { ino: number; mode: number; rdev: number }): Promise<void> {
  const st = await lstat(path);
  assert.equal(st.ino, before.ino, `${path} was replaced`);
  assert.equal(st.mode, before.mode);
  assert.equal(st.rdev, before.rdev);
}

describe('a destination that is a device node, FIFO or socket is never replaced', () => {
  const fx = useServer('xfer-special-');

  async function pushedFile(): Promise<{ backup: string; src: string }> {
    const src = join(fx.dir, 'src', 'payload.bin');
    await mkdir(join(fx.dir, 'src'), { recursive: true });
    await writeFile(src, Buffer.alloc(70_000, 7));
    const backup = join(fx.dir, 'backup');
    const p = await runCli(['push', src, `${backup}/`]);
    assert.equal(p.code, 0, p.stderr);
    return { backup, src };
  }

  it('pull onto a FIFO exits with XFER_SPECIAL_FILE, one line, and leaves the FIFO', async () => {
    const { backup } = await pushedFile();
    const fifo = join(fx.dir, 'fifo');
    assert.ok(makeNode(['mkfifo', fifo]), 'mkfifo');
    const before = await lstat(fifo);
    const r = await runCli(['pull', join(backup, 'payload.bin'), fifo]);
    assert.equal(r.code, EXIT_CODES.XFER_SPECIAL_FILE, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    assert.match(r.stderr, /is a FIFO/);
    await assertUntouched(fifo, before);
    assert.deepEqual((await readdir(fx.dir)).filter((n) => n.startsWith('.xfer-')), [], 'no staging left beside it');
  });

  it('a local push onto a FIFO is refused the same way', async () => {
    const { src } = await pushedFile();
    const dest = join(fx.dir, 'pushdest');
    await mkdir(dest, { recursive: true });
    const fifo = join(dest, 'fifo');
    assert.ok(makeNode(['mkfifo', fifo]), 'mkfifo');
    const before = await lstat(fifo);
    const r = await runCli(['push', src, fifo]);
    assert.equal(r.code, EXIT_CODES.XFER_SPECIAL_FILE, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    await assertUntouched(fifo, before);
  });

  it('a push to a server path that is a FIFO there is refused, and the server keeps running', async () => {
    const { src } = await pushedFile();
    await mkdir(join(fx.root, 'files'), { recursive: true });
    const fifo = join(fx.root, 'files', 'pipe');
    assert.ok(makeNode(['mkfifo', fifo]), 'mkfifo');
    const before = await lstat(fifo);
    const r = await runCli(['push', src, `${fx.server.url}/pipe`]);
    assert.equal(r.code, EXIT_CODES.XFER_SPECIAL_FILE, r.stderr);
    assert.ok(isOneLineError(r.stderr), r.stderr);
    await assertUntouched(fifo, before);
    const ok = await runCli(['push', src, `${fx.server.url}/other`]);
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('pull onto a character device node (/dev/null made with mknod) is refused; the node stays', { skip: isRoot ? false : 'mknod needs root' }, async () => {
    const { backup } = await pushedFile();
    const node = join(fx.dir, 'null');
    if (!makeNode(['mknod', node, 'c', '1', '3'])) return; // no mknod here (a container without it): nothing to check
    const before = await lstat(node);
    assert.ok(before.isCharacterDevice());
    const r = await runCli(['pull', join(backup, 'payload.bin'), node, '--json']);
    assert.equal(r.code, EXIT_CODES.XFER_SPECIAL_FILE, r.stderr);
    assert.match(r.stderr, /is a character device/);
    await assertUntouched(node, before);
  });
});
