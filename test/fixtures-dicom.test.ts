import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import dicomParser from 'dicom-parser';
import { isXferError } from '../src/core/errors.js';
import {
  COLUMNS,
  CT_IMAGE_STORAGE,
  EXPLICIT_VR_LITTLE_ENDIAN,
  FRAME_BYTES,
  MAX_VOLUME_FRAMES,
  MULTIFRAME_GRAYSCALE_WORD_SC_IMAGE_STORAGE,
  ROWS,
  dicomSeries,
  dicomVolume,
  readAll,
  writeDicomSeries,
  writeStream,
  type DicomFile,
} from '../fixtures/index.js';

type DataSet = ReturnType<typeof dicomParser.parseDicom>;

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const UID = /^(0|[1-9]\d*)(\.(0|[1-9]\d*))+$/;
const MAX_UID_CHARS = 64;
/** Tags an anonymized version may differ in: the three replaced attributes and the removal mark. */
const ANONYMIZED_TAGS = ['x00100010', 'x00100020', 'x00100030', 'x00120062'];

function parse(bytes: Uint8Array): DataSet {
  return dicomParser.parseDicom(bytes);
}

/** Raw value bytes of every element, by tag. */
function valuesOf(ds: DataSet): Map<string, Buffer> {
  const values = new Map<string, Buffer>();
  for (const [tag, e] of Object.entries(ds.elements)) values.set(tag, Buffer.from(ds.byteArray.subarray(e.dataOffset, e.dataOffset + e.length)));
  return values;
}

function differingTags(a: DataSet, b: DataSet): string[] {
  const va = valuesOf(a);
  const vb = valuesOf(b);
  return [...new Set([...va.keys(), ...vb.keys()])].filter((tag) => !va.get(tag)?.equals(vb.get(tag) ?? Buffer.alloc(0)) || !va.has(tag) || !vb.has(tag)).sort();
}

/** What every fixture file must be, whatever its kind: valid Part 10, explicit VR little endian, 512x512 16/12/11 unsigned. */
function assertValidPart10(bytes: Buffer, file: DicomFile, sopClassUid: string): DataSet {
  assert.equal(bytes.length, file.sizeBytes, 'sizeBytes is exact');
  assert.ok(bytes.subarray(0, 128).every((b) => b === 0), '128-byte zero preamble');
  assert.equal(bytes.toString('latin1', 128, 132), 'DICM');
  const ds = parse(bytes);
  // (0002,0000) counts the bytes of the rest of group 0002, which ends where the dataset begins.
  const meta = Object.entries(ds.elements).filter(([tag]) => tag.startsWith('x0002'));
  const metaEnd = Math.max(...meta.map(([, e]) => e.dataOffset + e.length));
  const groupLength = ds.elements.x00020000!;
  assert.equal(ds.uint32('x00020000'), metaEnd - (groupLength.dataOffset + groupLength.length));
  assert.deepEqual([...ds.byteArray.subarray(ds.elements.x00020001!.dataOffset, ds.elements.x00020001!.dataOffset + 2)], [0, 1]);
  assert.equal(ds.string('x00020002'), sopClassUid);
  assert.equal(ds.string('x00080016'), sopClassUid);
  assert.equal(ds.string('x00020003'), ds.string('x00080018'), 'MediaStorageSOPInstanceUID = SOPInstanceUID');
  assert.equal(ds.string('x00020010'), EXPLICIT_VR_LITTLE_ENDIAN);
  assert.match(ds.string('x00020012') ?? '', UID);
  for (const tag of ['x00020003', 'x00080018', 'x0020000d', 'x0020000e']) {
    const uid = ds.string(tag) ?? '';
    assert.match(uid, UID, tag);
    assert.ok(uid.length <= MAX_UID_CHARS, tag);
  }
  for (const [tag, e] of Object.entries(ds.elements)) assert.equal(e.length % 2, 0, `${tag} has an even length`);
  assert.equal(ds.elements.x00100010!.vr, 'PN');
  assert.equal(ds.elements.x00280010!.vr, 'US');
  assert.equal(ds.string('x00080060'), 'CT');
  assert.equal(ds.uint16('x00280010'), ROWS);
  assert.equal(ds.uint16('x00280011'), COLUMNS);
  assert.equal(ds.uint16('x00280002'), 1);
  assert.equal(ds.string('x00280004'), 'MONOCHROME2');
  assert.equal(ds.uint16('x00280100'), 16);
  assert.equal(ds.uint16('x00280101'), 12);
  assert.equal(ds.uint16('x00280102'), 11);
  assert.equal(ds.uint16('x00280103'), 0);
  const pixels = ds.elements.x7fe00010!;
  assert.equal(pixels.vr, 'OW');
  assert.equal(pixels.length, ROWS * COLUMNS * 2 * file.frames);
  assert.equal(pixels.dataOffset, file.pixelDataOffset);
  assert.equal(pixels.dataOffset + pixels.length, bytes.length, 'pixel data is the last element');
  return ds;
}

