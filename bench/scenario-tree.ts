/**
 * Scenario f (a tree with a few changes), and the machinery it shares with scenario e
 * (bench/scenario-dicom.ts): copying the versions of one input, a directory or a file,
 * with every tool.
 *
 * The first version is copied into an empty destination; each later version is copied onto
 * a destination that holds the first. Each tool's destination after its last first-copy run
 * is kept as that tool's "original" template, and every later run starts from a `cp -a` of
 * it (untimed), so each run sees exactly the same state and no run inherits another's
 * chunks.
 *
 * Every version lives at its own path (with the same base name), so no tool can skip a file
 * by its metadata: restic finds no parent snapshot for the path, borg's files cache has no
 * entry for it, and rsync runs with --ignore-times and xfer with --checksum (unchanged files
 * keep their size and modification time across versions, see BASE_MTIME_SECONDS, so their
 * quick checks would skip them). All of them compare content: what is timed is
 * content-defined (or rsync's rolling) delta transfer, the same work for everyone.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { tree, TREE_VERSIONS, writeTree, type TreeChanges, type TreeOptions, type TreeVersion } from '../fixtures/index.js';
import {
  alternate,
  duBytes,
  PEER_ENV,
  rsyncLiteral,
  startRsyncd,
  startServe,
  stoppingServers,
  stop,
  warm,
  XFER,
  xferSent,
  type Contender,
  type MacroRow,
  type ScenarioOptions,
  type Served,
} from './harness.js';
import type { Run } from './measure.js';

export type VersionScenarioOptions = ScenarioOptions & { readonly remote: boolean };

/** One version of an input: where it is and which scenario copying it makes. */
export interface InputVersion {
  /** Scenario name suffix: 'original', 'anonymized', 'first copy', ... */
  readonly step: string;
  /** The fixture version, also naming the casync index and borg archive: 'base', 'changed', ... */
  readonly id: string;
  /** Absolute path of this version; its base name is the input's `name`. */
  readonly path: string;
  /** Logical bytes of this version (what MB/s is computed from). */
  readonly bytes: number;
}

/** An input with its versions: versions[0] is the original, copied first into an empty destination. */
export interface VersionedInput {
  /** Scenario name prefix: 'dicom series', 'tree', ... */
  readonly label: string;
  /** Base name of every version's path, and of the target in every destination. */
  readonly name: string;
  readonly isDir: boolean;
  readonly versions: readonly [InputVersion, ...InputVersion[]];
}

type Command = [string, string[], NodeJS.ProcessEnv?];

/** One copy a tool is asked to time. */
interface Copy {
  readonly input: VersionedInput;
  readonly version: InputVersion;
  /** The tool's destination directory (a local target's parent, a server root, a repository...). */
  readonly dir: string;
  /** The URL of the tool's server, for tools that copy over loopback. */
  readonly url: string | undefined;
  /** True when the destination already holds the original. */
  readonly update: boolean;
}

/** What a run sent: read from its output, or the growth of a store inside the destination. */
type SentMeasure = { readonly fromOutput: (run: Run) => number } | { readonly storeGrowth: (dir: string) => string };

/** How one tool copies into its kind of destination. */
interface Tool {
  readonly name: string;
  /** File-name-safe name of its destination directory. */
  readonly slug: string;
  readonly sentLabel: string;
  readonly sent: SentMeasure;
  /** Makes the absent directory `dir` an empty destination. Untimed, once per input. */
  init(dir: string): Promise<void>;
  /** Starts the server that receives into `dir`, for tools that copy over loopback. */
  serve?(dir: string): Promise<Served>;
  command(c: Copy): Command;
}

