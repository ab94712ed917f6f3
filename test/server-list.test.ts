import { strict as assert } from 'node:assert';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCli } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { useServer } from './helpers/server.js';

describe('listing a server with a damaged manifest', () => {
  const fx = useServer('xfer-list-');

  it('lists the others and reports that one as damaged, in JSON and in text', async () => {
    for (const name of ['good.bin', 'bad.bin']) {
      await writeFile(join(fx.dir, name), pseudoRandom(50_000, name.length));
      const p = await runCli(['push', join(fx.dir, name), `${fx.server.url}/${name}`]);
      assert.equal(p.code, 0, p.stderr);
    }
    await writeFile(join(fx.root, 'store', 'manifests', 'bad.bin'), 'not a manifest at all');

    const json = await runCli(['ls', `${fx.server.url}/`, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const entries = (JSON.parse(json.stdout) as { entries: { path: string; kind: string; bytes: number; error?: string }[] }).entries;
    const byPath = new Map(entries.map((e) => [e.path, e]));
    assert.equal(byPath.get('good.bin')?.kind, 'file');
    assert.equal(byPath.get('good.bin')?.bytes, 50_000);
    assert.equal(byPath.get('bad.bin')?.kind, 'damaged');
    assert.match(byPath.get('bad.bin')?.error ?? '', /\S/);
    assert.ok(!(byPath.get('bad.bin')?.error ?? '').includes(fx.root), 'the reason does not name the server root');

    const text = await runCli(['ls', `${fx.server.url}/`]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^file .* good\.bin$/m);
    assert.match(text.stdout, /^damaged .* bad\.bin {2}\(.+\)$/m);
  });
});
