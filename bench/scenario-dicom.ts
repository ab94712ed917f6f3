/**
 * Scenario e: a DICOM series (a directory of single-frame files) and a DICOM volume (one
 * multi-frame file), each first copied into an empty destination ("original"), then its
 * anonymized version (and, for the volume, the version with one frame replaced) copied onto
 * a destination holding the original. The copying is bench/scenario-tree.ts's copyVersions.
 */
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  DICOM_SERIES_VERSIONS,
  DICOM_VOLUME_VERSIONS,
  FRAME_BYTES,
  MAX_VOLUME_FRAMES,
  dicomSeries,
  dicomVolume,
  writeDicomSeries,
  writeStream,
  type DicomSeriesOptions,
  type DicomSeriesVersion,
  type DicomVolumeOptions,
  type DicomVolumeVersion,
} from '../fixtures/index.js';
import type { MacroRow } from './harness.js';
import { BASE_MTIME_SECONDS, CHANGED_MTIME_SECONDS, copyVersions, ensureInputs, setMtime, type InputVersion, type VersionScenarioOptions } from './scenario-tree.js';

/** Seed of the generated study (any fixed value: runs must see the same bytes). */
const DICOM_SEED = 2026;
/** Base name of the series directory in every version and destination. */
const SERIES_NAME = 'series';
/** Scenario step of each fixture version. */
const DICOM_STEPS: Readonly<Record<DicomVolumeVersion, string>> = { base: 'original', anonymized: 'anonymized', 'replaced-frame': 'replaced frame' };

function seriesBytes(opts: DicomSeriesOptions): number {
  let n = 0;
  for (const f of dicomSeries(opts).files()) n += f.sizeBytes;
  return n;
}

/** Scenario e: the series and the volume get half of o.sizeBytes each (the volume at most MAX_VOLUME_FRAMES frames). */
export async function runDicom(o: VersionScenarioOptions): Promise<MacroRow[]> {
  const halfBytes = Math.floor(o.sizeBytes / 2);
  const series: DicomSeriesOptions = { seed: DICOM_SEED, sizeBytes: halfBytes };
  // Capped at MAX_VOLUME_FRAMES frames' worth: dicomVolume then drops one frame to fit the header.
  const volume: DicomVolumeOptions = { seed: DICOM_SEED, sizeBytes: Math.min(halfBytes, MAX_VOLUME_FRAMES * FRAME_BYTES) };
  const volumeName = dicomVolume(volume).name;
  const inputs = join(o.work, 'dicom', 'inputs');
  const seriesPath = (v: DicomSeriesVersion) => join(inputs, v, SERIES_NAME);
  const volumePath = (v: DicomVolumeVersion) => join(inputs, v, volumeName);

  await ensureInputs(inputs, { series, volume }, async () => {
    for (const v of DICOM_SERIES_VERSIONS) await writeDicomSeries(seriesPath(v), { ...series, version: v });
    for (const v of DICOM_VOLUME_VERSIONS) {
      await mkdir(dirname(volumePath(v)), { recursive: true });
      await writeStream(dicomVolume({ ...volume, version: v }).stream(), volumePath(v));
    }
    // Every file of a later version is rewritten (anonymizing touches each header). The
    // volume's versions name every version directory (the series' are a subset).
    for (const v of DICOM_VOLUME_VERSIONS) setMtime([join(inputs, v)], v === 'base' ? BASE_MTIME_SECONDS : CHANGED_MTIME_SECONDS, true);
  }, o.log);

  const seriesVersion = (v: DicomSeriesVersion): InputVersion => ({ step: DICOM_STEPS[v], id: v, path: seriesPath(v), bytes: seriesBytes({ ...series, version: v }) });
  const volumeVersion = (v: DicomVolumeVersion): InputVersion => ({ step: DICOM_STEPS[v], id: v, path: volumePath(v), bytes: dicomVolume({ ...volume, version: v }).sizeBytes });
  return [
    ...(await copyVersions(o, { label: 'dicom series', name: SERIES_NAME, isDir: true, versions: [seriesVersion('base'), seriesVersion('anonymized')] }, join(o.work, 'dicom', 'dest-series'))),
    ...(await copyVersions(o, { label: 'dicom volume', name: volumeName, isDir: false, versions: [volumeVersion('base'), volumeVersion('anonymized'), volumeVersion('replaced-frame')] }, join(o.work, 'dicom', 'dest-volume'))),
  ];
}