/** A frame as stored values (the test host is little-endian, as the fixtures require). */
function frameValues(bytes: Buffer, offset: number): Uint16Array {
  return new Uint16Array(Uint8Array.from(bytes.subarray(offset, offset + FRAME_BYTES)).buffer);
}

describe('dicom-series', () => {
  const series = dicomSeries({ seed: 1, count: 3 });
  const files = [...series.files()].map((file) => ({ file, bytes: readAll(file.stream()) }));

  it('is deterministic: the first file of seed 1 hashes to its pinned value', () => {
    assert.equal(sha256(files[0]!.bytes), '0d39dd4a78c981d4f7f9d9eb11bcd0a65c09873c0050b9df15ed26a93b9ec4b9');
    assert.ok(readAll(dicomSeries({ seed: 1, count: 3 }).file(0).stream()).equals(files[0]!.bytes));
    assert.ok(!readAll(dicomSeries({ seed: 2, count: 3 }).file(0).stream()).equals(files[0]!.bytes));
  });

  it('every file is valid CT Image Storage Part 10 that dicom-parser reads back', () => {
    const sopInstances = new Set<string>();
    files.forEach(({ file, bytes }, i) => {
      const ds = assertValidPart10(bytes, file, CT_IMAGE_STORAGE);
      assert.equal(file.name, `IM00000${i + 1}.dcm`);
      assert.equal(ds.string('x00100010'), series.patient.name);
      assert.equal(ds.string('x00100020'), series.patient.id);
      assert.equal(ds.string('x00100030'), series.patient.birthDate);
      assert.match(series.patient.birthDate, /^(19|20)\d{6}$/);
      assert.equal(ds.string('x0020000d'), series.studyInstanceUid);
      assert.equal(ds.string('x0020000e'), series.seriesInstanceUid);
      assert.match(ds.string('x00080020') ?? '', /^20\d{6}$/, 'StudyDate');
      assert.equal(ds.intString('x00200013'), i + 1, 'InstanceNumber');
      assert.equal(ds.elements.x00120062, undefined, 'not marked as de-identified');
      sopInstances.add(ds.string('x00080018')!);
    });
    assert.equal(sopInstances.size, files.length, 'one SOPInstanceUID per file');
  });

  it('pixels look like a CT slice: zero padding outside the field of view, 12-bit values, slices differ', () => {
    const slices = files.map(({ file, bytes }) => frameValues(bytes, file.pixelDataOffset));
    for (const values of slices) {
      assert.equal(values[0], 0, 'corner is padding');
      assert.ok(values.every((v) => v < 4096), '12 bits stored');
      const zeros = values.filter((v) => v === 0).length;
      assert.ok(zeros > 0.15 * values.length && zeros < 0.3 * values.length, `padding share ${zeros / values.length}`);
      const center = values[(ROWS / 2) * COLUMNS + COLUMNS / 2]!;
      assert.ok(center > 900 && center < 1800, `body at the centre (${center})`);
    }
    assert.ok(!Buffer.from(slices[0]!.buffer).equals(Buffer.from(slices[1]!.buffer)));
  });

  it('the count follows the size (whole files that fit, at least one) unless given', () => {
    const fileBytes = series.file(0).sizeBytes;
    assert.equal(dicomSeries({ seed: 1, sizeBytes: 3 * fileBytes + 100 }).count, 3);
    assert.equal(dicomSeries({ seed: 1, sizeBytes: 10 }).count, 1);
    assert.throws(() => dicomSeries({ seed: 1, count: 0 }), (e) => isXferError(e, 'XFER_INVALID_ARGUMENT'));
    assert.throws(() => series.file(3), RangeError);
  });

  it('anonymized: parses, differs only in PatientName, PatientID, PatientBirthDate (+ PatientIdentityRemoved), pixels unchanged', () => {
    const anonymized = dicomSeries({ seed: 1, count: 3, version: 'anonymized' });
    assert.notEqual(anonymized.patient.name, series.patient.name);
    files.forEach(({ file, bytes }, i) => {
      const anonFile = anonymized.file(i);
      const anonBytes = readAll(anonFile.stream());
      const anon = assertValidPart10(anonBytes, anonFile, CT_IMAGE_STORAGE);
      assert.deepEqual(differingTags(parse(bytes), anon), ANONYMIZED_TAGS);
      assert.equal(anon.string('x00100010'), 'ANONYMOUS');
      assert.match(anon.string('x00100020') ?? '', /^ANON-[0-9A-F]{8}$/);
      assert.equal(anon.elements.x00100030!.length, 0, 'birth date emptied');
      assert.equal(anon.string('x00120062'), 'YES');
      // The header changes length, so the unchanged pixels move: what content-defined chunking must absorb.
      assert.notEqual(anonFile.pixelDataOffset, file.pixelDataOffset);
      assert.ok(anonBytes.subarray(anonFile.pixelDataOffset).equals(bytes.subarray(file.pixelDataOffset)));
    });
  });

  it('streams the same bytes whatever the piece size', () => {
    const { file, bytes } = files[1]!;
    for (const pieceBytes of [777, 4096, 300_000]) {
      const pieces = [...file.stream({ pieceBytes })];
      assert.ok(pieces.every((p) => p.length > 0 && p.length <= pieceBytes));
      assert.ok(Buffer.concat(pieces).equals(bytes));
    }
  });

  describe('writeDicomSeries', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'xfer-fixtures-dicom-'));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('writes every file of the series and nothing else', async () => {
      const out = join(dir, 'study');
      const written = await writeDicomSeries(out, { seed: 1, count: 3 });
      assert.deepEqual((await readdir(out)).sort(), files.map((f) => f.file.name));
      for (const { file, bytes } of files) assert.ok((await readFile(join(out, file.name))).equals(bytes));
      assert.equal(written.totalBytes, files.reduce((n, f) => n + f.bytes.length, 0));
    });

    it('refuses a directory that is not empty', async () => {
      const out = join(dir, 'busy');
      await writeDicomSeries(out, { seed: 1, count: 1 });
      await assert.rejects(writeDicomSeries(out, { seed: 1, count: 1 }), (e) => isXferError(e, 'XFER_INVALID_ARGUMENT'));
    });
  });
});

