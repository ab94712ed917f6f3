import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { getSystemErrorMap } from 'node:util';
import {
  exchangeOrRename, exchangePaths, groupId, groupName, listXattrs, makeNode, removeXattr, setTimesNs, setXattr,
  sysIsNative, userId, userName,
} from '../src/io/sys.js';

type Variant = 'native' | 'twin';
type Outcome<T> = { ok: T } | { error: { name: string; code?: string; errno?: number; syscall?: string; path?: string; message?: string } };

/** Runs `fn` once with the native addon and once with the TypeScript twin (XFER_NO_NATIVE=1). */
function both<T>(fn: (v: Variant) => T): Record<Variant, Outcome<T>> {
  const out = {} as Record<Variant, Outcome<T>>;
  const saved = process.env.XFER_NO_NATIVE;
  try {
    for (const v of ['native', 'twin'] as const) {
      if (v === 'twin') process.env.XFER_NO_NATIVE = '1';
      else delete process.env.XFER_NO_NATIVE;
      try {
        out[v] = { ok: fn(v) };
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        // A TypeError's wording is Node's or ours; its class and code are the contract.
        out[v] = { error: e instanceof TypeError ? { name: e.name, code: e.code } : { name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, path: e.path, message: e.message } };
      }
    }
  } finally {
    if (saved === undefined) delete process.env.XFER_NO_NATIVE;
    else process.env.XFER_NO_NATIVE = saved;
  }
  return out;
}

/** Asserts both variants agree and returns the (common) outcome. */
function agree<T>(fn: (v: Variant) => T): Outcome<T> {
  const r = both(fn);
  assert.deepEqual(r.twin, r.native);
  return r.native;
}

/** The message Node's own fs would give for errno `code` from `syscall` on `path`. */
function nodeMessage(code: string, syscall: string, path: string): string {
  const entry = [...getSystemErrorMap().values()].find(([name]) => name === code);
  return `${code}: ${entry![1]}, ${syscall} '${path}'`;
}

/** Node's (negative) errno number for `code`. */
function errnoOf(code: string): number {
  return [...getSystemErrorMap()].find(([, [name]]) => name === code)![0];
}

function hex(xs: ReadonlyArray<{ name: string; value: Buffer }>): Array<[string, string]> {
  return xs.map((x) => [x.name, x.value.toString('hex')]);
}

/** Tests compare the two implementations: without the addon there is nothing to compare (fatal where CI requires it). */
function needNative(t: TestContext): boolean {
  if (sysIsNative()) return true;
  assert.notEqual(process.env.XFER_REQUIRE_NATIVE, '1', 'the native system calls must be built where the addon is required');
  t.skip('native addon not built');
  return false;
}

