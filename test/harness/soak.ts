/**
 * The soak: pushes and pulls of a file and a tree, locally and to an `xfer serve` child on
 * 127.0.0.1, with the client or the server killed (SIGKILL) at a random moment within the
 * operation's measured duration; connections broken by a fault proxy; a destination or
 * server root on a full file system. After each case:
 *   - the destination is the complete old or the complete new version (the digest of every
 *     file compared with the source's; no mixture in a tree);
 *   - the same command run again completes, bit-identical to the source;
 *   - no temporary names are left: `.xfer-*` beside the target (and anywhere under the
 *     server's files/), nothing in the server's tmp/, nothing in the local store's tmp/,
 *     nothing in the run's own TMPDIR (the killed run and its re-run share one, as a user's
 *     would);
 *   - the server is alive (unless the harness killed it) and a failed run said why in one line.
 * Deterministic by seed except for timing. Library-style: returns a Summary, prints nothing
 * (bench/soak.ts and test/soak.test.ts report it).
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeRandomFile } from '../helpers/cli.js';
import { crashLines } from './fuzz.js';
import { describeDifference, entriesOf, sameSnapshot, snapshot, stagingNames } from './fs-state.js';
import { isOneLineError, runXfer, ServeProcess, type RunResult } from './procs.js';
import { FaultProxy, PROXY_FAULTS, type ProxyFault } from './proxy.js';
import { Rng } from './rng.js';
import { Summary, type Finding } from './summary.js';

const MiB = 1024 * 1024;
/** A run longer than this is a hang. */
export const RUN_TIMEOUT_MS = 120_000;
/** The tmpfs of the disk-full cases, and what is pushed into it (larger). */
export const DISK_FULL_TMPFS_BYTES = 64 * MiB;
export const DISK_FULL_SOURCE_BYTES = 96 * MiB;

export interface SoakOptions {
  /** Working directory (created; removed afterwards unless keep). */
  readonly dir: string;
  readonly seed: number;
  /** Kill points (client or server SIGKILL). */
  readonly killPoints: number;
  /** Runs through the fault proxy. */
  readonly proxyRuns: number;
  /** Connections the proxy breaks per run, at most (default 3). */
  readonly proxyMaxFaults?: number;
  /** Run the disk-full cases (need root for mount -t tmpfs; skipped with a note otherwise). */
  readonly diskFull: boolean;
  /** Size of that tmpfs and of the file pushed into it (default DISK_FULL_TMPFS_BYTES, DISK_FULL_SOURCE_BYTES). */
  readonly diskFullBytes?: { readonly tmpfs: number; readonly source: number };
  /** Size of the pushed file; the tree holds about as much. */
  readonly fileBytes: number;
  readonly keep?: boolean;
  /** Progress, one line at a time. */
  readonly log?: (line: string) => void;
}

type Op = 'push' | 'pull';
type Where = 'local' | 'remote';
type Shape = 'file' | 'tree';
type Victim = 'client' | 'server';

interface Lane {
  readonly op: Op;
  readonly where: Where;
  readonly shape: Shape;
  /** The version the destination holds now (0 or 1). */
  current: 0 | 1;
  /** The longest complete run seen: kill moments are drawn within it. */
  durationMs: number;
}

const NAME: Record<Shape, string> = { file: 'data.bin', tree: 'tree' };

