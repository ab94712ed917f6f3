import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pseudoRandom } from '../test/helpers/gen.js';
import { duBytes, logRow, rsyncLiteral, startRsyncd, startServe, stop, stoppingServers, summarize, XFER, type MacroRow, type Served } from './harness.js';
import { median, timed, type Run } from './measure.js';
import { threadCpuSeconds } from './thread-cpu.js';
const EDITS = 200;
const EDIT_BYTES = 4096;

export interface RemoteOptions {
  readonly work: string;
  readonly src: string;
  readonly sizeBytes: number;
  readonly runs: number;
  readonly tools: Set<string>;
  readonly log: (s: string) => void;
}

interface Sample {
  readonly run: Run;
  /** Bytes the tool says it sent (chunk payload for xfer, literal data for rsync). */
  readonly sentBytes?: number;
}

function row(scenario: string, tool: string, samples: Sample[], bytes: number, log: (s: string) => void, sentLabel?: string): MacroRow {
  const sent = samples.filter((s) => s.sentBytes !== undefined).map((s) => s.sentBytes!);
  const r = summarize(scenario, tool, samples.map((s) => s.run), bytes, sent, sentLabel);
  logRow(r, log);
  return r;
}

/** A copy of `src` with EDITS scattered 4 KiB overwrites at deterministic 4 KiB-aligned offsets. */
async function makeEdited(src: string, dst: string, size: number): Promise<void> {
  await copyFile(src, dst);
  const fh = await open(dst, 'r+');
  const blocks = Math.floor(size / EDIT_BYTES);
  for (let i = 0; i < EDITS; i++) {
    const block = Math.floor(((i + 0.5) / EDITS) * blocks);
    await fh.write(pseudoRandom(EDIT_BYTES, 1000 + i), 0, EDIT_BYTES, block * EDIT_BYTES);
  }
  await fh.close();
}

export function runRemote(o: RemoteOptions): Promise<MacroRow[]> {
  return stoppingServers(() => remoteRows(o));
}

