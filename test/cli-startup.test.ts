import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { BIN, runCli } from './helpers/cli.js';
import { INLINE_SCAN_BYTES } from '../src/scan/pool.js';
import { pseudoRandom } from './helpers/gen.js';
import { usableAddon, usableAddonError } from '../src/native/addon.js';
import { startServeProcess } from './helpers/server.js';

/**
 * Module resolution hooks (node:module register) that append every module URL the process
 * resolves to the file named by XFER_TEST_MODULE_LOG: what a command line loads.
 */
const HOOKS = `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  appendFileSync(process.env.XFER_TEST_MODULE_LOG, r.url + '\\n');
  return r;
}
`;

/**
 * Preloaded with the hooks, in every thread: every worker thread the process starts
 * (through worker_threads.Worker, as the scan pool's Piscina does) adds a line
 * `worker-thread` to the same log, when it is made (a thread ended before it ran anything
 * still counts); every require() adds `require[<threadId>]:<request>` (CommonJS loads
 * that the resolve hook does not see, as hash/digest.ts's of @napi-rs/blake-hash; the
 * main thread is 0).
 */
const COUNT_THREADS = `import { appendFileSync } from 'node:fs';
import Module from 'node:module';
import threads from 'node:worker_threads';
const load = Module._load;
Module._load = function (request, ...rest) {
  appendFileSync(process.env.XFER_TEST_MODULE_LOG, 'require[' + threads.threadId + ']:' + request + '\\n');
  return load.call(this, request, ...rest);
};
const Worker = threads.Worker;
threads.Worker = class extends Worker {
  constructor(...args) {
    super(...args);
    appendFileSync(process.env.XFER_TEST_MODULE_LOG, 'worker-thread\\n');
  }
};
`;

/** Modules only commands that move or serve data need: the library, the HTTP client and server, the logger, the worker pool, hashing. */
const HEAVY = /\/node_modules\/(undici|pino|piscina|@napi-rs|xxhash-wasm)\/|\/dist\/src\/(api|index)\.js$|\/dist\/src\/(server|store|scan|transfer|reconstruct|manifest|endpoint|chunker|hash)\/|\/dist\/src\/cli\/(chunk|push|pull|verify|manifest|serve|ls)\.js$/;

