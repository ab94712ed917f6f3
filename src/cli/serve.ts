import type { Command } from 'commander';
import { InvalidArgumentError } from '../core/errors.js';
import { createServer, DEFAULT_PORT } from '../server/server.js';

interface ServeFlags {
  root: string;
  host: string;
  port: string;
  tlsCert?: string;
  tlsKey?: string;
  token?: string;
}

export function registerServe(program: Command, signal: AbortSignal): void {
  program
    .command('serve')
    .description('serve a chunk store over HTTP/2 for push, pull and ls')
    .requiredOption('--root <dir>', 'directory for the store (<root>/store) and pushed files (<root>/files)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port (0 picks a free one)', String(DEFAULT_PORT))
    .option('--tls-cert <file>', 'PEM certificate: serve TLS with ALPN h2')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--token <token>', 'require Authorization: Bearer <token> (or set XFER_TOKEN)')
    .action(async (flags: ServeFlags) => {
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`invalid port "${flags.port}"`);
      const server = await createServer({
        root: flags.root,
        host: flags.host,
        port,
        tlsCertFile: flags.tlsCert,
        tlsKeyFile: flags.tlsKey,
        token: flags.token ?? process.env.XFER_TOKEN,
      });
      process.stdout.write(`listening on ${server.url}\n`);
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        signal.addEventListener('abort', () => resolve(), { once: true });
      });
      await server.close();
    });
}
