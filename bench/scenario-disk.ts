/**
 * Scenarios c and d on versions of the deterministic disk image (fixtures/disk-image.ts):
 *
 *   c  incremental copy: the destination holds only `base`; the timed command copies an
 *      edited version (scattered 4 KiB overwrites, an insertion, a deletion) into it.
 *   d  restore of `scattered` into an empty destination, and with `base` already there as seed.
 *
 * Contenders: xfer to a local destination (always), xfer serve and an rsync daemon over
 * loopback (with `remote`), casync, restic and borg stores (when installed). Every tool gets
 * the same input files, the same run count and the same preparation: before each timed run
 * its destination is rebuilt from scratch (untimed), dirty pages are flushed (`sync`) and
 * the files the run reads are put in the page cache (`warm`).
 *
 * Each tool's state after receiving `base` (a local destination, a server root, a store or
 * a repository) is built once and copied into the run's destination, rather than pushed
 * again every run. All runs share one scratch destination (Slot), so only one copy exists
 * at a time. Servers count only in the client's CPU and RSS (xfer serve and the rsync
 * daemon run outside /usr/bin/time), the same for both.
 *
 * Every output file a run leaves (rebuilt target, restored file) is compared with its input
 * after the run (untimed, `cmp`); a tool whose output differs is reported with
 * OUTPUT_DIFFERS appended to its name.
 */
import { execFile, spawnSync } from 'node:child_process';
import { copyFile, link, mkdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { MiB } from '../src/core/sizes.js';
import { DEFAULT_SCATTERED_COUNT, diskImage, writeStream, type DiskImageVersion } from '../fixtures/index.js';
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

export interface DiskScenarioOptions extends ScenarioOptions {
  readonly incremental: boolean;
  readonly restore: boolean;
  readonly remote: boolean;
}

/** Seed of every disk-image version (the fixtures CLI's default). */
const DISK_SEED = 1;
/** Every version is written as `<version>/disk.img`: every tool sees the same file name, and it is the target name everywhere. */
const IMAGE_NAME = 'disk.img';
/** Name of the copy of `base` given to seeded restores as a separate seed file. */
const SEED_NAME = 'base.img';
/** stdout kept from an untimed setup command (xfer --json, restic --quiet: small). */
const SETUP_MAX_BUFFER_BYTES = 16 * MiB;
/** Longest error message logged when a peer is dropped. */
const ERROR_LOG_CHARS = 400;
/** Appended to a tool's name when one of its runs left an output that differs from its input. */
const OUTPUT_DIFFERS = ' [OUTPUT DIFFERS]';

/** The edited versions of scenario c, in order, with their scenario names (kept <= 28 chars for the table). */
const EDITS: readonly { readonly version: DiskImageVersion; readonly scenario: string }[] = [
  { version: 'scattered', scenario: `incremental: ${DEFAULT_SCATTERED_COUNT} x 4K edits` },
  { version: 'insert', scenario: 'incremental: insertion' },
  { version: 'delete', scenario: 'incremental: deletion' },
];
/** The version scenario d restores; `base` is its seed. */
const RESTORED: DiskImageVersion = 'scattered';

const SCENARIO_RESTORE_EMPTY = 'restore: empty dest';
const SCENARIO_RESTORE_SEEDED = 'restore: base as seed';

const LABEL_PUSH = 'chunk bytes sent';
const LABEL_PULL = 'chunk bytes received';
const LABEL_RSYNC = 'literal data';

const execFileP = promisify(execFile);
type Command = [string, string[], NodeJS.ProcessEnv?];

// ---------------------------------------------------------------------------------------
// Untimed helpers

/** Runs an untimed setup command to completion; rejects (with its stderr) if it fails. */
async function setup([cmd, args, env]: Command): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { env: { ...process.env, ...env }, maxBuffer: SETUP_MAX_BUFFER_BYTES });
  return stdout;
}

const xfer = (...args: string[]): Command => [process.execPath, [XFER, ...args]];

