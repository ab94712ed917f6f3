/**
 * Child process of test/tree-swap.test.ts: stages tree version `argv[3]` (one directory,
 * one file whose content names the version) for target `argv[2]` and commits it, killing
 * itself (SIGKILL, as a crash would) just after the first step of the swap.
 */
import { Staging, treeSwapTestSeam } from '../../src/reconstruct/staging.js';
import { stageTreeVersion } from './swap-tree.js';

const [target, version] = process.argv.slice(2) as [string, string];
treeSwapTestSeam.afterFirstStep = () => {
  process.kill(process.pid, 'SIGKILL');
};
const staging = await Staging.create(target, 'tree');
await stageTreeVersion(staging, version);
await staging.commit();
