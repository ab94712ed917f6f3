/**
 * The bodies of tree stages, kept so that the tree's commit can name them instead of
 * sending the manifest again (docs/PROTOCOL.md, `PUT /v1/manifests/<path>?staged=1`).
 *
 * A tree's stage reads the manifest's body as the client writes it (server/stage.ts); the
 * commit that follows used to upload the whole manifest once more (667 KB for a tree of
 * 7,643 files, a second upload of the same bytes on a long link). Each piece of a tree
 * stage's body is written to a file under `<root>/tmp` before the stage parses it, so once
 * the stage has read its end marker the file holds the whole body. A commit with
 * `staged=1` sends only the manifest's header and trailer; the server puts them around the
 * kept body and commits the result exactly as an uploaded manifest: every check runs on it
 * (header checksum, the body's digest against the header's, entries, trailer, chunks
 * present), and the stage is swapped in only if it matches, as for any commit.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import type { Http2ServerRequest } from 'node:http2';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { InvalidArgumentError, NotFoundError } from '../core/errors.js';
import { END_MARKER, HEADER_BYTES, TRAILER_BYTES } from '../manifest/format.js';
import { openManifest } from '../manifest/reader.js';
import { readBody } from './body.js';
import type { Stage } from './stage.js';

/** What a staged commit's body is: the manifest's header, then its trailer. */
export const STAGED_COMMIT_BYTES = HEADER_BYTES + TRAILER_BYTES;

interface KeptBody {
  readonly file: string;
  readonly dir: string;
  stage?: Stage;
}

/** The kept bodies of the tree stages in progress, one per name (as StageHub's stages). */
export class StageBodies {
  private readonly kept = new Map<string, KeptBody>();

  constructor(private readonly tmpDir: string) {}

  /**
   * Keeps the body of the tree stage about to begin for `name`: returns the body to hand to
   * the stage (each piece written to the kept file before the stage sees it), and `attach`,
   * to call with the stage once begun, and `release`, to call once the stage has been
   * answered (the kept file goes). A newer stage of the name takes the place of an older one.
   */
  async keep(name: string, body: AsyncIterable<Buffer>): Promise<{ body: AsyncGenerator<Buffer>; attach: (stage: Stage) => void; release: () => Promise<void> }> {
    const dir = await mkdtemp(join(this.tmpDir, 'stage-body-'));
    const entry: KeptBody = { dir, file: join(dir, 'body') };
    this.kept.set(name, entry);
    const fh = await open(entry.file, 'wx', 0o600);
    async function* teed(): AsyncGenerator<Buffer> {
      try {
        for await (const piece of body) {
          await writeAll(fh, piece);
          yield piece;
        }
      } finally {
        await fh.close().catch(() => {});
      }
    }
    return {
      body: teed(),
      attach: (stage) => (entry.stage = stage),
      release: async () => {
        if (this.kept.get(name) === entry) this.kept.delete(name);
        await fh.close().catch(() => {});
        await rm(dir, { recursive: true, force: true });
      },
    };
  }

  /**
   * A staged commit of `name` (`?staged=1`): reads its body (the manifest's header and
   * trailer, STAGED_COMMIT_BYTES) and writes the whole manifest to `file`: the header, the
   * body the tree stage of `name` read, the trailer. Nothing here vouches for the result:
   * the caller commits it as any uploaded manifest, with every check. 404 NotFoundError if
   * no stage of `name` has read a body whose digest is the header's (none was opened, it
   * failed before its end marker, a newer one replaced it, or another commit took it): the
   * client then sends the whole manifest.
   */
  async manifest(req: Http2ServerRequest, name: string, file: string, signal: AbortSignal): Promise<void> {
    const sent = await readBody(req, STAGED_COMMIT_BYTES, 'staged commit');
    if (sent.length !== STAGED_COMMIT_BYTES) throw new InvalidArgumentError(`a staged commit is a manifest's header and trailer (${STAGED_COMMIT_BYTES} bytes), not ${sent.length} bytes`);
    const gone = () => new NotFoundError(`no stage of ${name} holds this manifest's body: send the manifest`);
    const entry = this.kept.get(name);
    if (!entry?.stage) throw gone();
    // The header as any manifest's is checked (magic, version, checksum, fields); matches()
    // waits for the stage's end marker and compares the body's digest with the header's.
    const reader = await openManifest(onepiece(sent.subarray(0, HEADER_BYTES)), { signal });
    const header = reader.header;
    await reader.close();
    if (!(await entry.stage.matches(header, undefined))) throw gone();
    // Opened before it is read: a stage answered meanwhile removes the name, not what is open.
    let fh: FileHandle;
    try {
      fh = await open(entry.file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw gone();
      throw err;
    }
    try {
      const { size } = await fh.stat();
      // The stage read everything up to its end marker, which the body's last byte is for
      // every client that sends nothing after it; anything else is refused by the commit's checks.
      const last = Buffer.alloc(1);
      if (size === 0 || (await fh.read(last, 0, 1, size - 1)).bytesRead !== 1 || last[0] !== END_MARKER) throw gone();
      const bodyBytes = size - 1;
      const out = createWriteStream(file);
      async function* whole(): AsyncGenerator<Buffer> {
        yield sent.subarray(0, HEADER_BYTES);
        if (bodyBytes > 0) yield* createReadStream('', { fd: fh, start: 0, end: bodyBytes - 1, autoClose: false, signal }) as AsyncIterable<Buffer>;
        yield sent.subarray(HEADER_BYTES);
      }
      await pipeline(whole(), out, { signal });
    } finally {
      await fh.close().catch(() => {});
    }
  }
}

async function* onepiece(piece: Buffer): AsyncGenerator<Buffer> {
  yield piece;
}

async function writeAll(fh: FileHandle, piece: Buffer): Promise<void> {
  for (let at = 0; at < piece.length; ) at += (await fh.write(piece, at, piece.length - at)).bytesWritten;
}