/** Copies the contents of directory `from` into the existing directory `to`, keeping attributes. */
async function copyInto(from: string, to: string): Promise<void> {
  await setup(['cp', ['-a', '--reflink=auto', `${from}/.`, `${to}/`]]);
}

/** Flushes dirty pages (a previous copy's writeback must not land in a timed run), then caches what the run reads. */
function settle(...reads: string[]): void {
  spawnSync('sync');
  warm(...reads);
}

/** An error message (command, then its stderr) on one line, for the log. */
const oneLine = (message: string): string => message.trim().split('\n').filter(Boolean).join(' | ').slice(0, ERROR_LOG_CHARS);

/** True if the two files have identical bytes. */
async function sameBytes(a: string, b: string): Promise<boolean> {
  return execFileP('cmp', ['-s', a, b]).then(
    () => true,
    () => false,
  );
}

// ---------------------------------------------------------------------------------------
// Inputs

type Inputs = Partial<Record<DiskImageVersion, string>>;

/**
 * Writes one version to `<work>/disk/<size>/<version>/disk.img`, unless a file of the
 * version's size is already there (it was written through a rename, so it is complete).
 */
export async function writeVersion(o: ScenarioOptions, version: DiskImageVersion): Promise<string> {
  const image = diskImage({ sizeBytes: o.sizeBytes, seed: DISK_SEED, version });
  const path = resolve(o.work, 'disk', String(o.sizeBytes), version, IMAGE_NAME);
  if (await stat(path).then((s) => s.size === image.sizeBytes, () => false)) return path;
  o.log(`generating ${path}`);
  await mkdir(dirname(path), { recursive: true });
  await writeStream(image.stream(), `${path}.partial`);
  await rename(`${path}.partial`, path);
  return path;
}

const exists = (path: string): Promise<boolean> => stat(path).then(() => true, () => false);

function sizeOf(path: string): Promise<number> {
  return stat(path).then((s) => s.size);
}

// ---------------------------------------------------------------------------------------
// The shared scratch destination

/**
 * The one scratch destination every timed run writes into. Taking it ends the previous
 * occupant (its release hook stops its server and checks its output), then empties it:
 * only one tool's destination exists at a time, and each is checked right after its run.
 */
class Slot {
  private release: (() => Promise<void>) | undefined;

  constructor(readonly dir: string) {}

  async take(release: () => Promise<void>): Promise<string> {
    await this.vacate();
    await mkdir(this.dir, { recursive: true });
    this.release = release;
    return this.dir;
  }