export async function runSoak(options: SoakOptions): Promise<Summary> {
  const rng = new Rng(options.seed);
  const summary = new Summary('soak', options.seed);
  const log = options.log ?? (() => {});
  const base = options.dir;
  const started = Date.now();
  await mkdir(base, { recursive: true });
  const tmpRoot = join(base, 'tmp');
  await mkdir(tmpRoot, { recursive: true });
  const server = new ServeProcess(join(base, 'server-root'));
  await server.start();
  try {
    log(`soak: seed ${options.seed}, ${options.killPoints} kill points, ${options.proxyRuns} proxy runs, disk full ${options.diskFull ? 'on' : 'off'}, in ${base}`);
    // Two versions of a file and of a tree; the second differs in places, so that runs
    // between them reuse, delta-encode and replace (as real incremental transfers do).
    const src = [join(base, 'src', 'v0'), join(base, 'src', 'v1')] as const;
    await makeSources(src, options.fileBytes, rng.fork('data'));
    const expected = {
      file: [await snapshot(join(src[0], NAME.file)), await snapshot(join(src[1], NAME.file))],
      tree: [await snapshot(join(src[0], NAME.tree)), await snapshot(join(src[1], NAME.tree))],
    };
    const localRepo = join(base, 'local-repo');
    const dests = {
      localPush: join(base, 'local-push'),
      localPull: join(base, 'local-pull'),
      remotePull: join(base, 'remote-pull'),
    };
    for (const d of [localRepo, ...Object.values(dests)]) await mkdir(d, { recursive: true });
    const setup: Promise<RunResult>[] = [];
    for (const v of [0, 1] as const) {
      for (const shape of ['file', 'tree'] as const) {
        setup.push(mustRun(['push', join(src[v], NAME[shape]), `${join(localRepo, `v${v}`)}/`], tmpRoot));
        setup.push(mustRun(['push', join(src[v], NAME[shape]), `${server.url}/v${v}/`], tmpRoot));
      }
    }
    await Promise.all(setup);

    const args = (lane: Lane, version: 0 | 1, url = server.url): string[] => {
      const name = NAME[lane.shape];
      // Each version must replace the other exactly: --delete where the destination would
      // otherwise keep the other version's extra entries (a server's copy always mirrors).
      if (lane.op === 'push') return lane.where === 'local' ? ['push', join(src[version], name), `${dests.localPush}/`, '--delete'] : ['push', join(src[version], name), `${url}/push/`];
      const from = lane.where === 'local' ? join(localRepo, `v${version}`, name) : `${url}/v${version}/${name}`;
      return ['pull', from, `${lane.where === 'local' ? dests.localPull : dests.remotePull}/`, '--delete'];
    };
    /** Where the lane's target lies, and the directory whose `.xfer-*` names must not outlive a run. */
    const targetOf = (lane: Lane): { target: string; parent: string; recursive: boolean } => {
      const name = NAME[lane.shape];
      if (lane.op === 'pull') {
        const parent = lane.where === 'local' ? dests.localPull : dests.remotePull;
        return { target: join(parent, name), parent, recursive: false };
      }
      if (lane.where === 'local') return { target: join(dests.localPush, name), parent: dests.localPush, recursive: false };
      return { target: join(server.root, 'files', 'push', name), parent: join(server.root, 'files'), recursive: true };
    };

    const lanes: Lane[] = [];
    for (const op of ['push', 'pull'] as const) {
      for (const where of ['local', 'remote'] as const) {
        for (const shape of ['file', 'tree'] as const) lanes.push({ op, where, shape, current: 0, durationMs: 0 });
      }
    }
    // Each lane runs to version 0 (its starting point), then to version 1: that incremental
    // run, what every case does, is the lane's first measured duration. Kill moments are
    // drawn after the process start-up (measured too), when the operation does its work.
    await Promise.all(lanes.map((lane) => mustRun(args(lane, 0), tmpRoot)));
    for (const lane of lanes) {
      lane.durationMs = (await mustRun(args(lane, 1), tmpRoot)).ms;
      lane.current = 1;
    }
    const startupMs = Math.min((await mustRun(['--version'], tmpRoot)).ms, (await mustRun(['--version'], tmpRoot)).ms);
    summary.figures.startupMs = startupMs;

    /** Leftovers already reported: a case is charged only with what it left itself. */
    const reported = new Set<string>();
    /** Checks shared by every case once its re-run is done; returns the findings. */
    const afterRerun = async (lane: Lane, tmp: string, rerun: RunResult, version: 0 | 1): Promise<Omit<Finding, 'kind'>[]> => {
      const f: Omit<Finding, 'kind'>[] = [];
      const { target, parent, recursive } = targetOf(lane);
      if (rerun.code !== 0) f.push({ check: 'rerun-completes', message: `the re-run exited ${rerun.code ?? rerun.signal}: ${rerun.stderr.trim().split('\n')[0]}` });
      const snap = await snapshot(target);
      if (rerun.code === 0 && !sameSnapshot(snap, expected[lane.shape][version])) f.push({ check: 'rerun-bit-identical', message: `after the re-run the target is not the source: ${describeDifference(snap, expected[lane.shape][version])}` });
      const staging = (await stagingNames(parent, recursive)).filter((n) => !reported.has(`${parent}/${n}`));
      for (const n of staging) reported.add(`${parent}/${n}`);
      if (staging.length) f.push({ check: 'no-staging-leftovers', message: `left beside the target: ${staging.join(', ')}` });
      const left = await entriesOf(tmp);
      if (left.length) f.push({ check: 'tmpdir-empty', message: `left in the runs' TMPDIR: ${left.join(', ')}` });
      if (lane.where === 'remote') f.push(...(await serverChecks(server, reported)));
      if (lane.where === 'local' && lane.op === 'push') {
        const storeTmp = (await entriesOf(join(dests.localPush, '.xfer', 'tmp'))).filter((n) => !reported.has(`store-tmp/${n}`));
        for (const n of storeTmp) reported.add(`store-tmp/${n}`);
        if (storeTmp.length) f.push({ check: 'local-store-tmp-empty', message: `left in the local store's tmp/: ${storeTmp.join(', ')}` });
      }
      return f;
    };

    /**
     * After a failed case: removes the temporary names it left beside the target and brings
     * the target to `version`, so that one defect does not fail every later case of the lane.
     */
    const repair = async (lane: Lane, version: 0 | 1) => {
      const { parent } = targetOf(lane);
      if (lane.where === 'local' || lane.op === 'pull') for (const n of await stagingNames(parent)) await rm(join(parent, n), { recursive: true, force: true });
      const r = await runXfer(args(lane, version), { tmp: tmpRoot, timeoutMs: RUN_TIMEOUT_MS });
      if (r.code !== 0) log(`  repair of ${lane.op}:${lane.where}:${lane.shape} failed: ${r.stderr.trim()}`);
    };

    summary.figures.setupSeconds = (Date.now() - started) / 1000;
    let phase = Date.now();
    // ---- kill points ----
    const kinds: { lane: Lane; victim: Victim }[] = [];
    for (const lane of lanes) {
      kinds.push({ lane, victim: 'client' });
      if (lane.where === 'remote') kinds.push({ lane, victim: 'server' });
    }
    const order = shuffle(rng.fork('order'), kinds);
    const killRng = rng.fork('kill');
    for (let i = 0; i < options.killPoints; i++) {
      const { lane, victim } = order[i % order.length]!;
      const kind = `kill-${victim}:${lane.op}:${lane.where}:${lane.shape}`;
      const from = lane.current;
      const to = (1 - from) as 0 | 1;
      // Within the run's duration, mostly after start-up (a lane faster than the start-up
      // measured under load still gets its whole second half).
      const from0 = Math.min(startupMs, lane.durationMs / 2);
      const delayMs = Math.round(from0 + killRng.float() * (lane.durationMs - from0));
      const tmp = await mkdtemp(join(tmpRoot, 'k-'));
      const repro = `seed=${options.seed} case=${i} kind=${kind} delayMs=${delayMs} from=v${from} to=v${to}: xfer ${args(lane, to).join(' ')}`;
      const findings: Omit<Finding, 'kind'>[] = [];
      const { target } = targetOf(lane);
      const consistent = async (when: string) => {
        const snap = await snapshot(target);
        if (!sameSnapshot(snap, expected[lane.shape][from]) && !sameSnapshot(snap, expected[lane.shape][to])) {
          findings.push({ check: 'old-or-new', message: `${when}, the target is neither version: ${describeDifference(snap, expected[lane.shape][to])}`, repro });
        }
      };
      let run: RunResult;
      if (victim === 'client') {
        run = await runXfer(args(lane, to), { tmp, killAfterMs: delayMs, timeoutMs: RUN_TIMEOUT_MS });
        await consistent('after the kill');
      } else {
        let restarted: Promise<void> = Promise.resolve();
        run = await runXfer(args(lane, to), {
          tmp,
          timeoutMs: RUN_TIMEOUT_MS,
          atMs: {
            ms: delayMs,
            run: () =>
              (restarted = (async () => {
                await server.stop('SIGKILL');
                await consistent('with the server killed');
                await server.start();
              })()),
          },
        });
        await restarted;
        if (!server.alive) await server.start();
        await consistent('after the client ended');
      }
      if (run.timedOut) findings.push({ check: 'no-hang', message: `the run did not end within ${RUN_TIMEOUT_MS} ms`, repro });
      if (!run.killed && run.code !== 0 && !isOneLineError(run.stderr)) {
        findings.push({ check: 'one-line-error', message: `exit ${run.code ?? run.signal} without a one-line error: ${JSON.stringify(run.stderr.slice(0, 300))}`, repro });
      }
      if (!run.killed && run.code === 0) {
        const snap = await snapshot(target);
        if (!sameSnapshot(snap, expected[lane.shape][to])) findings.push({ check: 'success-is-new', message: `exit 0 but the target is not the new version: ${describeDifference(snap, expected[lane.shape][to])}`, repro });
      }
      const struck = victim === 'client' ? run.killed : run.acted;
      // A run the kill came too late for measures the operation as it is now: the duration
      // moves halfway to it (not all the way: only runs shorter than the drawn moment end
      // before it, and following them alone would shrink the window case by case).
      if (struck) summary.figures.struck = (summary.figures.struck ?? 0) + 1;
      else if (run.code === 0) lane.durationMs = (lane.durationMs + run.ms) / 2;
      const rerun = await runXfer(args(lane, to), { tmp, timeoutMs: RUN_TIMEOUT_MS });
      findings.push(...(await afterRerun(lane, tmp, rerun, to)).map((f) => ({ ...f, repro })));
      lane.current = to;
      record(summary, kind, findings);
      if (findings.length) await repair(lane, to);
      log(`${i + 1}/${options.killPoints} ${kind} at ${delayMs} ms${struck ? '' : ' (it ended before)'}: ${findings.length ? `FAILED ${findings.map((f) => f.check).join(', ')}` : 'ok'}`);
      await rm(tmp, { recursive: true, force: true });
    }

    summary.figures.killSeconds = (Date.now() - phase) / 1000;
    phase = Date.now();
    // ---- broken connections ----
    const proxyRng = rng.fork('proxy');
    const remoteLanes = lanes.filter((l) => l.where === 'remote');
    for (let i = 0; i < options.proxyRuns; i++) {
      const fault: ProxyFault = PROXY_FAULTS[i % PROXY_FAULTS.length]!;
      const lane = remoteLanes[proxyRng.int(remoteLanes.length)]!;
      const kind = `proxy-${fault}:${lane.op}:${lane.shape}`;
      const from = lane.current;
      const to = (1 - from) as 0 | 1;
      const proxy = new FaultProxy(server.port, proxyRng.fork(i), {
        fault,
        probability: 0.7,
        maxFaults: options.proxyMaxFaults ?? 3,
        withinBytes: Math.max(1, Math.min(options.fileBytes, 8 * MiB)),
        stallMs: proxyRng.range(300, 2000),
      });
      await proxy.start();
      const tmp = await mkdtemp(join(tmpRoot, 'p-'));
      const runArgs = [...args(lane, to, proxy.url), '--timeout', '1'];
      const repro = `seed=${options.seed} proxy case=${i} kind=${kind} from=v${from} to=v${to}: xfer ${runArgs.join(' ')}`;
      const findings: Omit<Finding, 'kind'>[] = [];
      const run = await runXfer(runArgs, { tmp, timeoutMs: RUN_TIMEOUT_MS });
      await proxy.close();
      const { target } = targetOf(lane);
      const snap = await snapshot(target);
      if (run.timedOut) findings.push({ check: 'no-hang', message: `the run did not end within ${RUN_TIMEOUT_MS} ms`, repro });
      if (run.code === 0 && !sameSnapshot(snap, expected[lane.shape][to])) findings.push({ check: 'success-is-new', message: `exit 0 but the target is not the new version: ${describeDifference(snap, expected[lane.shape][to])}`, repro });
      if (run.code !== 0) {
        if (!isOneLineError(run.stderr)) findings.push({ check: 'one-line-error', message: `exit ${run.code ?? run.signal} without a one-line error: ${JSON.stringify(run.stderr.slice(0, 300))}`, repro });
        if (!sameSnapshot(snap, expected[lane.shape][from]) && !sameSnapshot(snap, expected[lane.shape][to])) findings.push({ check: 'old-or-new', message: `after a failed run the target is neither version: ${describeDifference(snap, expected[lane.shape][to])}`, repro });
      }
      const rerun = await runXfer(args(lane, to), { tmp, timeoutMs: RUN_TIMEOUT_MS });
      findings.push(...(await afterRerun(lane, tmp, rerun, to)).map((f) => ({ ...f, repro })));
      lane.current = to;
      record(summary, kind, findings);
      if (findings.length) await repair(lane, to);
      log(`proxy ${i + 1}/${options.proxyRuns} ${kind}: ${proxy.faultsInjected} of ${proxy.connections} connections broken, exit ${run.code}: ${findings.length ? `FAILED ${findings.map((f) => f.check).join(', ')}` : 'ok'}`);
      await rm(tmp, { recursive: true, force: true });
    }

    summary.figures.proxySeconds = (Date.now() - phase) / 1000;
    phase = Date.now();
    if (options.diskFull) await diskFullCases(base, server, summary, log, options.diskFullBytes ?? { tmpfs: DISK_FULL_TMPFS_BYTES, source: DISK_FULL_SOURCE_BYTES });

    summary.figures.diskFullSeconds = (Date.now() - phase) / 1000;
    summary.figures.killPoints = options.killPoints;
    summary.figures.struck ??= 0;
    summary.figures.proxyRuns = options.proxyRuns;
    summary.figures.fileBytes = options.fileBytes;
    return summary;
  } finally {
    await server.stop('SIGTERM');
    if (!options.keep) await rm(base, { recursive: true, force: true });
  }
}

