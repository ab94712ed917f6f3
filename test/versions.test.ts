/*
 * Versions (issue 16 item 3): every commit of a target keeps the previous manifests as
 * versions, on every kind of store: a local destination, a server, S3 (moto) and a store
 * object. Each is pushed three times; `ls --versions` lists three, the newest current, and
 * each version comes back bit-identical by its id and by a time (`<target>@<...>`).
 */
import { strict as assert } from 'node:assert';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { list, MemoryStore, pull, push, versions } from '../src/index.js';
import { runCli, type CliResult } from './helpers/cli.js';
import { pseudoRandom } from './helpers/gen.js';
import { motoMissing, useS3Service } from './helpers/s3.js';
import { useServer } from './helpers/server.js';

const KiB = 1024;
/** Three contents of one target: the second and third edit the first. */
const CONTENTS = [pseudoRandom(200 * KiB, 31), Buffer.concat([pseudoRandom(200 * KiB, 31), pseudoRandom(20 * KiB, 32)]), pseudoRandom(150 * KiB, 33)];

interface Listed {
  target: string;
  versions: { id: string; time: string; kind: string; bytes: number; digest: string; current: boolean }[];
}

/**
 * Pushes CONTENTS one after the other to `target` (a location naming the target), then
 * checks the versions (and that a listing of the store at `root` hides them) and pulls each back by id and by time (`<target>@<...>`, as the
 * library takes it). `xfer` runs the CLI with the location's options (ls --versions, and a
 * pull by time), `options` are the library's.
 */
async function threeVersions(dir: string, root: string, target: string, options: { s3Endpoint?: string; s3PathStyle?: boolean }, xfer: (...args: string[]) => Promise<CliResult>): Promise<void> {
  const source = join(dir, 'data.bin');
  const committedBy: number[] = [];
  for (const content of CONTENTS) {
    await writeFile(source, content);
    await push(source, target, options);
    committedBy.push(Date.now());
    await sleep(5); // the next commit's time is later than this one's committedBy
  }
  const r = await xfer('ls', '--versions', target, '--json');
  assert.equal(r.code, 0, r.stderr);
  const listed = JSON.parse(r.stdout) as Listed;
  assert.equal(listed.versions.length, 3);
  assert.deepEqual(listed.versions.map((v) => v.bytes), CONTENTS.map((c) => c.length));
  assert.deepEqual(listed.versions.map((v) => v.current), [false, false, true]);
  for (const v of listed.versions) assert.match(v.id, new RegExp(`^${v.time.replace(/[.]/g, '\\.')}-${v.digest.slice(0, 8)}$`));

  // The namespace is not a target: the listing of the whole store shows the target once.
  assert.deepEqual((await list(root, options)).map((e) => e.path.split('/').pop()), ['data.bin']);

  for (let i = 0; i < 3; i++) {
    const byId = join(dir, `by-id-${i}.bin`);
    await pull(`${target}@${listed.versions[i]!.id}`, byId, options);
    assert.ok((await readFile(byId)).equals(CONTENTS[i]!), `version ${i} by id`);
    const byTime = join(dir, `by-time-${i}.bin`);
    await pull(`${target}@${new Date(committedBy[i]!).toISOString()}`, byTime, options);
    assert.ok((await readFile(byTime)).equals(CONTENTS[i]!), `version ${i} by time`);
  }
  const p = await xfer('pull', `${target}@${new Date(committedBy[0]!).toISOString()}`, join(dir, 'cli.bin'), '--quiet');
  assert.equal(p.code, 0, p.stderr);
  assert.ok((await readFile(join(dir, 'cli.bin'))).equals(CONTENTS[0]!));
  // Before the first version: nothing to pull, said in one line.
  await assert.rejects(pull(`${target}@2000-01-01`, join(dir, 'none.bin'), options), /no version at or before 2000-01-01T23:59:59\.999Z \(the oldest is /);
}

describe('versions on a local destination', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-versions-local-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('three pushes keep three versions; each pulls back bit-identical by id and by time', async () => {
    await threeVersions(dir, join(dir, 'dest'), join(dir, 'dest', 'data.bin'), {}, (...args) => runCli(args));
  });
});

describe('versions on a server', () => {
  const s = useServer('xfer-versions-server-');

  it('three pushes keep three versions; each pulls back bit-identical by id and by time', async () => {
    await threeVersions(s.dir, `${s.server.url}/`, `${s.server.url}/backups/data.bin`, {}, (...args) => runCli(args));
  });
});

describe('versions on S3', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-versions-s3-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('three pushes keep three versions; each pulls back bit-identical by id and by time', async () => {
    const env = { AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_REGION: 'us-east-1' };
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
    Object.assign(process.env, env);
    try {
      const xfer = (...args: string[]) => runCli([...args, '--s3-endpoint', f.service.endpoint!, '--s3-path-style'], { env });
      await threeVersions(dir, f.service.base, `${f.service.base}versions/data.bin`, { s3Endpoint: f.service.endpoint!, s3PathStyle: true }, xfer);
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

describe('versions in a store object', () => {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'xfer-versions-store-'))));
  after(async () => rm(dir, { recursive: true, force: true }));

  it('three pushes keep three versions, listed with every manifest; each pulls back by PullOptions.version', async () => {
    const store = new MemoryStore();
    const source = join(dir, 'data.bin');
    for (const content of CONTENTS) {
      await writeFile(source, content);
      await push(source, { store, path: 'data.bin' });
      await sleep(2);
    }
    const { versions: listed } = await versions({ store, path: 'data.bin' });
    assert.deepEqual(listed.map((v) => [v.bytes, v.current]), [[CONTENTS[0]!.length, false], [CONTENTS[1]!.length, false], [CONTENTS[2]!.length, true]]);
    // Every manifest, versions too, for gc; the target alone for users.
    assert.equal((await store.listManifests('')).length, 4);
    assert.deepEqual((await list(store)).map((e) => e.path), ['data.bin']);
    for (let i = 0; i < 3; i++) {
      const out = join(dir, `out-${i}.bin`);
      await pull({ store, path: 'data.bin' }, out, { version: listed[i]!.id });
      assert.ok((await readFile(out)).equals(CONTENTS[i]!));
    }
    await assert.rejects(pull({ store, path: 'data.bin' }, join(dir, 'x'), { version: 'last tuesday' }), /options\.version must be a version id or a UTC time/);
  });
});
