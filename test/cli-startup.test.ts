import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { BIN } from './helpers/cli.js';

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

/** Modules only commands that move or serve data need: the library, the HTTP client and server, the logger, the worker pool, hashing. */
const HEAVY = /\/node_modules\/(undici|pino|piscina|@napi-rs|xxhash-wasm)\/|\/dist\/src\/(api|index)\.js$|\/dist\/src\/(server|store|scan|transfer|reconstruct|manifest|endpoint|chunker|hash)\/|\/dist\/src\/cli\/(chunk|push|pull|verify|manifest|serve|ls)\.js$/;

describe('the CLI loads only what its command line needs', () => {
  let dir: string;
  let register: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-startup-'));
    await writeFile(join(dir, 'hooks.mjs'), HOOKS);
    register = join(dir, 'register.mjs');
    await writeFile(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)});\n`);
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Runs the CLI with `args`; its exit code, stdout and every module URL it resolved. */
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

  it('xfer pull loads neither the server nor its logger, nor other commands\' modules', async () => {
    const r = await loaded(['pull', '--help']);
    assert.equal(r.code, 0);
    assert.ok(r.modules.some((u) => u.endsWith('/dist/src/cli/pull.js')), 'pull\'s own module is loaded');
    assert.deepEqual(r.modules.filter((u) => /\/node_modules\/pino\/|\/dist\/src\/server\/|\/dist\/src\/cli\/(chunk|push|verify|manifest|serve|ls)\.js$/.test(u)), []);
  });
});