function record(summary: Summary, kind: string, findings: readonly Omit<Finding, 'kind'>[]): void {
  if (findings.length) summary.fail(kind, findings);
  else summary.pass(kind);
}

async function mustRun(args: string[], tmpRoot: string): Promise<RunResult> {
  const r = await runXfer(args, { tmp: tmpRoot, timeoutMs: RUN_TIMEOUT_MS });
  if (r.code !== 0) throw new Error(`setup failed: xfer ${args.join(' ')}: ${r.stderr.trim()}`);
  return r;
}

/** The server is alive, answers, and left nothing in its tmp/. */
async function serverChecks(server: ServeProcess, reported = new Set<string>()): Promise<Omit<Finding, 'kind'>[]> {
  const f: Omit<Finding, 'kind'>[] = [];
  if (!server.alive) {
    f.push({ check: 'server-alive', message: `the server ${server.exitDescription}: ${crashLines(server.stderr)}` });
    await server.start();
  }
  const tmp = (await entriesOf(join(server.root, 'tmp'))).filter((n) => !reported.has(`${server.root}/tmp/${n}`));
  for (const n of tmp) reported.add(`${server.root}/tmp/${n}`);
  if (tmp.length) f.push({ check: 'server-tmp-empty', message: `left in the server's tmp/: ${tmp.join(', ')}` });
  return f;
}