describe('dicom-volume', () => {
  const FRAMES = 3;
  const volume = dicomVolume({ seed: 1, frames: FRAMES });
  const bytes = readAll(volume.stream());

  it('is deterministic: seed 1 with 3 frames hashes to its pinned value', () => {
    assert.equal(sha256(bytes), '6df1ed4d946b5cd74754bb6668405940cc21e729c02a1abec659ce6e8de72218');
  });

  it('is one valid multi-frame Part 10 file: NumberOfFrames, frame increment pointer, frames x 512 x 512 x 2 bytes of pixels', () => {
    const ds = assertValidPart10(bytes, volume, MULTIFRAME_GRAYSCALE_WORD_SC_IMAGE_STORAGE);
    assert.equal(volume.frames, FRAMES);
    assert.equal(ds.intString('x00280008'), FRAMES);
    assert.equal(ds.attributeTag('x00280009'), 'x00182005');
    assert.equal(ds.numStringValues('x00182005'), FRAMES, 'one slice location per frame');
    assert.equal(ds.string('x00100010'), volume.patient.name);
    assert.equal(ds.string('x0020000d'), volume.studyInstanceUid);
    assert.equal(ds.elements.x7fe00010!.length, ROWS * COLUMNS * 2 * FRAMES);
    for (let f = 0; f < FRAMES; f++) {
      assert.deepEqual(volume.frameRange(f), { index: f, offset: volume.pixelDataOffset + f * FRAME_BYTES, length: FRAME_BYTES });
    }
    assert.equal(volume.replacedFrame, null);
  });

  it('the frame count follows the size: the most frames whose file fits, capped by the 32-bit pixel data length', () => {
    const fitted = dicomVolume({ seed: 1, sizeBytes: 4 * FRAME_BYTES + 100 });
    assert.equal(fitted.frames, 3, 'the header does not fit next to 4 frames');
    assert.ok(fitted.sizeBytes <= 4 * FRAME_BYTES + 100);
    assert.equal(dicomVolume({ seed: 1, sizeBytes: 1 }).frames, 1);
    assert.throws(() => dicomVolume({ seed: 1, frames: MAX_VOLUME_FRAMES + 1 }), (e) => isXferError(e, 'XFER_INVALID_ARGUMENT'));
    assert.throws(() => dicomVolume({ seed: 1, sizeBytes: 5 * 1024 ** 3 }), (e) => isXferError(e, 'XFER_INVALID_ARGUMENT'));
  });

  it('replaced-frame: same size, differs only inside the one replaced frame', () => {
    const replaced = dicomVolume({ seed: 1, frames: FRAMES, version: 'replaced-frame' });
    const other = readAll(replaced.stream());
    assert.equal(other.length, bytes.length);
    const range = replaced.replacedFrame!;
    assert.ok(range.index >= 0 && range.index < FRAMES);
    assert.deepEqual(range, volume.frameRange(range.index));
    assert.ok(other.subarray(0, range.offset).equals(bytes.subarray(0, range.offset)));
    assert.ok(other.subarray(range.offset + range.length).equals(bytes.subarray(range.offset + range.length)));
    const before = frameValues(bytes, range.offset);
    const after = frameValues(other, range.offset);
    const changed = before.filter((v, i) => v !== after[i]).length;
    assert.ok(changed > 0.5 * before.length, `most pixels differ (${changed})`);
    assert.ok(after.every((v) => v < 4096));
    assertValidPart10(other, replaced, MULTIFRAME_GRAYSCALE_WORD_SC_IMAGE_STORAGE);
  });

  it('anonymized: differs only in the patient tags; every frame unchanged', () => {
    const anonymized = dicomVolume({ seed: 1, frames: FRAMES, version: 'anonymized' });
    const anonBytes = readAll(anonymized.stream());
    const anon = assertValidPart10(anonBytes, anonymized, MULTIFRAME_GRAYSCALE_WORD_SC_IMAGE_STORAGE);
    assert.deepEqual(differingTags(parse(bytes), anon), ANONYMIZED_TAGS);
    assert.ok(anonBytes.subarray(anonymized.pixelDataOffset).equals(bytes.subarray(volume.pixelDataOffset)));
  });

  it('streams the same bytes whatever the piece size', () => {
    assert.ok(Buffer.concat([...volume.stream({ pieceBytes: 100_003 })]).equals(bytes));
  });

  it('writeStream puts the stream in a file byte for byte', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'xfer-fixtures-volume-'));
    try {
      const path = join(dir, volume.name);
      await writeStream(volume.stream(), path);
      assert.ok((await readFile(path)).equals(bytes));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