describe('io/sys: the native system calls and their TypeScript twin agree', () => {
  let dir: string;
  let n = 0;
  /** A fresh empty file, its name marking which variant made it. */
  const fresh = (v: Variant | string = 'f'): string => {
    const p = join(dir, `${v}-${n++}`);
    writeFileSync(p, 'content');
    return p;
  };
  /** A directory whose file system takes 64 KiB xattr values (tmpfs since Linux 6.6), or null. */
  let roomy: string | null = null;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'xfer-sys-'));
    try {
      const probe = mkdtempSync('/dev/shm/xfer-sys-');
      writeFileSync(join(probe, 'p'), '');
      try {
        execFileSync('setfattr', ['-n', 'user.probe', '-v', `0s${Buffer.alloc(65536).toString('base64')}`, join(probe, 'p')], { stdio: 'ignore' });
        roomy = probe;
      } catch {
        rmSync(probe, { recursive: true, force: true });
      }
    } catch { /* no /dev/shm */ }
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
    if (roomy) rmSync(roomy, { recursive: true, force: true });
  });

  it('lists binary values (NUL, 0xff, empty) and names with escaped bytes exactly as set', (t) => {
    if (!needNative(t)) return;
    const values: Array<[string, Buffer]> = [
      ['user.bin', Buffer.from([0, 0xff, 0, 10, 0x3d, 0x22, 0x5c, 0xfe])],
      ['user.empty', Buffer.alloc(0)],
      ['user.nul-only', Buffer.from([0])],
      ['user.odd name=with\nnewline "quotes" \\ and é', Buffer.from('v')],
    ];
    const r = agree((v) => {
      const f = fresh(v);
      for (const [name, value] of values) setXattr(f, name, value);
      return hex(listXattrs(f));
    });
    assert.deepEqual(r, { ok: hex(values.map(([name, value]) => ({ name, value }))).sort() });
  });

  it('lists many attributes, sorted by name', (t) => {
    if (!needNative(t)) return;
    const want = Array.from({ length: 50 }, (_, i) => ({ name: `user.n${String(49 - i).padStart(2, '0')}`, value: Buffer.from([i, 0xff - i, 0, i]) }));
    const r = agree((v) => {
      const f = fresh(v);
      for (const x of want) setXattr(f, x.name, x.value);
      return hex(listXattrs(f));
    });
    assert.deepEqual(r, { ok: hex([...want].sort((a, b) => (a.name < b.name ? -1 : 1))) });
  });

  it('sets and lists a 64 KiB value (the Linux maximum); one byte more is E2BIG for both', (t) => {
    if (!needNative(t)) return;
    if (!roomy) return t.skip('no file system here takes 64 KiB xattr values (tmpfs before Linux 6.6)');
    const big = Buffer.alloc(65536);
    for (let i = 0; i < big.length; i++) big[i] = (i * 131 + 7) & 0xff;
    const r = agree((v) => {
      const f = join(roomy!, `big-${v}`);
      writeFileSync(f, '');
      setXattr(f, 'user.big', big);
      const got = listXattrs(f);
      return got.length === 1 && got[0]!.name === 'user.big' && got[0]!.value.equals(big);
    });
    assert.deepEqual(r, { ok: true });
    const tooBig = agree(() => setXattr(join(roomy!, 'big-native'), 'user.big', Buffer.alloc(65537)));
    assert.equal('error' in tooBig && tooBig.error.code, 'E2BIG');
  });

  it('acts on a symlink itself: user.* on a link fails the same way, trusted.* lands on the link, not its target', (t) => {
    if (!needNative(t)) return;
    if (process.getuid?.() !== 0) return t.skip('trusted.* needs root');
    const target = fresh('target');
    setXattr(target, 'user.on-target', Buffer.from('t'));
    const r = agree((v) => {
      const link = join(dir, `link-${v}`);
      symlinkSync(target, link);
      let userErr: string | undefined;
      try { setXattr(link, 'user.x', Buffer.from('x')); } catch (err) { userErr = (err as Error).message; }
      const before = hex(listXattrs(link));
      setXattr(link, 'trusted.same', Buffer.from([0, 1]));
      const after = hex(listXattrs(link));
      removeXattr(link, 'trusted.same');
      return { userErr: userErr?.replace(link, '<link>'), before, after, removed: hex(listXattrs(link)) };
    });
    assert.deepEqual(r, { ok: { userErr: nodeMessage('EPERM', 'lsetxattr', '<link>'), before: [], after: [['trusted.same', '0001']], removed: [] } });
    assert.deepEqual(hex(listXattrs(target)), [['user.on-target', '74']]);
  });

  it('errors read like Node fs errors (code, errno, syscall, path, message) and are the same for both', (t) => {
    if (!needNative(t)) return;
    const missing = join(dir, 'missing');
    const f = fresh();
    const cases: Array<[string, string, (v: Variant) => unknown]> = [
      ['ENOENT', 'llistxattr', () => listXattrs(missing)],
      ['ENOENT', 'lsetxattr', () => setXattr(missing, 'user.a', Buffer.from('a'))],
      ['ENODATA', 'lremovexattr', () => removeXattr(f, 'user.never-set')],
      ['ENOTSUP', 'lsetxattr', () => setXattr(f, 'nonamespace.a', Buffer.from('a'))],
      ['ENOENT', 'utimensat', () => setTimesNs(missing, 1n, 1n)],
      ['EEXIST', 'mknod', () => makeNode(f, 'fifo', 0o600)],
    ];
    for (const [code, syscall, fn] of cases) {
      const path = syscall === 'lremovexattr' || syscall === 'mknod' || code === 'ENOTSUP' ? f : missing;
      const r = agree(fn);
      assert.deepEqual(r, { error: { name: 'Error', code, errno: errnoOf(code), syscall, path, message: nodeMessage(code, syscall, path) } }, `${code} ${syscall}`);
    }
    // A NUL would make the system call act on a shorter path: both refuse it as Node does.
    assert.deepEqual(agree(() => setXattr(`${f}\0x`, 'user.a', Buffer.from('a'))), { error: { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' } });
  });

  it('POSIX ACLs round-trip as system.posix_acl_* xattrs: the copy has the same getfacl output', (t) => {
    if (!needNative(t)) return;
    const src = join(dir, 'acl-src');
    mkdirSync(src);
    execFileSync('setfacl', ['-m', 'u:1234:r-x,g:5678:rw-,m::rwx', src]);
    execFileSync('setfacl', ['-d', '-m', 'u:4321:rwx', src]);
    const getfacl = (p: string) => execFileSync('getfacl', ['--omit-header', '--absolute-names', p]).toString();
    const r = agree((v) => {
      const acls = listXattrs(src).filter((x) => x.name.startsWith('system.posix_acl_'));
      const copy = join(dir, `acl-copy-${v}`);
      mkdirSync(copy);
      for (const x of acls) setXattr(copy, x.name, x.value);
      return { names: acls.map((x) => x.name), same: getfacl(copy) === getfacl(src) };
    });
    assert.deepEqual(r, { ok: { names: ['system.posix_acl_access', 'system.posix_acl_default'], same: true } });
    assert.match(getfacl(src), /user:1234:r-x/);
  });

  it('makes FIFO, character and block nodes with exactly the mode asked (umask and setuid bits too) and the device number', (t) => {
    if (!needNative(t)) return;
    if (process.getuid?.() !== 0) return t.skip('device nodes need root');
    const old = process.umask(0o077);
    try {
      const r = agree((v) => {
        const out: Array<[string, number, number, boolean]> = [];
        for (const [kind, mode, major, minor] of [['fifo', 0o664, 0, 0], ['char', 0o4755, 1, 3], ['block', 0o2640, 259, 70000], ['char', 0o1666, 4095, 1048575]] as const) {
          const p = join(dir, `node-${v}-${out.length}`);
          makeNode(p, kind, mode, major, minor);
          const st = lstatSync(p);
          const isKind = kind === 'fifo' ? st.isFIFO() : kind === 'char' ? st.isCharacterDevice() : st.isBlockDevice();
          out.push([kind, st.mode & 0o7777, kind === 'fifo' ? 0 : st.rdev, isKind]);
        }
        return out;
      });
      // glibc's makedev for majors below 4096: minor's low byte, then 12 bits of major, then minor's upper bits.
      const dev = (major: number, minor: number) => (minor & 0xff) + major * 2 ** 8 + Math.floor(minor / 256) * 2 ** 20;
      assert.deepEqual(r, { ok: [['fifo', 0o664, 0, true], ['char', 0o4755, dev(1, 3), true], ['block', 0o2640, dev(259, 70000), true], ['char', 0o1666, dev(4095, 1048575), true]] });
    } finally {
      process.umask(old);
    }
  });

  it('sets nanosecond times, negative and before 1970, on files and on symlinks themselves', (t) => {
    if (!needNative(t)) return;
    const times: Array<[bigint, bigint]> = [
      [1_700_000_000_123_456_789n, 1_600_000_000_000_000_001n],
      [-1n, -1_500_000_001n], // 1969-12-31T23:59:59.999999999 and 23:59:58.499999999
      [-1_000_000_000_123_456_789n, 0n], // 1938
      [999_999_999n, 4_102_444_800_999_999_999n], // 2100
    ];
    const target = fresh('times-target');
    const targetBefore = lstatSync(target, { bigint: true }).mtimeNs;
    const r = agree((v) => {
      const got: string[] = [];
      const f = fresh(v);
      const link = join(dir, `times-link-${v}`);
      symlinkSync(target, link);
      for (const [a, m] of times) {
        for (const p of [f, link]) {
          setTimesNs(p, a, m);
          const st = lstatSync(p, { bigint: true });
          got.push(`${st.atimeNs} ${st.mtimeNs}`);
        }
      }
      return got;
    });
    assert.deepEqual(r, { ok: times.flatMap(([a, m]) => [`${a} ${m}`, `${a} ${m}`]) });
    assert.equal(lstatSync(target, { bigint: true }).mtimeNs, targetBefore, 'the symlink target keeps its times');
  });

  it('exchanges two directories, and a directory and a file, atomically (native); the twin cannot and changes nothing', (t) => {
    if (!needNative(t)) return;
    const make = (v: string) => {
      const a = join(dir, `xa-${v}`), b = join(dir, `xb-${v}`), f = join(dir, `xf-${v}`);
      mkdirSync(a); writeFileSync(join(a, 'in-a'), 'A');
      mkdirSync(b); writeFileSync(join(b, 'in-b'), 'B');
      writeFileSync(f, 'F');
      return { a, b, f, ia: lstatSync(a).ino, ib: lstatSync(b).ino, iff: lstatSync(f).ino };
    };
    const r = both((v) => {
      const p = make(v);
      const swapped = exchangePaths(p.a, p.b);
      const dirs = [lstatSync(p.a).ino === p.ib, lstatSync(p.b).ino === p.ia];
      const mixed = exchangePaths(p.a, p.f);
      return { swapped, dirs, mixed, fileAtA: lstatSync(p.a).isFile() && readFileSync(p.a, 'utf8') === 'F' && lstatSync(p.a).ino === p.iff };
    });
    assert.deepEqual(r.native, { ok: { swapped: true, dirs: [true, true], mixed: true, fileAtA: true } });
    assert.deepEqual(r.twin, { ok: { swapped: false, dirs: [false, false], mixed: false, fileAtA: false } });
    // A missing side is an error, not "unsupported": the caller must not fall back to renames.
    const missing = both(() => exchangePaths(join(dir, 'xa-native'), join(dir, 'no-such')));
    assert.equal('error' in missing.native && missing.native.error.code, 'ENOENT');
    assert.equal('error' in missing.native && missing.native.error.syscall, 'renameat2');
    // exchangeOrRename ends with the new tree at b either way; only the route differs.
    const routes = both((v) => {
      const p = make(`route-${v}`);
      const how = exchangeOrRename(p.a, p.b, join(dir, `aside-${v}`));
      return { how, atB: readFileSync(join(p.b, 'in-a'), 'utf8') };
    });
    assert.deepEqual(routes, { native: { ok: { how: 'exchanged', atB: 'A' } }, twin: { ok: { how: 'renamed', atB: 'A' } } });
  });

  it('names and ids of users and groups: root, every /etc entry, and missing ones', (t) => {
    if (!needNative(t)) return;
    assert.deepEqual(agree(() => [userName(0), groupName(0), userId('root'), groupId('root')]), { ok: ['root', 'root', 0, 0] });
    assert.deepEqual(agree(() => [userName(3_999_999_999), groupName(3_999_999_998), userId('xfer-no-such-user'), groupId('xfer-no-such-group'), userId(''), groupId('')]),
      { ok: [undefined, undefined, undefined, undefined, undefined, undefined] });
    for (const [file, byId, byName] of [['/etc/passwd', userName, userId], ['/etc/group', groupName, groupId]] as const) {
      for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
        const [name, , id] = line.split(':');
        const r = agree(() => [byId(Number(id)), byName(name!)]);
        assert.ok('ok' in r && r.ok[1] === Number(id), `${file}: ${line}`);
      }
    }
  });
});