function shuffle<T>(rng: Rng, items: readonly T[]): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/**
 * The two versions: a file (v1 = v0 with blocks overwritten and bytes inserted) and a
 * tree (v1: one file changed, one added, one removed, a symlink retargeted, the rest kept).
 */
async function makeSources(dirs: readonly [string, string], fileBytes: number, rng: Rng): Promise<void> {
  const v0 = rng.bytes(fileBytes);
  const v1 = Buffer.from(v0);
  for (let k = 0; k < 3; k++) rng.bytes(64 * 1024).copy(v1, rng.int(Math.max(1, fileBytes - 64 * 1024)));
  const cut = rng.int(fileBytes);
  const file1 = Buffer.concat([v1.subarray(0, cut), rng.bytes(10_000), v1.subarray(cut)]);
  const part = Math.max(1, Math.floor(fileBytes / 6));
  const treeFiles0: Record<string, Buffer> = {
    'a/one.bin': rng.bytes(part),
    'a/b/two.bin': rng.bytes(part),
    'a/b/three.bin': rng.bytes(part),
    'c/four.bin': rng.bytes(part),
    'c/empty.txt': Buffer.alloc(0),
    'five.bin': rng.bytes(part),
  };
  const treeFiles1: Record<string, Buffer> = { ...treeFiles0 };
  const changed = Buffer.from(treeFiles0['a/b/two.bin']!);
  rng.bytes(4096).copy(changed, rng.int(Math.max(1, changed.length - 4096)));
  treeFiles1['a/b/two.bin'] = changed;
  delete treeFiles1['c/four.bin'];
  treeFiles1['c/six.bin'] = rng.bytes(part);
  for (const [v, dir] of dirs.entries()) {
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, NAME.file), v === 0 ? v0 : file1);
    const tree = join(dir, NAME.tree);
    for (const [rel, data] of Object.entries(v === 0 ? treeFiles0 : treeFiles1)) {
      await mkdir(join(tree, rel, '..'), { recursive: true });
      await writeFile(join(tree, rel), data);
    }
    await mkdir(join(tree, 'empty-dir'), { recursive: true });
    await symlink(v === 0 ? 'a/one.bin' : 'five.bin', join(tree, 'link'));
  }
}

