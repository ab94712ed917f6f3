import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { access, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('../../', import.meta.url));
/** npm itself: the one running `npm test`, or the one installed beside this node. */
const NPM_CLI = process.env.npm_execpath ?? join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');

/**
 * The tarball `npm pack` makes is what a user installs: it must hold everything the `xfer`
 * command and its install script need, with dist/ already compiled (installing runs no
 * tsc: that needs devDependencies). The package is unpacked as npm would install it,
 * into <prefix>/node_modules/xfer, with its dependencies taken from this checkout's
 * node_modules (the registry is not reachable from a test), and run from there.
 */
describe('the npm package', () => {
  let dir: string;
  let pkg: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-package-'));
    // Scripts are skipped: `prepare` would run tsc over dist/ that other tests are reading.
    const packed = await run(process.execPath, [NPM_CLI, 'pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: REPO });
    const [{ filename }] = JSON.parse(packed.stdout) as { filename: string }[];
    const modules = join(dir, 'prefix', 'node_modules');
    pkg = join(modules, 'xfer');
    await mkdir(pkg, { recursive: true });
    await run('tar', ['xzf', join(dir, filename!), '-C', pkg, '--strip-components=1']);
    const manifest = JSON.parse(await readFile(join(pkg, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    for (const dep of Object.keys(manifest.dependencies)) {
      await mkdir(dirname(join(modules, dep)), { recursive: true });
      await symlink(join(REPO, 'node_modules', dep), join(modules, dep));
    }
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('holds the install script, which falls back to the TypeScript chunker without a compiler', async () => {
    const manifest = JSON.parse(await readFile(join(pkg, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    assert.equal(manifest.scripts.install, 'node native/build.mjs');
    await access(join(pkg, 'native', 'build.mjs'));
    // No node-gyp on PATH: the build is skipped with a warning, and the install succeeds.
    // (A user's install, not CI's: XFER_REQUIRE_NATIVE, which CI sets, makes the skip fatal.)
    const { XFER_REQUIRE_NATIVE: _ci, ...userEnv } = process.env;
    const r = await run(process.execPath, ['native/build.mjs'], { cwd: pkg, env: { ...userEnv, PATH: '/nonexistent' } });
    assert.match(r.stderr, /native chunker not built .*the TypeScript chunker will be used/);
  });

  it('runs `xfer --version` and a push from the installed files alone', async () => {
    const bin = join(pkg, 'dist', 'src', 'cli', 'bin.js');
    const version = await run(process.execPath, [bin, '--version']);
    assert.equal(version.stdout.trim(), JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')).version);
    // A push uses the scan workers (their entry file) and every layer below the CLI.
    const src = join(dir, 'data.bin');
    await writeFile(src, Buffer.alloc(300_000, 7));
    const pushed = await run(process.execPath, [bin, 'push', src, join(dir, 'backup/'), '--json']);
    assert.equal(JSON.parse(pushed.stdout).bytesTotal, 300_000);
    const chunked = await run(process.execPath, [bin, 'chunk', src, '--json']);
    assert.equal(JSON.parse(chunked.stdout).chunker, 'typescript', 'no native build in the tarball: the fallback is used');
  });
});
