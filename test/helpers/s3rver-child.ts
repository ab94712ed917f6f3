/*
 * Runs s3rver (an S3 clone from npm) on 127.0.0.1 and a free port, with its data in the
 * directory given as argv[2], and prints "listening <port>". A child process of the test
 * (see s3.ts) because s3rver's paginated listings need --openssl-legacy-provider on
 * Node 20, a flag of the whole process.
 */
import { createRequire } from 'node:module';

interface S3rverInstance {
  run(): Promise<{ port: number }>;
  close(): Promise<void>;
}
const S3rver = createRequire(import.meta.url)('s3rver') as new (options: object) => S3rverInstance;

const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: process.argv[2], vhostBuckets: false });
const { port } = await server.run();
process.stdout.write(`listening ${port}\n`);
process.on('SIGTERM', () => {
  void server.close().finally(() => process.exit(0));
});