/** Runs an untimed setup command; throws with its stderr if it fails. */
function mustRun(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): void {
  const r = spawnSync(cmd, args, { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${(r.stderr ?? r.error?.message ?? '').trim()}`);
}

const makeDir = async (dir: string): Promise<void> => {
  await mkdir(dir, { recursive: true });
};

const XFER_SENT: SentMeasure = { fromOutput: xferSent };
const XFER_SENT_LABEL = 'chunk bytes sent';
const STORE_GROWTH_LABEL = 'store growth';

const xferLocal: Tool = {
  name: 'xfer push (local)',
  slug: 'xfer-local',
  sentLabel: XFER_SENT_LABEL,
  sent: XFER_SENT,
  init: makeDir,
  command: (c) => [process.execPath, [XFER, 'push', c.version.path, `${c.dir}/`, '--json', ...(c.update ? ['--checksum'] : [])]],
};

const xferServe: Tool = {
  name: 'xfer push -> xfer serve',
  slug: 'xfer-serve',
  sentLabel: XFER_SENT_LABEL,
  sent: XFER_SENT,
  init: makeDir,
  serve: startServe,
  // Into the root under the source's name, as the local push: `<url>/<name>` would mean
  // "inside <name>" once a tree of that name exists (cp semantics).
  command: (c) => [process.execPath, [XFER, 'push', c.version.path, `${c.url}/`, '--json', ...(c.update ? ['--checksum'] : [])]],
};

/**
 * A directory is copied as its contents into `<module>/<name>/` (the same kind of target as
 * xfer's), mirroring removals; onto the original, with delta transfer and no quick check.
 */
const rsyncDaemon: Tool = {
  name: 'rsync -> rsync daemon',
  slug: 'rsync',
  sentLabel: 'literal data',
  sent: { fromOutput: (run) => rsyncLiteral(run.stdout) },
  init: makeDir,
  serve: startRsyncd,
  command: (c) => {
    const [from, to] = c.input.isDir ? [`${c.version.path}/`, `${c.url}/${c.input.name}/`] : [c.version.path, `${c.url}/${c.input.name}`];
    const flags = ['-a', '--stats', ...(c.input.isDir ? ['--delete'] : []), ...(c.update ? ['--no-whole-file', '--ignore-times'] : [])];
    return ['rsync', [...flags, from, to]];
  },
};

/** One store per destination; each version gets its own index (.caidx for a tree, .caibx for a file). */
const casync: Tool = {
  name: 'casync make',
  slug: 'casync',
  sentLabel: STORE_GROWTH_LABEL,
  sent: { storeGrowth: (dir) => dir },
  init: makeDir,
  command: (c) => ['casync', ['make', `--store=${join(c.dir, 'store')}`, join(c.dir, `${c.version.id}.${c.input.isDir ? 'caidx' : 'caibx'}`), c.version.path]],
};

const restic: Tool = {
  name: 'restic backup',
  slug: 'restic',
  sentLabel: STORE_GROWTH_LABEL,
  sent: { storeGrowth: (dir) => dir },
  init: async (dir) => mustRun('restic', ['init', '--repo', dir, '--no-cache'], PEER_ENV),
  command: (c) => ['restic', ['backup', '--repo', c.dir, '--no-cache', '--quiet', c.version.path], PEER_ENV],
};

/**
 * borg keeps its chunks cache and security records outside the repository (by repository
 * id, which every copy of a template shares); BORG_BASE_DIR puts them inside the
 * destination, so the template carries the cache of the backup that made it, as a real
 * client would have it.
 */
const borgEnv = (dir: string): NodeJS.ProcessEnv => ({ ...PEER_ENV, BORG_BASE_DIR: join(dir, 'home') });
const borgRepo = (dir: string): string => join(dir, 'repo');
const borg: Tool = {
  name: 'borg create',
  slug: 'borg',
  sentLabel: STORE_GROWTH_LABEL,
  sent: { storeGrowth: borgRepo },
  init: async (dir) => {
    await makeDir(dir);
    mustRun('borg', ['init', '--encryption', 'none', borgRepo(dir)], borgEnv(dir));
  },
  command: (c) => ['borg', ['create', '--compression', 'none', `${borgRepo(c.dir)}::${c.version.id}`, c.version.path], borgEnv(c.dir)],
};

/** The tools of a version scenario, xfer first: local ones always, loopback ones when `o.remote`. */
function toolsFor(o: VersionScenarioOptions): Tool[] {
  const peers = [casync, restic, borg].filter((t) => o.tools.has(t.slug));
  const loopback = o.remote ? [xferServe, ...(o.tools.has('rsync') ? [rsyncDaemon] : [])] : [];
  return [xferLocal, ...loopback, ...peers];
}

type Template = 'empty' | 'original';

/** One tool's destination for one input, reset from a template before every run. */
class Lane {
  private readonly dest: string;
  private server: Served | undefined;
  private storeBytesBefore = 0;

  constructor(
    readonly tool: Tool,
    private readonly root: string,
  ) {
    this.dest = join(root, 'dest');
  }

  private template(t: Template): string {
    return join(this.root, t);
  }

  /** Builds the empty template. Untimed. */
  async init(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
    await mkdir(this.root, { recursive: true });
    await this.tool.init(this.template('empty'));
  }

  /**
   * Untimed: the destination becomes a copy of template `t`, flushed to disk (so no
   * write-back of the copy runs into the timed command), with its server running and
   * `input` in the page cache.
   */
  async reset(t: Template, input: string): Promise<void> {
    await this.stopServer();
    await rm(this.dest, { recursive: true, force: true });
    mustRun('cp', ['-a', this.template(t), this.dest]);
    mustRun('sync', []);
    if ('storeGrowth' in this.tool.sent) this.storeBytesBefore = duBytes(this.tool.sent.storeGrowth(this.dest));
    if (this.tool.serve) this.server = await this.tool.serve(this.dest);
    warm(input);
  }

  contender(input: VersionedInput, version: InputVersion, from: Template): Contender {
    const { tool } = this;
    return {
      tool: tool.name,
      sentLabel: tool.sentLabel,
      prepare: () => this.reset(from, version.path),
      command: () => tool.command({ input, version, dir: this.dest, url: this.server?.url, update: from === 'original' }),
      sent: (run) => ('fromOutput' in tool.sent ? tool.sent.fromOutput(run) : duBytes(tool.sent.storeGrowth(this.dest)) - this.storeBytesBefore),
    };
  }

  /** Keeps the destination as it is now (holding the original) as the 'original' template. */
  async keepAsOriginal(): Promise<void> {
    await this.stopServer();
    await rename(this.dest, this.template('original'));
  }

  /** Stops the destination's server, if one is running. */
  async stopServer(): Promise<void> {
    if (this.server) await stop(this.server.child);
    this.server = undefined;
  }
}

/**
 * Copies every version of `input` with every tool, runs alternating, one row per
 * (version, tool): `<label>: <step>`. The destinations live in `destDir`, which is removed
 * at the end, also on failure.
 */
export function copyVersions(o: VersionScenarioOptions, input: VersionedInput, destDir: string): Promise<MacroRow[]> {
  return stoppingServers(() => copyEachVersion(o, input, destDir));
}

async function copyEachVersion(o: VersionScenarioOptions, input: VersionedInput, destDir: string): Promise<MacroRow[]> {
  const lanes = toolsFor(o).map((t) => new Lane(t, join(destDir, t.slug)));
  const rows: MacroRow[] = [];
  const step = async (version: InputVersion, from: Template): Promise<void> => {
    const scenario = `${input.label}: ${version.step}`;
    o.log(`${scenario} (${(version.bytes / 1e6).toFixed(1)} MB, ${from === 'empty' ? 'into an empty destination' : `onto the ${input.versions[0].step}`})`);
    const contenders = lanes.map((l) => l.contender(input, version, from));
    rows.push(...(await alternate(scenario, contenders, o.runs, version.bytes, o.log)));
  };
  try {
    for (const l of lanes) await l.init();
    const [original, ...later] = input.versions;
    await step(original, 'empty');
    for (const l of lanes) await l.keepAsOriginal();
    for (const v of later) await step(v, 'original');
  } finally {
    for (const l of lanes) await l.stopServer();
    await rm(destDir, { recursive: true, force: true });
  }
  return rows;
}

/**
 * Generated inputs get fixed modification times, as if each later version had been edited
 * in place after the original: every entry of an original has BASE_MTIME_SECONDS, and what
 * a later version changed has CHANGED_MTIME_SECONDS (setMtime). Versions written at
 * different moments would otherwise differ in every entry's metadata, which penalises the
 * tools that put metadata into their chunk stream (casync) for no reason a real tree has.
 */
export const BASE_MTIME_SECONDS = Date.UTC(2026, 0, 1) / 1000;
export const CHANGED_MTIME_SECONDS = BASE_MTIME_SECONDS + 86_400;

/** Sets the modification time of each path and, when `recursive`, of everything under it. */
export function setMtime(paths: readonly string[], seconds: number, recursive = false): void {
  const date = `@${seconds}`;
  if (recursive) mustRun('find', [...paths, '-exec', 'touch', '-h', '-d', date, '{}', '+']);
  else if (paths.length) mustRun('touch', ['-h', '-d', date, ...paths]);
}

/**
 * Makes `dir` hold the inputs `generate` writes for `options` (with the modification times
 * above): reused when its marker records the same, otherwise emptied and generated again.
 * The marker is written last, so an interrupted generation is redone.
 */
export async function ensureInputs(dir: string, options: object, generate: (dir: string) => Promise<void>, log: (s: string) => void): Promise<void> {
  const marker = join(dir, 'options.json');
  const wanted = JSON.stringify({ ...options, mtimes: [BASE_MTIME_SECONDS, CHANGED_MTIME_SECONDS] });
  if ((await readFile(marker, 'utf8').catch(() => '')) === wanted) return;
  log(`generating ${dir} (${wanted})`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await generate(dir);
  await writeFile(marker, wanted);
}

/** Seed of the generated tree (any fixed value: runs must see the same bytes). */
const TREE_SEED = 2026;
/** Base name of the tree in every version and destination. */
const TREE_NAME = 'tree';
/** Scenario step of each tree version. */
const TREE_STEPS: Readonly<Record<TreeVersion, string>> = { base: 'first copy', changed: 'few changes' };

/** What editing the tree in place would have touched: added and modified files, and the directories that gained or lost a file. */
function changedPaths(root: string, c: TreeChanges): string[] {
  const files = [...c.added, ...c.modified].map((p) => join(root, p));
  const dirs = new Set([...c.added, ...c.removed].map((p) => dirname(join(root, p))));
  return [...files, ...dirs];
}

/** The generated tree inputs of o.sizeBytes (every version), made once and reused; each version's InputVersion. */
async function treeInputs(o: ScenarioOptions): Promise<(v: TreeVersion) => InputVersion> {
  const inputs = join(o.work, 'tree', 'inputs');
  const options: TreeOptions = { sizeBytes: o.sizeBytes, seed: TREE_SEED };
  const path = (v: TreeVersion) => join(inputs, v, TREE_NAME);
  await ensureInputs(inputs, options, async () => {
    for (const v of TREE_VERSIONS) {
      const written = await writeTree(path(v), { ...options, version: v });
      setMtime([path(v)], BASE_MTIME_SECONDS, true);
      setMtime(changedPaths(path(v), written.changes), CHANGED_MTIME_SECONDS);
    }
  }, o.log);
  return (v) => ({ step: TREE_STEPS[v], id: v, path: path(v), bytes: tree({ ...options, version: v }).totalBytes });
}

/** Scenario f: a tree of o.sizeBytes (many small files, some large), first copy and a few changes. */
export async function runTree(o: VersionScenarioOptions): Promise<MacroRow[]> {
  const version = await treeInputs(o);
  return copyVersions(o, { label: 'tree', name: TREE_NAME, isDir: true, versions: [version('base'), version('changed')] }, join(o.work, 'tree', 'dest'));
}

/** Inode number of every entry under `dir`, by path: a rewritten (replaced) file gets a new one. */
function inodes(dir: string): Map<string, string> {
  const r = spawnSync('find', [dir, '-mindepth', '1', '-printf', '%i %P\\n'], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`find ${dir}: ${r.stderr}`);
  const out = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const space = line.indexOf(' ');
    if (space > 0) out.set(line.slice(space + 1), line.slice(0, space));
  }
  return out;
}

/** Paths of `before` whose entry is gone or has another inode in `after`. */
function replaced(before: Map<string, string>, after: Map<string, string>): string[] {
  return [...before].filter(([path, ino]) => after.get(path) !== ino).map(([path]) => path);
}

/**
 * Scenario g: the base tree (7,643 files at --size 256M) pulled a second time, unchanged,
 * onto the copy the first pull made: `xfer pull` from `xfer serve` against `rsync -a` from
 * an rsync daemon, alternating, each onto its own first copy. The bar (issue 13): xfer
 * receives 0 bytes, rewrites no file (every inode stays), and takes at most 1.5x rsync's
 * wall time. Every xfer run is checked: one that receives bytes or replaces an entry
 * throws, naming what it replaced, since its time would not be that of a no-op.
 */
export function runTreePullUnchanged(o: ScenarioOptions): Promise<MacroRow[]> {
  return stoppingServers(() => pullUnchanged(o));
}

async function pullUnchanged(o: ScenarioOptions): Promise<MacroRow[]> {
  const input = (await treeInputs(o))('base');
  const dir = join(o.work, 'tree', 'pull-unchanged');
  await rm(dir, { recursive: true, force: true });
  const xferDest = join(dir, 'xfer-dest');
  const rsyncDest = join(dir, 'rsync-dest');
  const served: Served[] = [];
  try {
    const xs = await startServe(join(dir, 'serve-root'));
    served.push(xs);
    mustRun(process.execPath, [XFER, 'push', input.path, `${xs.url}/`, '--quiet']);
    const xferArgs = ['pull', `${xs.url}/${TREE_NAME}`, `${xferDest}/`, '--json'];
    mustRun(process.execPath, [XFER, ...xferArgs.slice(0, -1), '--quiet']);
    const contenders: Contender[] = [];
    let before = new Map<string, string>();
    contenders.push({
      tool: 'xfer pull <- xfer serve',
      sentLabel: 'bytes received',
      prepare: async () => {
        warm(join(xferDest, TREE_NAME));
        before = inodes(join(xferDest, TREE_NAME));
      },
      command: () => [process.execPath, [XFER, ...xferArgs]],
      sent: (run) => {
        const received = xferSent(run);
        const gone = replaced(before, inodes(join(xferDest, TREE_NAME)));
        if (received !== 0 || gone.length) throw new Error(`the unchanged pull received ${received} bytes and replaced ${gone.length} of ${before.size} entries (${gone.slice(0, 5).join(', ')})`);
        return received;
      },
    });
    if (o.tools.has('rsync')) {
      const rd = await startRsyncd(join(dir, 'rsyncd'));
      served.push(rd);
      mustRun('cp', ['-a', input.path, join(dir, 'rsyncd', 'module', TREE_NAME)]);
      const rsyncArgs = ['-a', '--stats', `${rd.url}/${TREE_NAME}/`, `${join(rsyncDest, TREE_NAME)}/`];
      await mkdir(rsyncDest, { recursive: true });
      mustRun('rsync', rsyncArgs);
      contenders.push({
        tool: 'rsync -a <- rsync daemon',
        sentLabel: 'literal data',
        prepare: async () => warm(join(rsyncDest, TREE_NAME)),
        command: () => ['rsync', rsyncArgs],
        sent: (run) => rsyncLiteral(run.stdout),
      });
    }
    o.log(`tree: pull unchanged (${(input.bytes / 1e6).toFixed(1)} MB, onto the first pull's copy)`);
    return await alternate('tree: pull unchanged', contenders, o.runs, input.bytes, o.log);
  } finally {
    for (const s of served) await stop(s.child);
    await rm(dir, { recursive: true, force: true });
  }
}
