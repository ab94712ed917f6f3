/** What is committed under a name, read through the store's interfaces. */
import { isXferError } from '../core/errors.js';
import { openManifest, type ManifestReader } from '../manifest/reader.js';
import type { ManifestHeader } from '../manifest/types.js';
import { filesOf, type PreviousFile } from '../reconstruct/reconstruct.js';
import type { HandlerContext } from './context.js';

/** Readers of what the server committed (`ctx.store`), each answering undefined where nothing readable is. */
export function committedOf(ctx: HandlerContext) {
  return { openCommitted, committedFile, committedVersion, storedHeader };

  /** The manifest committed under `name`, opened to read through; undefined if there is none. */
  async function openCommitted(name: string): Promise<ManifestReader | undefined> {
    try {
      return await openManifest(await ctx.store.getManifest(name, { signal: ctx.signal }), { signal: ctx.signal });
    } catch (err) {
      if (isXferError(err, 'XFER_ABORTED')) throw err;
      return undefined;
    }
  }

  /** The manifest committed under `name` if it is a file's, to read through; else undefined. */
  async function committedFile(name: string): Promise<ManifestReader | undefined> {
    const reader = await openCommitted(name);
    if (reader?.header.kind === 'file') return reader;
    await reader?.close();
    return undefined;
  }

  /**
   * What is committed under `name`, read once: its digest (what the rebuild may assume the
   * target holds) and its files by entry path ('' for a file manifest's; left out for a
   * tree of more than MAX_PREVIOUS_FILES entries, see filesOf), which reconstruct keeps or links instead
   * of rebuilding when unchanged. Undefined if nothing is committed, or what is cannot be read.
   */
  async function committedVersion(name: string): Promise<{ digest: Uint8Array; files?: Map<string, PreviousFile> } | undefined> {
    const reader = await openCommitted(name);
    if (!reader) return undefined;
    const digest = reader.header.digest;
    try {
      return { digest, files: await filesOf(reader, ctx.signal) };
    } catch (err) {
      // A damaged committed manifest tells nothing about the target: assume nothing.
      if (isXferError(err, 'XFER_ABORTED')) throw err;
      return undefined;
    }
  }

  /** The header of the manifest stored under `name` (NotFoundError if none), read without its body. */
  async function storedHeader(name: string): Promise<ManifestHeader> {
    const reader = await openManifest(await ctx.store.getManifest(name, { signal: ctx.signal }), { signal: ctx.signal });
    await reader.close();
    return reader.header;
  }
}
