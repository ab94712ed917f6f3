import { spawnSync } from 'node:child_process';

/** The Debian package that provides each command tests run (.ci/run installs them). */
const PACKAGE_OF: Readonly<Record<string, string>> = {
  rsync: 'rsync',
  getfattr: 'attr',
  setfattr: 'attr',
  getfacl: 'acl',
  setfacl: 'acl',
  mke2fs: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  'mkfs.xfs': 'xfsprogs',
  'mkfs.btrfs': 'btrfs-progs',
};

/**
 * Throws, naming the package to install, when one of `commands` is not on PATH. Tests that
 * need a tool fail this way instead of skipping: a skipped comparison would pass in CI
 * while checking nothing.
 */
export function requireTools(...commands: string[]): void {
  const missing = commands.filter((c) => spawnSync('sh', ['-c', 'command -v "$1"', 'sh', c], { stdio: 'ignore' }).status !== 0);
  if (missing.length === 0) return;
  const packages = [...new Set(missing.map((c) => PACKAGE_OF[c] ?? c))].join(' ');
  throw new Error(`this test needs ${missing.join(', ')}, which is not installed: apt-get install ${packages} (.ci/run installs it)`);
}
