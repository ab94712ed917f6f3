/**
 * What the server reports to its operator. The library never prints: createServer takes a
 * logger (default: silent) and `xfer serve` (cli/serve.ts) hands it one writing to stderr.
 * The shape is pino's (`logger.info({ fields }, 'message')`), so a pino logger fits as is.
 * Fields never hold tokens or Authorization headers.
 */
export interface ServerLogger {
  debug(fields: object, message?: string): void;
  info(fields: object, message?: string): void;
  warn(fields: object, message?: string): void;
  error(fields: object, message?: string): void;
}

const nothing = (): void => {};

export const silentLogger: ServerLogger = { debug: nothing, info: nothing, warn: nothing, error: nothing };
