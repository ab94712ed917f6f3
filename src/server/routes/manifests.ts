/**
 * The manifest endpoints (docs/PROTOCOL.md): GET, the commit of a push (PUT), and a
 * manifest store's writes (PUT ?raw=1, DELETE).
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { isZeroChunk } from '../../chunker/zero.js';
import { AbortedError, isXferError, ManifestIncompleteError } from '../../core/errors.js';
import { digestToHex, type ChunkId } from '../../core/ids.js';
import { openManifestFile, type ManifestReader } from '../../manifest/reader.js';
import { manifestTag } from '../../manifest/tag.js';
import type { EntryMeta, ManifestHeader } from '../../manifest/types.js';
import { applyAttributes, attributePolicy } from '../../reconstruct/attributes.js';
import { reconstruct, SET_ID_BITS } from '../../reconstruct/reconstruct.js';
import { drained, sendJson } from '../answer.js';
import { limitedBody } from '../body.js';
import { committedOf } from '../committed.js';
import type { RouteContext } from '../context.js';
import { MAX_MANIFEST_BYTES, SERVER_REBUILD_INFLIGHT_BYTES, SERVER_RECENT_CHUNK_BYTES } from '../limits.js';
import { commitInPlace, IN_PLACE_ABOVE_BYTES } from '../in-place.js';
import { checkNotInsideTarget, materializedPath } from '../paths.js';
import { commitManifest, versionId, versionName } from '../../store/versions.js';
import { crashPoint, type HeldCommit } from '../held.js';
import { windowViews } from '../../io/direct.js';

/** Digests checked per `has` call while validating an uploaded manifest. */
const MANIFEST_CHECK_BATCH = 4096;
/** Missing digests named in a 409 answer, at most. */
const MISSING_NAMED_MAX = 5;

