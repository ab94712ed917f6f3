import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EXIT_CODES } from '../src/core/errors.js';
import { diskImage, dicomSeries, readAll } from '../fixtures/index.js';

const CLI = fileURLToPath(new URL('../fixtures/cli.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function run(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
  });
}

describe('fixtures command line', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'xfer-fixtures-cli-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("disk-image to '-' writes the API's bytes to stdout and a JSON summary with the edit list to stderr", async () => {
    const r = await run(['disk-image', '256K', '-', '--seed', '3', '--version', 'insert']);
    assert.equal(r.code, 0, r.stderr);
    const image = diskImage({ sizeBytes: 256 * 1024, seed: 3, version: 'insert' });
    assert.ok(r.stdout.equals(readAll(image.stream())));
    const summary = JSON.parse(r.stderr) as { kind: string; bytes: number; edits: unknown };
    assert.equal(summary.kind, 'disk-image');
    assert.equal(summary.bytes, image.sizeBytes);
    assert.deepEqual(summary.edits, image.edits);
  });

  it('dicom-series writes the files into a directory; --count wins over the size', async () => {
    const out = join(dir, 'series');
    const r = await run(['dicom-series', '1G', out, '--count', '2', '--version', 'anonymized']);
    assert.equal(r.code, 0, r.stderr);
    const series = dicomSeries({ seed: 1, count: 2, version: 'anonymized' });
    assert.deepEqual((await readdir(out)).sort(), [...series.files()].map((f) => f.name));
  });

  it('mistakes exit with the invalid-argument code and one line naming the problem', async () => {
    for (const args of [['disk-image', '12Q', '-'], ['volume', '1M', '-'], ['tree', '1M', '-'], ['disk-image', '1M', '-', '--version', 'x'], ['disk-image', '1M']]) {
      const r = await run(args);
      assert.equal(r.code, EXIT_CODES.XFER_INVALID_ARGUMENT, args.join(' '));
      assert.match(r.stderr, /^fixtures: /);
      assert.equal(r.stdout.length, 0);
    }
  });
});