describe('the CLI loads only what its command line needs', () => {
  let dir: string;
  let register: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-startup-'));
    await writeFile(join(dir, 'hooks.mjs'), HOOKS);
    register = join(dir, 'register.mjs');
    await writeFile(register, `import { register } from 'node:module';\n${COUNT_THREADS}register(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)});\n`);
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Runs the CLI with `args`; its exit code, stdout and every module URL it resolved (and `worker-thread` per thread started). */
  async function loaded(args: string[]): Promise<{ code: number | null; stdout: string; modules: string[] }> {
    const log = join(dir, `modules-${args.join('_').replace(/\W/g, '')}.log`);
    const r = spawnSync(process.execPath, ['--import', register, BIN, ...args], { encoding: 'utf8', env: { ...process.env, XFER_TEST_MODULE_LOG: log } });
    const modules = (await readFile(log, 'utf8').catch(() => '')).split('\n').filter((u) => u !== '');
    return { code: r.status, stdout: r.stdout, modules };
  }

  it('xfer --version loads no command module, library module or heavy dependency (issue 13: under 0.3 s)', async () => {
    const r = await loaded(['--version']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^\d+\.\d+\.\d+\n$/);
    assert.ok(r.modules.some((u) => u.endsWith('/dist/src/cli/main.js')), `the hooks saw the CLI load: ${r.modules.join(' ')}`);
    assert.deepEqual(r.modules.filter((u) => HEAVY.test(u)), []);
  });

  it('a pull that finds every file up to date starts no worker thread (it has nothing to scan)', async () => {
    const src = join(dir, 'tree');
    await mkdir(join(src, 'sub'), { recursive: true });
    for (const [i, name] of ['a.bin', 'sub/b.bin', 'sub/c.bin'].entries()) await writeFile(join(src, name), pseudoRandom(50_000, 60 + i));
    const backup = join(dir, 'backup');
    const out = join(dir, 'out');
    assert.equal((await runCli(['push', src, `${backup}/`])).code, 0);
    assert.equal((await runCli(['pull', join(backup, 'tree'), `${out}/`])).code, 0);
    const again = await loaded(['pull', join(backup, 'tree'), `${out}/`, '--json']);
    assert.equal(again.code, 0);
    assert.equal(JSON.parse(again.stdout).bytesReceived, 0);
    assert.ok(again.modules.some((u) => u.endsWith('/dist/src/api.js')), 'the hooks saw the pull');
    assert.deepEqual(again.modules.filter((u) => u === 'worker-thread'), [], 'no worker thread was started');
  });

  it('a local push loads none of the pull\'s, the server\'s, the HTTP or S3 client\'s modules; a small one starts no thread, and no thread loads @napi-rs/blake-hash (the addon hashes; issue 15)', async (t) => {
    const file = join(dir, 'small.bin');
    await writeFile(file, pseudoRandom(100_000, 71));
    const r = await loaded(['push', '-q', file, `${join(dir, 'pushed')}/`]);
    assert.equal(r.code, 0);
    assert.ok(r.modules.some((u) => u.endsWith('/dist/src/transfer/push.js')), 'the hooks saw the push');
    const notNeeded = /\/node_modules\/(undici|pino|@aws-sdk)\/|\/dist\/src\/(server|store\/s3\/index|store\/http\/store|reconstruct\/(fallback|in-place|prefetch|snapshot)|pull-snapshot|transfer\/verify|endpoint\/(store|http))\.?/;
    assert.deepEqual(r.modules.filter((u) => notNeeded.test(u)), []);
    // Within the scan pool's inline budget: scanned on the main thread, no thread booted.
    assert.deepEqual(r.modules.filter((u) => u === 'worker-thread'), [], 'no worker thread was started');
    // Beyond it, the scan threads start (the hooks see them) and hash with the addon too.
    const large = join(dir, 'large.bin');
    await writeFile(large, pseudoRandom(INLINE_SCAN_BYTES + 1024 * 1024, 72));
    const big = await loaded(['push', '-q', large, `${join(dir, 'pushed')}/`]);
    assert.equal(big.code, 0);
    assert.ok(big.modules.includes('worker-thread'), 'the hooks saw the scan threads start');
    assert.ok(big.modules.some((u) => /^require\[[1-9]\d*\]:/.test(u)), 'the hooks saw what the threads require');
    if (!usableAddon()) {
      t.diagnostic(`no native addon (${usableAddonError()}): the threads may hash with @napi-rs/blake-hash, not checked`);
      return;
    }
    for (const m of [r.modules, big.modules]) assert.deepEqual(m.filter((u) => /^require\[\d+\]:@napi-rs\/blake-hash$/.test(u)), []);
  });

  it('a pull from a server loads neither the local store nor the push side (28 modules, about 25 ms of a no-op pull\'s start-up; issue 15)', async () => {
    const file = join(dir, 'served.bin');
    await writeFile(file, pseudoRandom(200_000, 73));
    const server = await startServeProcess(['--root', join(dir, 'serve-root'), '--port', '0', '--quiet']);
    try {
      assert.equal((await runCli(['push', '-q', file, `${server.url}/served.bin`])).code, 0);
      const r = await loaded(['pull', `${server.url}/served.bin`, join(dir, 'pulled.bin'), '--json']);
      assert.equal(r.code, 0);
      assert.ok(r.modules.some((u) => u.endsWith('/dist/src/reconstruct/reconstruct.js')), 'the hooks saw the pull');
      const notNeeded = /\/dist\/src\/(store\/local|endpoint\/local|transfer\/(push|dry-run))[./]/;
      assert.deepEqual(r.modules.filter((u) => notNeeded.test(u)), []);
    } finally {
      await server.stop();
    }
  });

  it('xfer pull loads neither the server nor its logger, nor other commands\' modules', async () => {
    const r = await loaded(['pull', '--help']);
    assert.equal(r.code, 0);
    assert.ok(r.modules.some((u) => u.endsWith('/dist/src/cli/pull.js')), 'pull\'s own module is loaded');
    assert.deepEqual(r.modules.filter((u) => /\/node_modules\/pino\/|\/dist\/src\/server\/|\/dist\/src\/cli\/(chunk|push|verify|manifest|serve|ls)\.js$/.test(u)), []);
  });
});
