/** DELETE /v1/targets/<path> (docs/PROTOCOL.md): `xfer rm` of a target the server holds. */
import { randomBytes } from 'node:crypto';
import { rename, rm, rmdir } from 'node:fs/promises';
import type { Http2ServerResponse } from 'node:http2';
import { join } from 'node:path';
import { fromSystemError } from '../../core/errors.js';
import { checkConfined } from '../../io/safe-path.js';
import type { RemoveAnswer } from '../../protocol/routes.js';
import { quoteName } from '../../store/names.js';
import { removeTargetManifests, targetsToRemove } from '../../store/versions.js';
import { sendJson } from '../answer.js';
import type { RouteContext } from '../context.js';

/** The target routes over `rc`. */
export function targetRoutes(rc: RouteContext) {
  const { ctx, commits, log } = rc;
  return { removeTarget };

  /**
   * Removes target `name` (a folder of targets with `recursive`): for each, after any commit
   * to it in progress, its versions, its manifest, then its copy under files/ (moved into
   * the server's tmp/ at once, then deleted): a manifest never points at a removed copy, and
   * a crash leaves at worst a copy without a manifest (rm again removes it, or a push
   * replaces it) or a leftover in tmp/ (cleared at the next start).
   */
  async function removeTarget(res: Http2ServerResponse, name: string, recursive: boolean): Promise<void> {
    const signal = ctx.signal;
    const names = await targetsToRemove(ctx.store, name, recursive, { signal, describe: quoteName(name) });
    const removed: { path: string; versions: number }[] = [];
    for (const n of names) {
      const run = (commits.get(n) ?? Promise.resolve()).catch(() => {}).then(async () => {
        // One copy on disk (server/held.ts): what the copy holds goes into packs first, then
        // the manifests, the held record, the copy.
        const held = ctx.held && !ctx.storeOnly ? await ctx.held.beginCommit(n) : undefined;
        try {
          await held?.evacuateAll(signal);
          const versions = await removeTargetManifests(ctx.store, n, { signal });
          await held?.dropRecord();
          await removeCopy(n);
          return versions;
        } finally {
          await held?.end();
        }
      });
      commits.set(n, run);
      try {
        removed.push({ path: n, versions: await run });
      } finally {
        if (commits.get(n) === run) commits.delete(n);
      }
      log.info({ path: n }, 'removed');
    }
    if (recursive && names.length > 0 && names[0] !== name) await removeCopy(name);
    sendJson(res, 200, { removed } satisfies RemoveAnswer);
  }

  /**
   * Moves `<files>/<name>` aside into tmp/ and deletes it there; removes folders left empty
   * above it. Never follows a symlink. A store-only server has no copy to remove.
   */
  async function removeCopy(name: string): Promise<void> {
    if (ctx.storeOnly) return; // nothing was materialized (xfer serve --no-files)
    const segments = name.split('/');
    await checkConfined(ctx.filesDir, segments);
    const path = join(ctx.filesDir, ...segments);
    const aside = join(ctx.tmpDir, `removed-${randomBytes(8).toString('hex')}`);
    try {
      await rename(path, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw fromSystemError(err, path, 'remove');
    }
    await rm(aside, { recursive: true, force: true });
    for (let i = segments.length - 1; i > 0; i--) {
      if (!(await rmdir(join(ctx.filesDir, ...segments.slice(0, i))).then(() => true, () => false))) break;
    }
  }
}
