/*
 * Large objects by multipart upload (S3's CreateMultipartUpload, UploadPart,
 * CompleteMultipartUpload). The S3 store writes an object larger than
 * S3_MULTIPART_ABOVE_BYTES this way: a single PUT of a large body fails as a whole on any
 * broken connection, and S3 refuses single PUTs above 5 GiB. Parts go one at a time (a
 * store uploads at most a part's worth of each such object at once), each with its
 * Content-MD5, each retried alone by the store's retry policy.
 *
 * Contract: the object appears only when complete() succeeds (S3 shows nothing of an
 * upload before), so a manifest uploaded in parts is still stored after its chunks (the
 * store flushes before completing). On any failure, and when the caller gives up, abort()
 * removes the parts stored so far, so no orphaned parts are billed. A process killed in
 * between leaves its parts behind: README "S3 storage" asks for a lifecycle rule
 * (AbortIncompleteMultipartUpload) on the bucket, which S3 applies to such leftovers.
 */
import { createHash } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { IoError, isXferError } from '../../core/errors.js';
import { MiB } from '../../core/sizes.js';

/** An object of more bytes than this is uploaded in parts (S3_PART_BYTES each); at most this, one PUT. */
export const S3_MULTIPART_ABOVE_BYTES = 64 * MiB;
/** Bytes of each part but the last. */
export const S3_PART_BYTES = 16 * MiB;
/** S3's least part (all parts but the last): smaller parts fail the upload's completion. */
export const S3_MIN_PART_BYTES = 5 * MiB;
/** S3's most parts in one upload (16 MiB parts: objects up to 160 GiB). */
export const S3_MAX_PARTS = 10_000;

/** What a multipart upload needs of its store: the client, and its retrying request runner. */
export interface MultipartContext {
  readonly client: S3Client;
  readonly bucket: string;
  /** s3://bucket/prefix, for messages. */
  readonly where: string;
  /** Runs one request, retried while its failures are transient (S3Store.request). */
  request<T>(what: string, signal: AbortSignal | undefined, op: (signal: AbortSignal) => Promise<T>): Promise<T>;
}

/** One multipart upload under way. Parts are numbered from 1 in the order they are given. */
export class MultipartUpload {
  private readonly parts: { PartNumber: number; ETag: string }[] = [];
  /** The binary MD5 of each part: the object's ETag after completion is derived from them. */
  private readonly md5s: Buffer[] = [];
  private finished = false;

  private constructor(
    private readonly ctx: MultipartContext,
    readonly key: string,
    private readonly uploadId: string,
  ) {}

  static async start(ctx: MultipartContext, key: string, signal?: AbortSignal): Promise<MultipartUpload> {
    const out = await ctx.request(`POST ${ctx.where}${key}?uploads`, signal, (abortSignal) =>
      ctx.client.send(new CreateMultipartUploadCommand({ Bucket: ctx.bucket, Key: key }), { abortSignal }),
    );
    if (out.UploadId === undefined) throw new IoError(`POST ${ctx.where}${key}?uploads: the answer names no upload`);
    return new MultipartUpload(ctx, key, out.UploadId);
  }

  /** Uploads the next part (at least S3_MIN_PART_BYTES unless it is the last). */
  async addPart(body: Buffer, signal?: AbortSignal): Promise<void> {
    const number = this.parts.length + 1;
    if (number > S3_MAX_PARTS) throw new IoError(`${this.ctx.where}${this.key}: more than ${S3_MAX_PARTS} parts`);
    const md5 = createHash('md5').update(body).digest();
    const out = await this.ctx.request(`PUT ${this.ctx.where}${this.key} part ${number}`, signal, (abortSignal) =>
      this.ctx.client.send(
        new UploadPartCommand({
          Bucket: this.ctx.bucket, Key: this.key, UploadId: this.uploadId, PartNumber: number,
          Body: body, ContentLength: body.length, ContentMD5: md5.toString('base64'),
        }),
        { abortSignal },
      ),
    );
    if (out.ETag === undefined) throw new IoError(`PUT ${this.ctx.where}${this.key} part ${number}: the answer has no ETag`);
    this.parts.push({ PartNumber: number, ETag: out.ETag });
    this.md5s.push(md5);
  }

  /**
   * Makes the object of the parts given. A completion whose answer was lost and whose retry
   * finds the upload gone (NoSuchUpload) is taken as done when the object's ETag is the one
   * S3 gives an object of exactly these parts (the MD5 of their MD5s, '-', their count).
   */
  async complete(signal?: AbortSignal): Promise<void> {
    const what = `POST ${this.ctx.where}${this.key}?uploadId`;
    let attempts = 0;
    try {
      await this.ctx.request(what, signal, (abortSignal) => {
        attempts++;
        return this.ctx.client.send(
          new CompleteMultipartUploadCommand({ Bucket: this.ctx.bucket, Key: this.key, UploadId: this.uploadId, MultipartUpload: { Parts: this.parts } }),
          { abortSignal },
        );
      });
    } catch (err) {
      if (!(attempts > 1 && isXferError(err, 'XFER_NOT_FOUND') && (await this.storedAsWhole(signal)))) throw err;
    }
    this.finished = true;
  }

  /** Removes the parts stored so far (best effort: a failure here is not the caller's error). */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    await this.ctx
      .request(`DELETE ${this.ctx.where}${this.key}?uploadId`, undefined, (abortSignal) =>
        this.ctx.client.send(new AbortMultipartUploadCommand({ Bucket: this.ctx.bucket, Key: this.key, UploadId: this.uploadId }), { abortSignal }),
      )
      .catch(() => undefined);
  }

  private async storedAsWhole(signal: AbortSignal | undefined): Promise<boolean> {
    const expected = `"${createHash('md5').update(Buffer.concat(this.md5s)).digest('hex')}-${this.parts.length}"`;
    try {
      const head = await this.ctx.request(`HEAD ${this.ctx.where}${this.key}`, signal, (abortSignal) =>
        this.ctx.client.send(new HeadObjectCommand({ Bucket: this.ctx.bucket, Key: this.key }), { abortSignal }),
      );
      return head.ETag === expected;
    } catch {
      return false;
    }
  }
}

/** Uploads `body` in parts of `partBytes` (fewer, larger parts if it would take more than S3_MAX_PARTS); aborts on failure. */
export async function putInParts(ctx: MultipartContext, key: string, body: Buffer, partBytes: number, signal?: AbortSignal): Promise<void> {
  const size = Math.max(partBytes, Math.ceil(body.length / S3_MAX_PARTS));
  const upload = await MultipartUpload.start(ctx, key, signal);
  try {
    for (let at = 0; at < body.length; at += size) await upload.addPart(body.subarray(at, at + size), signal);
    await upload.complete(signal);
  } catch (err) {
    await upload.abort();
    throw err;
  }
}
