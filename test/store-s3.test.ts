/*
 * The store conformance suite against S3Store on moto_server, a real S3-protocol server
 * started on 127.0.0.1 by the test (skipped, with the reason, if moto_server is absent).
 * Set XFER_TEST_S3_URL (and XFER_TEST_S3_ENDPOINT) to run the same suite against MinIO,
 * Ceph RGW or AWS: README "S3 storage".
 */
import { describe } from 'node:test';
import { runStoreConformance } from './store-conformance.js';
import { freshLocation, motoMissing, openTestStore, removeKeys, useS3Service } from './helpers/s3.js';

describe('S3Store on moto_server', { skip: motoMissing() }, () => {
  const f = useS3Service('moto');
  runStoreConformance('S3Store (moto)', async () => {
    const url = freshLocation(f.service);
    return { store: await openTestStore(f.service, url), cleanup: async () => undefined };
  });
});

describe('S3Store on an outside S3 service (XFER_TEST_S3_URL)', { skip: process.env.XFER_TEST_S3_URL ? false : 'XFER_TEST_S3_URL is not set' }, () => {
  const f = useS3Service('outside');
  runStoreConformance('S3Store (outside)', async () => {
    const url = freshLocation(f.service);
    return { store: await openTestStore(f.service, url), cleanup: () => removeKeys(f.service, url) };
  });
});
