/* The store conformance suite against S3Store on s3rver (npm), started by the test. */
import { describe } from 'node:test';
import { runStoreConformance } from './store-conformance.js';
import { freshLocation, openTestStore, useS3Service } from './helpers/s3.js';

describe('S3Store on s3rver', () => {
  const f = useS3Service('s3rver');
  runStoreConformance('S3Store (s3rver)', async () => {
    const url = freshLocation(f.service);
    return { store: await openTestStore(f.service, url), cleanup: async () => undefined };
  });
});