  async vacate(): Promise<void> {
    const release = this.release;
    this.release = undefined;
    await release?.();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** What every builder needs: options, inputs, the base states, the slot, and the checks' verdicts. */
interface Bench {
  readonly o: DiskScenarioOptions;
  readonly inputs: Inputs;
  /** Each tool's state after receiving base, by tool key (only tools whose setup worked). */
  readonly states: Map<ToolKey, string>;
  readonly slot: Slot;
  /** Servers started for scenario d (stopped at the end). */
  readonly servers: Served[];
  /** Tools whose output differed in the scenario being measured. */
  readonly differs: Set<string>;
}

type ToolKey = 'xfer-local' | 'xfer-serve' | 'rsync' | 'casync' | 'restic' | 'borg';

const input = (b: Bench, v: DiskImageVersion): string => b.inputs[v]!;

/** Compares an output with the input it must equal; records the tool if they differ. */
async function check(b: Bench, tool: string, output: string, expected: string): Promise<void> {
  if (await sameBytes(output, expected)) return;
  b.differs.add(tool);
  b.o.log(`  ! ${tool}: ${output} differs from ${expected}`);
}

/** Runs one scenario's contenders alternately; marks the rows of tools whose output differed. */
async function measure(b: Bench, scenario: string, contenders: Contender[], inputBytes: number): Promise<MacroRow[]> {
  b.o.log(scenario);
  b.differs.clear();
  const rows = await alternate(scenario, contenders, b.o.runs, inputBytes, b.o.log);
  await b.slot.vacate(); // checks the last run's output
  return rows.map((r) => (b.differs.has(r.tool) ? { ...r, tool: r.tool + OUTPUT_DIFFERS } : r));
}

// ---------------------------------------------------------------------------------------
// Base states: each tool's destination after receiving `base` (untimed, once)

/** Environment of a borg run whose cache and security dirs live in `home` (beside the repo, copied with it). */
const borgEnv = (home: string): NodeJS.ProcessEnv => ({ ...PEER_ENV, BORG_BASE_DIR: home });

/**
 * Borg keeps the repository's last-seen manifest in its security dir and refuses an older
 * one (a copy of the base repo, after a run stored into another copy); so every state has
 * its own BORG_BASE_DIR, copied with the repo, holding the cache a real user would have.
 */
const borgPaths = (dir: string) => ({ repo: join(dir, 'repo'), home: join(dir, 'home') });

/** Pushes `path` to a server rooted at `root`, started for the push only. */
async function pushServed(root: string, path: string): Promise<void> {
  const s = await startServe(root);
  try {
    await setup(xfer('push', path, `${s.url}/${IMAGE_NAME}`, '--json'));
  } finally {
    await stop(s.child);
  }
}

/** Adds `path` (a version, archived under `name`) to a tool's state. The first call builds the state. */
const ADD: Readonly<Record<Exclude<ToolKey, 'rsync'>, (dir: string, path: string, name: string) => Promise<unknown>>> = {
  'xfer-local': (dir, path) => setup(xfer('push', path, `${dir}/`, '--json')),
  'xfer-serve': (dir, path) => pushServed(dir, path),
  casync: (dir, path, name) => setup(['casync', ['make', `--store=${dir}/store`, `${dir}/${name}.caibx`, path]]),
  restic: async (dir, path) => {
    if (!(await exists(join(dir, 'config')))) await setup(['restic', ['init', '--repo', dir], PEER_ENV]);
    return setup(['restic', ['backup', '--repo', dir, '--no-cache', '--quiet', path], PEER_ENV]);
  },
  borg: async (dir, path, name) => {
    const { repo, home } = borgPaths(dir);
    if (!(await exists(repo))) await setup(['borg', ['init', '--encryption', 'none', repo], borgEnv(home)]);
    return setup(['borg', ['create', '--compression', 'none', `${repo}::${name}`, path], borgEnv(home)]);
  },
};

/**
 * Adds a version to every state. A peer whose setup fails is dropped (logged), not fatal:
 * the other tools' rows are still worth having. xfer failing is fatal.
 */
async function addToStates(b: Bench, version: DiskImageVersion): Promise<void> {
  for (const [key, dir] of b.states) {
    if (key === 'rsync') continue; // rsync keeps no state: its daemon's module is filled per scenario
    try {
      await mkdir(dir, { recursive: true });
      await ADD[key](dir, input(b, version), version);
    } catch (e) {
      if (key.startsWith('xfer')) throw e;
      b.o.log(`  ${key} dropped: storing ${version} failed: ${oneLine((e as Error).message)}`);
      b.states.delete(key);
    }
  }
}

/** The tools this run can use, each with the directory its state is built in. */
function toolStates(o: DiskScenarioOptions, scratch: string): Map<ToolKey, string> {
  const keys: ToolKey[] = ['xfer-local'];
  if (o.remote) keys.push('xfer-serve');
  if (o.remote && o.tools.has('rsync')) keys.push('rsync');
  for (const peer of ['casync', 'restic', 'borg'] as const) if (o.tools.has(peer)) keys.push(peer);
  return new Map(keys.map((k) => [k, join(scratch, 'state', k)]));
}

// ---------------------------------------------------------------------------------------
// Scenario c: incremental copy into a destination that holds base

interface IncrementalSpec {
  readonly tool: string;
  /** State copied into the run's destination first (the tool's state after base). */
  readonly state?: string;
  /** Starts what the run talks to, in the prepared destination (a server). */
  readonly serve?: (dest: string) => Promise<Served>;
  readonly command: (dest: string, url: string) => Command;
  /** The file the run must leave equal to its input. */
  readonly output?: (dest: string) => string;
  /**
   * What the run stored: the tool's own report (`sent`) or, for tools that report nothing,
   * the growth of `store` (du before and after). Exactly one of the two.
   */
  readonly sent?: (run: Run) => number;
  readonly store?: (dest: string) => string;
  readonly sentLabel: string;
}

/** A scenario c contender: fresh destination = copy of the base state (+ server), then the timed copy of `path`. */
function incremental(b: Bench, path: string, s: IncrementalSpec): Contender {
  let dest = '';
  let server: Served | undefined;
  let storeBefore = 0;
  const release = async () => {
    if (server) await stop(server.child);
    server = undefined;
    if (s.output) await check(b, s.tool, s.output(dest), path);
  };
  return {
    tool: s.tool,
    sentLabel: s.sentLabel,
    async prepare() {
      dest = await b.slot.take(release);
      if (s.state) await copyInto(s.state, dest);
      if (s.serve) server = await s.serve(dest);
      if (s.store) storeBefore = duBytes(s.store(dest));
      settle(path, dest);
    },
    command: () => s.command(dest, server?.url ?? ''),
    sent: s.sent ?? ((_run: Run) => duBytes(s.store!(dest)) - storeBefore),
  };
}

/** Scenario c's contenders for one edited version, xfer first. */
function incrementalContenders(b: Bench, path: string): Contender[] {
  const base = input(b, 'base');
  const specs: Partial<Record<ToolKey, IncrementalSpec>> = {
    'xfer-local': {
      tool: 'xfer push (local)',
      command: (dest) => xfer('push', path, `${dest}/`, '--json'),
      output: (dest) => join(dest, IMAGE_NAME),
      sent: xferSent,
      sentLabel: LABEL_PUSH,
    },
    'xfer-serve': {
      tool: 'xfer push -> xfer serve',
      // A copied root's held file is re-hashed once before it counts (server/held.ts,
      // re-adoption): an untimed verify waits for that, which the copy (a step of this
      // bench's preparation, not of the scenario) costs, so the timed push does not.
      serve: async (dest) => {
        const served = await startServe(dest);
        try {
          await setup(xfer('verify', `${served.url}/`));
        } catch {
          // An older build timed by --compare cannot verify a server URL; it keeps no held
          // files either, so there is nothing to wait for.
        }
        return served;
      },
      command: (_dest, url) => xfer('push', path, `${url}/${IMAGE_NAME}`, '--json'),
      // The server rebuilds pushed files under <root>/files/ (README, xfer serve).
      output: (dest) => join(dest, 'files', IMAGE_NAME),
      sent: xferSent,
      sentLabel: LABEL_PUSH,
    },
    rsync: {
      tool: 'rsync -> rsync daemon',
      // The module (<dest>/module) holds base under the target name: rsync's basis file.
      serve: async (dest) => {
        const d = await startRsyncd(dest);
        await copyFile(base, join(dest, 'module', IMAGE_NAME));
        return d;
      },
      // --ignore-times: versions of equal size could otherwise be skipped by the size+mtime check.
      command: (_dest, url) => ['rsync', ['-a', '--stats', '--no-whole-file', '--ignore-times', path, `${url}/${IMAGE_NAME}`]],
      output: (dest) => join(dest, 'module', IMAGE_NAME),
      sent: (run) => rsyncLiteral(run.stdout),
      sentLabel: LABEL_RSYNC,
    },
    casync: {
      tool: 'casync make',
      command: (dest) => ['casync', ['make', `--store=${dest}/store`, `${dest}/new.caibx`, path]],
      store: (dest) => join(dest, 'store'),
      sentLabel: 'store growth (compressed)',
    },
    restic: {
      tool: 'restic backup',
      command: (dest) => ['restic', ['backup', '--repo', dest, '--no-cache', '--quiet', path], PEER_ENV],
      store: (dest) => dest,
      sentLabel: 'repo growth (compressed)',
    },
    borg: {
      tool: 'borg create',
      command: (dest) => {
        const { repo, home } = borgPaths(dest);
        return ['borg', ['create', '--compression', 'none', `${repo}::new`, path], borgEnv(home)];
      },
      store: (dest) => borgPaths(dest).repo,
      sentLabel: 'repo growth',
    },
  };
  return [...b.states].flatMap(([key, state]) => {
    const spec = specs[key];
    // The rsync module is prepared by its serve(); every other tool starts from its base state.
    return spec ? [incremental(b, path, key === 'rsync' ? spec : { ...spec, state })] : [];
  });
}

// ---------------------------------------------------------------------------------------
// Scenario d: restore of `scattered`, into an empty destination or with base as seed

interface RestoreSpec {
  readonly tool: string;
  /** What the run reads (warmed before each run): its store, repository or server root. */
  readonly reads: string;
  /** Seeded runs: where the copy of base goes in the destination (a seed file, or the target itself). */
  readonly seedAt?: (dest: string) => string;
  readonly command: (dest: string) => Command;
  /** Where the restored file lands. */
  readonly output: (dest: string) => string;
  readonly sent?: (run: Run) => number;
  readonly sentLabel?: string;
}

/** A scenario d contender: empty destination (+ a copy of base when seeded), then the timed restore. */
function restoring(b: Bench, s: RestoreSpec): Contender {
  const expected = input(b, RESTORED);
  let dest = '';
  return {
    tool: s.tool,
    ...(s.sentLabel ? { sentLabel: s.sentLabel } : {}),
    ...(s.sent ? { sent: s.sent } : {}),
    async prepare() {
      dest = await b.slot.take(() => check(b, s.tool, s.output(dest), expected));
      if (s.seedAt) await copyFile(input(b, 'base'), s.seedAt(dest));
      settle(s.reads, dest);
    },
    command: () => s.command(dest),
  };
}

/** Scenario d's contenders, xfer first; `url`s of the servers holding the restored version. */
function restoreContenders(b: Bench, seeded: boolean, urls: { xfer?: string; rsync?: string; rsyncModule?: string }): Contender[] {
  const restored = input(b, RESTORED);
  const target = (dest: string) => join(dest, IMAGE_NAME);
  const seedFile = (dest: string) => join(dest, SEED_NAME);
  // restic and borg restore the archived absolute path below the destination.
  const archived = (dest: string) => join(dest, restored);
  const xferPull = (tool: string, seededTool: string, source: string, reads: string): RestoreSpec => ({
    tool: seeded ? seededTool : tool,
    reads,
    ...(seeded ? { seedAt: seedFile } : {}),
    command: (dest) => xfer('pull', source, target(dest), ...(seeded ? ['--seed', seedFile(dest)] : []), '--json'),
    output: target,
    sent: xferSent,
    sentLabel: LABEL_PULL,
  });
  const specs: Partial<Record<ToolKey, (state: string) => RestoreSpec | undefined>> = {
    'xfer-local': (state) => xferPull('xfer pull (local)', 'xfer pull (local) --seed', join(state, IMAGE_NAME), state),
    'xfer-serve': (state) => xferPull('xfer pull <- xfer serve', 'xfer pull <- serve --seed', `${urls.xfer}/${IMAGE_NAME}`, state),
    rsync: () => ({
      tool: seeded ? 'rsync <- daemon (base there)' : 'rsync <- rsync daemon',
      reads: urls.rsyncModule!,
      // rsync's seed is the file at the destination path (its basis).
      ...(seeded ? { seedAt: target } : {}),
      command: (dest) => ['rsync', ['-a', '--stats', '--no-whole-file', '--ignore-times', `${urls.rsync}/${IMAGE_NAME}`, target(dest)]],
      output: target,
      sent: (run) => rsyncLiteral(run.stdout),
      sentLabel: LABEL_RSYNC,
    }),
    casync: (state) => ({
      tool: seeded ? 'casync extract --seed' : 'casync extract',
      reads: state,
      ...(seeded ? { seedAt: seedFile } : {}),
      command: (dest) => ['casync', ['extract', `--store=${state}/store`, ...(seeded ? [`--seed=${seedFile(dest)}`] : []), `${state}/${RESTORED}.caibx`, target(dest)]],
      output: target,
    }),
    // restic has no seeding: the seeded scenario times the same plain restore, named so.
    restic: (state) => ({
      tool: seeded ? 'restic restore (no seeding)' : 'restic restore',
      reads: state,
      command: (dest) => ['restic', ['restore', 'latest', '--repo', state, '--no-cache', '--path', restored, '--target', dest], PEER_ENV],
      output: archived,
    }),
    // borg extract has no seeding either; it is only in the empty-destination scenario.
    // It extracts into the working directory: cd there, then exec (time measures borg itself).
    borg: (state) =>
      seeded
        ? undefined
        : {
            tool: 'borg extract',
            reads: state,
            command: (dest) => ['sh', ['-c', 'cd "$1" && exec borg extract "$2"', 'sh', dest, `${borgPaths(state).repo}::${RESTORED}`], borgEnv(borgPaths(state).home)],
            output: archived,
          },
  };
  return [...b.states].flatMap(([key, state]) => {
    const spec = specs[key]?.(state);
    return spec ? [restoring(b, spec)] : [];
  });
}

/**
 * Readies scenario d's sources: every state gets the restored version; an xfer serve on
 * its state and an rsync daemon whose module holds it run until the end.
 */
async function startRestoreServers(b: Bench): Promise<{ xfer?: string; rsync?: string; rsyncModule?: string }> {
  await addToStates(b, RESTORED);
  const urls: { xfer?: string; rsync?: string; rsyncModule?: string } = {};
  const serveRoot = b.states.get('xfer-serve');
  if (serveRoot) {
    const s = await startServe(serveRoot);
    b.servers.push(s);
    urls.xfer = s.url;
  }
  const dir = b.states.get('rsync');
  if (dir) {
    const d = await startRsyncd(dir);
    b.servers.push(d);
    // A hard link, not a copy: the daemon only reads it here.
    await link(input(b, RESTORED), join(dir, 'module', IMAGE_NAME));
    urls.rsync = d.url;
    urls.rsyncModule = join(dir, 'module');
  }
  return urls;
}

// ---------------------------------------------------------------------------------------

/** Scenarios c (`incremental`) and d (`restore`) on disk-image versions; one row per (scenario, tool). */
export function runDisk(o: DiskScenarioOptions): Promise<MacroRow[]> {
  return stoppingServers(() => diskRows(o));
}

async function diskRows(o: DiskScenarioOptions): Promise<MacroRow[]> {
  const versions: DiskImageVersion[] = ['base', ...(o.incremental ? EDITS.map((e) => e.version) : []), ...(o.restore && !o.incremental ? [RESTORED] : [])];
  const inputs: Inputs = {};
  for (const v of versions) inputs[v] = await writeVersion(o, v);

  const scratch = resolve(o.work, 'disk', 'scratch');
  await rm(scratch, { recursive: true, force: true }); // leftovers of an interrupted run
  const b: Bench = { o, inputs, states: toolStates(o, scratch), slot: new Slot(join(scratch, 'run')), servers: [], differs: new Set() };
  const rows: MacroRow[] = [];
  try {
    o.log(`disk image ${o.sizeBytes} bytes: storing base with ${[...b.states.keys()].join(', ')} (untimed)`);
    await addToStates(b, 'base');
    if (o.incremental) {
      for (const e of EDITS) {
        const path = input(b, e.version);
        rows.push(...(await measure(b, e.scenario, incrementalContenders(b, path), await sizeOf(path))));
      }
    }
    if (o.restore) {
      o.log(`storing ${RESTORED} for the restores (untimed)`);
      const urls = await startRestoreServers(b);
      const bytes = await sizeOf(input(b, RESTORED));
      rows.push(...(await measure(b, SCENARIO_RESTORE_EMPTY, restoreContenders(b, false, urls), bytes)));
      rows.push(...(await measure(b, SCENARIO_RESTORE_SEEDED, restoreContenders(b, true, urls), bytes)));
    }
  } finally {
    await b.slot.vacate();
    for (const s of b.servers) await stop(s.child);
    await rm(scratch, { recursive: true, force: true });
  }
  return rows;
}