async function remoteRows(o: RemoteOptions): Promise<MacroRow[]> {
  const rows: MacroRow[] = [];
  const w = (n: string) => join(o.work, n);
  const edited = w('edited.bin');
  await makeEdited(o.src, edited, o.sizeBytes);
  const warm = () => spawnSync('sh', ['-c', `cat '${o.src}' '${edited}' > /dev/null`]);

  // b. first copy over loopback: xfer serve vs rsync daemon
  o.log('first copy over loopback (xfer serve, rsync daemon)');
  const xs: Sample[] = [];
  const rs: Sample[] = [];
  /** The server's main-thread CPU seconds per GiB pushed (issue 17: at most 1). */
  const serverBusy: number[] = [];
  /** The server root's bytes (du -sb) over the data's, after the push (issue 17: at most 1.05). */
  const serverDisk: number[] = [];
  for (let i = 0; i < o.runs; i++) {
    await rm(w('serve-root'), { recursive: true, force: true });
    const s = await startServe(w('serve-root'));
    warm();
    const busyBefore = threadCpuSeconds(s.child.pid!);
    const r = await timed(process.execPath, [XFER, 'push', o.src, `${s.url}/first.bin`, '--json']);
    serverBusy.push((threadCpuSeconds(s.child.pid!) - busyBefore) / (o.sizeBytes / 2 ** 30));
    xs.push({ run: r, sentBytes: JSON.parse(r.stdout).bytesSent });
    await stop(s.child);
    serverDisk.push(duBytes(w('serve-root')) / o.sizeBytes);
    if (o.tools.has('rsync')) {
      await rm(w('rsyncd'), { recursive: true, force: true });
      const d = await startRsyncd(w('rsyncd'));
      warm();
      const rr = await timed('rsync', ['-a', '--stats', o.src, `${d.url}/first.bin`]);
      rs.push({ run: rr, sentBytes: rsyncLiteral(rr.stdout) });
      await stop(d.child);
    }
  }
  rows.push(row('first copy (loopback)', 'xfer push -> xfer serve', xs, o.sizeBytes, o.log, 'chunk bytes sent'));
  o.log(`  (xfer serve's main thread: ${median(serverBusy).toFixed(2)} CPU-s per GiB pushed, median; runs ${serverBusy.map((b) => b.toFixed(2)).join(', ')})`);
  o.log(`  (xfer serve's root after the push, du -sb: ${median(serverDisk).toFixed(3)}x the data, median; runs ${serverDisk.map((b) => b.toFixed(3)).join(', ')})`);
  if (rs.length) rows.push(row('first copy (loopback)', 'rsync -> rsync daemon', rs, o.sizeBytes, o.log, 'literal data'));

  // c. incremental: every run starts from a destination holding only the original (a
  // content-addressed store keeps every version it saw, so runs must not share one)
  o.log(`incremental copy after ${EDITS} scattered 4 KiB overwrites`);
  const xi: Sample[] = [];
  const ri: Sample[] = [];
  let s: Served | undefined;
  for (let i = 0; i < o.runs; i++) {
    if (s) await stop(s.child);
    await rm(w('serve-root'), { recursive: true, force: true });
    s = await startServe(w('serve-root'));
    await timed(process.execPath, [XFER, 'push', o.src, `${s.url}/inc.bin`, '--json']);
    warm();
    const r = await timed(process.execPath, [XFER, 'push', edited, `${s.url}/inc.bin`, '--json']);
    xi.push({ run: r, sentBytes: JSON.parse(r.stdout).bytesSent });
    if (o.tools.has('rsync')) {
      await rm(w('rsyncd'), { recursive: true, force: true });
      const d = await startRsyncd(w('rsyncd'));
      await copyFile(o.src, join(w('rsyncd'), 'module', 'inc.bin'));
      warm();
      // --ignore-times: the copy and the edited file have the same size and may share an
      // mtime second, and rsync would then skip the file (seen: 0.13 s, 0 bytes).
      const rr = await timed('rsync', ['-a', '--stats', '--no-whole-file', '--ignore-times', edited, `${d.url}/inc.bin`]);
      ri.push({ run: rr, sentBytes: rsyncLiteral(rr.stdout) });
      await stop(d.child);
    }
  }
  rows.push(row('incremental (loopback)', 'xfer push -> xfer serve', xi, o.sizeBytes, o.log, 'chunk bytes sent'));
  if (ri.length) rows.push(row('incremental (loopback)', 'rsync --no-whole-file', ri, o.sizeBytes, o.log, 'literal data'));
  s = s!;

  // d. restore into an empty destination
  o.log('restore into an empty destination');
  const xp: Sample[] = [];
  const cp: Sample[] = [];
  const rp: Sample[] = [];
  const env = { RESTIC_PASSWORD: 'bench' };
  if (o.tools.has('casync')) {
    await rm(w('casync'), { recursive: true, force: true });
    await mkdir(w('casync'));
    spawnSync('casync', ['make', `--store=${w('casync')}/store`, `${w('casync')}/index.caibx`, o.src], { stdio: 'ignore' });
  }
  if (o.tools.has('restic')) {
    await rm(w('restic'), { recursive: true, force: true });
    spawnSync('restic', ['init', '--repo', w('restic')], { env: { ...process.env, ...env }, stdio: 'ignore' });
    spawnSync('restic', ['backup', '--repo', w('restic'), '--no-cache', '--quiet', o.src], { env: { ...process.env, ...env }, stdio: 'ignore' });
  }
  for (let i = 0; i < o.runs; i++) {
    await rm(w('restore'), { recursive: true, force: true });
    await mkdir(w('restore'));
    const r = await timed(process.execPath, [XFER, 'pull', `${s.url}/inc.bin`, w('restore/x.bin'), '--json']);
    xp.push({ run: r, sentBytes: JSON.parse(r.stdout).bytesReceived });
    if (o.tools.has('casync')) {
      await rm(w('restore'), { recursive: true, force: true });
      await mkdir(w('restore'));
      cp.push({ run: await timed('casync', ['extract', `--store=${w('casync')}/store`, `${w('casync')}/index.caibx`, w('restore/x.bin')]) });
    }
    if (o.tools.has('restic')) {
      await rm(w('restore'), { recursive: true, force: true });
      rp.push({ run: await timed('restic', ['restore', 'latest', '--repo', w('restic'), '--no-cache', '--target', w('restore')], env) });
    }
  }
  rows.push(row('restore (empty dest)', 'xfer pull <- xfer serve', xp, o.sizeBytes, o.log));
  if (cp.length) rows.push(row('restore (empty dest)', 'casync extract', cp, o.sizeBytes, o.log));
  if (rp.length) rows.push(row('restore (empty dest)', 'restic restore', rp, o.sizeBytes, o.log));
  await rm(w('restore'), { recursive: true, force: true });
  await mkdir(w('restore'));
  await timed(process.execPath, [XFER, 'pull', `${s.url}/inc.bin`, w('restore/x.bin'), '--json']);
  // By default the destination passes the quick check (size, mtime, mode) and is kept
  // unread; --checksum reads and hashes it all.
  const again = await timed(process.execPath, [XFER, 'pull', `${s.url}/inc.bin`, w('restore/x.bin'), '--json']);
  rows.push(row('pull unchanged file', 'xfer pull (dest up to date)', [{ run: again, sentBytes: JSON.parse(again.stdout).bytesReceived }], o.sizeBytes, o.log));
  const checked = await timed(process.execPath, [XFER, 'pull', `${s.url}/inc.bin`, w('restore/x.bin'), '--json', '--checksum']);
  rows.push(row('pull unchanged file', 'xfer pull --checksum (dest up to date)', [{ run: checked, sentBytes: JSON.parse(checked.stdout).bytesReceived }], o.sizeBytes, o.log));
  await stop(s.child);
  for (const n of ['serve-root', 'rsyncd', 'casync', 'restic', 'restore', 'edited.bin']) await rm(w(n), { recursive: true, force: true });
  return rows;
}