/** The manifest endpoints over `rc`. */
export function manifestRoutes(rc: RouteContext) {
  const { ctx, stages, checksumStages, stageBodies, commits, log, sendTimeoutMs } = rc;
  const { committedVersion, openCommitted, storedHeader } = committedOf(ctx);
  return { storeManifest, deleteManifest, getManifest, putManifest };

  /**
   * PUT /v1/manifests/<path>?raw=1: the bytes stored as the manifest of `name`, as they are
   * (a ManifestStore's put): atomically, within MAX_MANIFEST_BYTES, not validated, nothing
   * committed or materialized. Waits for a commit of the same name in progress.
   */
  async function storeManifest(req: Http2ServerRequest, res: Http2ServerResponse, name: string): Promise<void> {
    await commits.get(name)?.catch(() => {});
    await ctx.store.putManifest(name, limitedBody(req, MAX_MANIFEST_BYTES, 'manifest'), { signal: ctx.signal });
    sendJson(res, 200, {});
  }

  /**
   * DELETE /v1/manifests/<path>: the manifest of `name` goes (404 if there is none); what
   * a commit materialized under files/ stays. Waits for a commit of the same name in progress.
   */
  async function deleteManifest(res: Http2ServerResponse, name: string): Promise<void> {
    await commits.get(name)?.catch(() => {});
    await ctx.store.deleteManifest(name, { signal: ctx.signal });
    sendJson(res, 200, {});
  }

  async function getManifest(req: Http2ServerRequest, res: Http2ServerResponse, name: string): Promise<void> {
    // A client holding a tree's tag (manifest/tag.ts) learns that it is still current from
    // the header alone, without the body (docs/PROTOCOL.md).
    const wanted = req.headers['if-none-match'];
    if (typeof wanted === 'string') {
      const tag = await storedHeader(name).then(manifestTag, (err: unknown) => {
        if (isXferError(err, 'XFER_NOT_FOUND') || isXferError(err, 'XFER_ABORTED')) throw err;
        return undefined; // a damaged header: the body goes, as to any GET
      });
      if (tag !== undefined && wanted.split(',').some((t) => t.trim().replace(/^W\//, '') === `"${tag}"`)) {
        res.writeHead(304, { etag: `"${tag}"` });
        res.end();
        return;
      }
    }
    const body = await ctx.store.getManifest(name, { signal: ctx.signal });
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    for await (const piece of body) {
      if (!res.write(piece)) await drained(res, sendTimeoutMs);
    }
    res.end();
  }

  /**
   * The commit point of a push: validate the manifest, refuse it if any chunk is missing,
   * rebuild and verify the target in a staging copy, store the manifest, swap the target in.
   * Commits to the same name are serialized. With `checksum` (checksumParam) the target's
   * files are read and re-hashed instead of being kept or linked by their size and mtime,
   * and rewritten where they differ: a copy damaged on disk behind its metadata is repaired.
   * With `bodyStaged` (`staged=1`: a tree pushed with a stage) the request carries the manifest's header and
   * trailer only, its body is the one the stage read (server/stage-body.ts); the manifest so
   * made is committed with every check an uploaded one gets.
   */
  async function putManifest(req: Http2ServerRequest, res: Http2ServerResponse, name: string, checksum: boolean, inPlace: boolean, bodyStaged = false): Promise<void> {
    // A store-only server materializes nothing: only the name's place among targets is checked.
    const target = ctx.storeOnly ? undefined : await materializedPath(ctx.filesDir, name, ctx.store, ctx.signal);
    if (target === undefined) await checkNotInsideTarget(name, ctx.store, ctx.signal);
    const tmp = await mkdtemp(join(ctx.tmpDir, 'manifest-'));
    try {
      const file = join(tmp, 'manifest');
      if (bodyStaged) await stageBodies.manifest(req, name, file, ctx.signal);
      else await pipeline(limitedBody(req, MAX_MANIFEST_BYTES, 'manifest'), createWriteStream(file));
      const uploaded = await openManifestFile(file, { signal: ctx.signal });
      const header = uploaded.header;
      await checkChunksPresent(uploaded);
      const previous = commits.get(name) ?? Promise.resolve();
      let staged = false;
      const run = previous.catch(() => {}).then(async () => {
        // The chunks' publish (making them durable) overlaps the rebuild, which reads
        // pending chunks just as well; the manifest is stored, and the target swapped in,
        // only once both are done.
        const flushed = ctx.store.flush({ signal: ctx.signal });
        // Awaited later (beforeCommit, or the finally below), perhaps only after a stage's
        // list ends: a failure meanwhile must not count as unhandled, which exits the process.
        flushed.catch(() => {});
        // One copy on disk (server/held.ts, docs/FORMAT.md): the held steps of this commit,
        // begun once the new copy is verified (a gc may run during the rebuild, not during
        // these steps).
        let held: HeldCommit | undefined;
        const beginHeld = async () => (held ??= ctx.held && target !== undefined ? await ctx.held.beginCommit(name) : undefined);
        const storeManifest = async (nowMs: number) => {
          // Stored as a new version of the target too (store/versions.ts), version first.
          await commitManifest(ctx.store, name, file, header, { signal: ctx.signal, nowMs });
          crashPoint(5);
        };
        // `staged`: the copy about to be swapped in (undefined: the target is kept as it
        // is). Chunks durable (1), the copy rebuilt and verified (2): the current file's
        // chunks the new one lacks are moved into packs and the staged record written (3,
        // 4), the manifest stored (5); the caller swaps (6), then held.finish (7, 8).
        const beforeCommit = async (staged?: string) => {
          await flushed;
          const nowMs = Date.now();
          await (await beginHeld())?.prepare({ manifestFile: file, version: versionName(name, versionId(nowMs, header.digest)), staged }, ctx.signal);
          await storeManifest(nowMs);
        };
        // Store-only (xfer serve --no-files): the chunks are all here and durable, the
        // manifest is stored; nothing is rebuilt, so the whole-file digests are checked
        // where the target is rebuilt next (a pull, which verifies every file). in-place=1
        // and checksum=1 concern a rebuilt copy: there is none.
        if (target === undefined) {
          await beforeCommit();
          return { kind: header.kind, bytesTotal: header.totalBytes, digest: digestToHex(header.digest) };
        }
        // in-place=1 (push --in-place): a large file target is rewritten where it is, only
        // the chunks that changed (server/in-place.ts); else the atomic rebuild below.
        if (inPlace) {
          const current = checksum ? undefined : await openCommitted(name);
          await current?.close();
          try {
            const r = await commitInPlace(file, ctx.store, target, {
              signal: ctx.signal, confineTo: ctx.filesDir, aboveBytes: ctx.inPlaceAboveBytes ?? IN_PLACE_ABOVE_BYTES, committedDigest: current?.header.digest,
              // An in-place target is never held: what its file holds goes into packs before it is written.
              beforeWrite: async () => (await beginHeld())?.prepare(undefined, ctx.signal),
              beforeCommit: async () => {
                await flushed;
                await storeManifest(Date.now());
              },
            });
            if (r) return r;
          } finally {
            await held?.end();
            held = undefined;
          }
        }
        // A stage that built this very file while the chunks arrived: swap it in. Any
        // failure of the stage leaves the target as it was, and the rebuild below runs.
        const stage = stages.take(name);
        // A tree's stage opened without checksum=1 may have linked files by their metadata:
        // not for a commit that trusts none (checksum=1, or held chunks of the target found
        // damaged: such a file keeps its size and mtime, server/held.ts).
        if (stage && (checksum || ctx.held?.hasDamage(name) === true) && stage.spec.kind === 'tree' && !checksumStages.has(stage)) {
          stage.abort(new AbortedError('the commit reads every file (checksum=1, or held chunks found damaged), the stage did not'));
        } else if (stage) {
          const { header, entry } = await firstEntry(file);
          if (await stage.matches(header, entry)) {
            try {
              const r = await stage.commit(beforeCommit);
              // The stage knew the file's mode and mtime only: the rest of the entry's
              // attributes (owner, xattrs, ns time) as for any copy of the server's.
              if (entry && header.kind === 'file') {
                await applyAttributes(target, { ...entry, mode: entry.mode & ~SET_ID_BITS }, attributePolicy({ untrusted: true }), name, { existing: true });
              }
              await held?.finish(ctx.signal);
              if (ctx.stats) ctx.stats.commitsStaged++;
              staged = true;
              return r;
            } catch (err) {
              if (ctx.signal.aborted) throw err;
            } finally {
              await held?.end();
              held = undefined;
            }
          } else stage.abort(new AbortedError('the committed manifest is not the staged file'));
        }
        // Without what is committed, reconstruct trusts no size or mtime: a file target is
        // read through and kept only if it hashes to the manifest's digest, a tree's files
        // are rebuilt, each chunk taken from the old file in place only if it hashes right.
        // Nor does it trust them for a file whose held chunks were found damaged (server/held.ts).
        const committed = checksum || ctx.held?.hasDamage(name) === true ? undefined : await committedVersion(name);
        const rebuild = async (verifyStoreChunks: boolean) =>
          reconstruct(await openManifestFile(file, { signal: ctx.signal }), ctx.store, target, {
            signal: ctx.signal,
            confineTo: ctx.filesDir,
            clearSetId: true,
            attributes: { untrusted: true },
            // The server's copy of a pushed tree is its own materialization of the committed
            // manifest: what the new version lacks goes (it was the previous version's).
            deleteExtra: true,
            reuseTarget: false,
            resumable: false,
            targetDigest: committed?.digest,
            previousFiles: committed?.files,
            verifyStoreChunks,
            beforeCommit,
            // Chunks of held files come as views of read-ahead windows: given back once written and hashed.
            lender: windowViews,
            recentChunkBytes: SERVER_RECENT_CHUNK_BYTES,
            inFlightBytes: SERVER_REBUILD_INFLIGHT_BYTES,
          });
        try {
          // The store is this server's own and every chunk in it was verified when it
          // arrived: the rebuilt files' digests (always checked) prove the chunks read back.
          // Measured: a 2 GiB commit 3.6-4.1 s -> 3.1-3.2 s. If a digest fails, a stored
          // chunk is damaged: the second, verifying run names it (ChunkCorruptError).
          let r;
          try {
            r = await rebuild(false);
          } catch (err) {
            if (!isXferError(err, 'XFER_VERIFY_FAILED')) throw err;
            r = await rebuild(true);
          }
          await held?.finish(ctx.signal);
          return r;
        } finally {
          await held?.end();
          await flushed.catch(() => {});
        }
      });
      commits.set(name, run);
      try {
        const r = await run;
        if (ctx.stats) ctx.stats.commits++;
        log.info({ path: name, kind: r.kind, bytes: r.bytesTotal, digest: r.digest, staged }, 'commit');
        sendJson(res, 200, { kind: r.kind, totalBytes: r.bytesTotal, digest: r.digest });
      } finally {
        if (commits.get(name) === run) commits.delete(name);
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /** A stored-to-be manifest's header and its first entry (a file manifest's only one). */
  async function firstEntry(file: string): Promise<{ header: ManifestHeader; entry: EntryMeta | undefined }> {
    const reader = await openManifestFile(file, { signal: ctx.signal });
    for await (const ev of reader.events()) {
      if (ev.kind === 'entry') return { header: reader.header, entry: ev.meta };
    }
    return { header: reader.header, entry: undefined };
  }

  async function checkChunksPresent(reader: ManifestReader): Promise<void> {
    const algorithm = reader.header.digestAlgorithm;
    let batch: ChunkId[] = [];
    const missingHex: string[] = [];
    let missingCount = 0;
    const check = async () => {
      const present = await ctx.store.has(batch, { signal: ctx.signal });
      present.forEach((p, i) => {
        if (p) return;
        missingCount++;
        if (missingHex.length < MISSING_NAMED_MAX) missingHex.push(digestToHex(batch[i]!.digest));
      });
      batch = [];
    };
    for await (const ev of reader.events()) {
      if (ev.kind !== 'chunks') continue;
      for (const r of ev.records) {
        if (isZeroChunk(algorithm, r.length, r.digest)) continue; // in no store: synthesised (chunker/zero.ts)
        batch.push({ algorithm, digest: r.digest });
        if (batch.length === MANIFEST_CHECK_BATCH) await check();
      }
    }
    if (batch.length) await check();
    if (missingCount > 0) {
      throw new ManifestIncompleteError(
        `manifest refers to ${missingCount} chunks the server does not have (${missingHex.join(', ')}${missingCount > missingHex.length ? ', ...' : ''})`,
      );
    }
  }
}