const exec = promisify(execFile);

/**
 * A small tmpfs as the destination of a local push, as the server's root, and as the
 * destination of a pull; something larger goes in. Expected: a clean one-line error, a
 * non-zero exit, no target and no staging left, the server alive and answering.
 */
async function diskFullCases(base: string, server: ServeProcess, summary: Summary, log: (line: string) => void, sizes: { tmpfs: number; source: number }): Promise<void> {
  const mnt = join(base, 'full');
  await mkdir(mnt, { recursive: true });
  try {
    await exec('mount', ['-t', 'tmpfs', '-o', `size=${sizes.tmpfs}`, 'tmpfs', mnt]);
  } catch (err) {
    const why = `mount -t tmpfs failed (${(err as Error).message.split('\n')[0]}); the disk-full cases need root`;
    for (const k of ['disk-full:local-push', 'disk-full:server-root', 'disk-full:pull-dest']) summary.skip(k, why);
    log(`disk full: skipped: ${why}`);
    return;
  }
  const big = join(base, 'big', 'big.bin');
  const tmpRoot = join(base, 'tmp');
  try {
    await mkdir(join(base, 'big'), { recursive: true });
    await writeRandomFile(big, sizes.source, 7);
    const clear = async () => {
      for (const e of await entriesOf(mnt)) await rm(join(mnt, e), { recursive: true, force: true });
    };
    const failedCleanly = (r: RunResult, repro: string): Omit<Finding, 'kind'>[] => {
      const f: Omit<Finding, 'kind'>[] = [];
      if (r.timedOut) f.push({ check: 'no-hang', message: `did not end within ${RUN_TIMEOUT_MS} ms`, repro });
      if (r.code === 0) f.push({ check: 'disk-full-fails', message: 'exit 0 though the file system is smaller than the source', repro });
      else if (!isOneLineError(r.stderr)) f.push({ check: 'one-line-error', message: `exit ${r.code ?? r.signal} without a one-line error: ${JSON.stringify(r.stderr.slice(0, 300))}`, repro });
      return f;
    };

    // A local push into the tmpfs.
    {
      const tmp = await mkdtemp(join(tmpRoot, 'f-'));
      const args = ['push', big, `${mnt}/`];
      const repro = `xfer ${args.join(' ')} (tmpfs of ${sizes.tmpfs} bytes)`;
      const r = await runXfer(args, { tmp, timeoutMs: RUN_TIMEOUT_MS });
      const f = failedCleanly(r, repro);
      if (await snapshot(join(mnt, 'big.bin'))) f.push({ check: 'no-partial-target', message: 'the target exists after a failed push', repro });
      const staging = await stagingNames(mnt);
      if (staging.length) f.push({ check: 'no-staging-leftovers', message: `left beside the target: ${staging.join(', ')}`, repro });
      const storeTmp = await entriesOf(join(mnt, '.xfer', 'tmp'));
      if (storeTmp.length) f.push({ check: 'local-store-tmp-empty', message: `left in the local store's tmp/: ${storeTmp.join(', ')}`, repro });
      const left = await entriesOf(tmp);
      if (left.length) f.push({ check: 'tmpdir-empty', message: `left in TMPDIR: ${left.join(', ')}`, repro });
      record(summary, 'disk-full:local-push', f);
      log(`disk full, local push: exit ${r.code}, ${JSON.stringify(r.stderr.trim())}: ${f.length ? `FAILED ${f.map((x) => x.check).join(', ')}` : 'ok'}`);
      await rm(tmp, { recursive: true, force: true });
      await clear();
    }

    // The server's root on the tmpfs.
    {
      const full = new ServeProcess(join(mnt, 'root'));
      await full.start();
      const tmp = await mkdtemp(join(tmpRoot, 'f-'));
      const args = ['push', big, `${full.url}/big.bin`, '--retries', '1'];
      const repro = `xfer serve --root <tmpfs of ${sizes.tmpfs} bytes>; xfer ${args.join(' ')}`;
      try {
        const r = await runXfer(args, { tmp, timeoutMs: RUN_TIMEOUT_MS });
        const f = failedCleanly(r, repro);
        if (await snapshot(join(full.root, 'files', 'big.bin'))) f.push({ check: 'no-partial-target', message: 'the target exists after a failed push', repro });
        const staging = await stagingNames(join(full.root, 'files'), true);
        if (staging.length) f.push({ check: 'no-staging-leftovers', message: `left under files/: ${staging.join(', ')}`, repro });
        f.push(...(await serverChecks(full)).map((x) => ({ ...x, repro })));
        const info = await runXfer(['ls', `${full.url}/`], { tmp, timeoutMs: 30_000 });
        if (info.code !== 0) f.push({ check: 'server-answers', message: `after the failed push the server does not answer: ${info.stderr.trim()}`, repro });
        const left = await entriesOf(tmp);
        if (left.length) f.push({ check: 'tmpdir-empty', message: `left in TMPDIR: ${left.join(', ')}`, repro });
        record(summary, 'disk-full:server-root', f);
        log(`disk full, server root: exit ${r.code}, ${JSON.stringify(r.stderr.trim())}: ${f.length ? `FAILED ${f.map((x) => x.check).join(', ')}` : 'ok'}`);
      } finally {
        await full.stop('SIGTERM');
        await rm(tmp, { recursive: true, force: true });
        await clear();
      }
    }

    // A pull into the tmpfs.
    {
      const tmp = await mkdtemp(join(tmpRoot, 'f-'));
      await mustRun(['push', big, `${server.url}/big/`], tmpRoot);
      await mkdir(join(mnt, 'out'));
      const args = ['pull', `${server.url}/big/big.bin`, `${mnt}/out/`];
      const repro = `xfer ${args.join(' ')} (tmpfs of ${sizes.tmpfs} bytes)`;
      const r = await runXfer(args, { tmp, timeoutMs: RUN_TIMEOUT_MS });
      const f = failedCleanly(r, repro);
      if (await snapshot(join(mnt, 'out', 'big.bin'))) f.push({ check: 'no-partial-target', message: 'the target exists after a failed pull', repro });
      f.push(...(await serverChecks(server)).map((x) => ({ ...x, repro })));
      const left = await entriesOf(tmp);
      if (left.length) f.push({ check: 'tmpdir-empty', message: `left in TMPDIR: ${left.join(', ')}`, repro });
      // A pull keeps its partial file on purpose (the next run resumes from it): noted, not a failure.
      const partial = await stagingNames(join(mnt, 'out'));
      if (partial.length) summary.notes.push(`disk-full:pull-dest: kept for resuming: ${partial.join(', ')}`);
      record(summary, 'disk-full:pull-dest', f);
      log(`disk full, pull: exit ${r.code}, ${JSON.stringify(r.stderr.trim())}: ${f.length ? `FAILED ${f.map((x) => x.check).join(', ')}` : 'ok'}`);
      await rm(tmp, { recursive: true, force: true });
    }
  } finally {
    await exec('umount', [mnt]).catch(() => exec('umount', ['-l', mnt]).catch(() => undefined));
    await rmdir(mnt).catch(() => undefined);
    await rm(join(base, 'big'), { recursive: true, force: true });
  }
}
