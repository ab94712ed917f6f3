import { setMaxListeners } from 'node:events';
import { Command, CommanderError } from 'commander';
import { EXIT_OK, EXIT_USAGE, noteExitCode, reportError } from './output.js';

type Register = (program: Command, signal: AbortSignal, setExit: (code: number) => void) => void;

/**
 * Each command's module, in help's order, imported only when the command line needs it
 * (commandsFor): the modules pull in the library, the HTTP client, the server and its
 * logger, the worker pool, about 0.1-0.2 s of a start that `xfer --version` (issue 13: under
 * 0.3 s after install) or a pull with nothing to fetch should not pay for what it never runs.
 */
const COMMANDS: Readonly<Record<string, () => Promise<Register>>> = {
  chunk: async () => (await import('./chunk.js')).registerChunk,
  push: async () => (await import('./push.js')).registerPush,
  pull: async () => (await import('./pull.js')).registerPull,
  verify: async () => (await import('./verify.js')).registerVerify,
  manifest: async () => (await import('./manifest.js')).registerManifest,
  serve: async () => (await import('./serve.js')).registerServe,
  ls: async () => (await import('./ls.js')).registerLs,
  forget: async () => (await import('./forget.js')).registerForget,
  rm: async () => (await import('./rm.js')).registerRm,
  gc: async () => (await import('./gc.js')).registerGc,
};

/**
 * The commands to register for `argv`: the one it names (also as `help <command>`); none
 * for a bare `--version`; every one otherwise (`--help`, no command, an unknown one, so
 * that usage and "did you mean" suggestions list them all). No top-level option takes a
 * value, so the first word that is not an option is the command.
 */
export function commandsFor(argv: readonly string[]): string[] {
  const words = argv.filter((a) => !a.startsWith('-'));
  const name = words[0] === 'help' ? words[1] : words[0];
  if (name !== undefined && Object.hasOwn(COMMANDS, name)) return [name];
  const versionOnly = words.length === 0 && argv.some((a) => a === '-V' || a === '--version') && !argv.some((a) => a === '-h' || a === '--help');
  return versionOnly ? [] : Object.keys(COMMANDS);
}

const EXIT_HELP = `
Exit codes:
  0    success
  1    verify found missing or corrupt chunks
  2    invalid arguments or options
  3    a path, target or manifest does not exist
  4    permission denied
  5    the destination exists and cannot be replaced by this kind of source
  6    a chunk is missing from the store
  7    a chunk is corrupt
  8    a manifest is corrupt or does not match
  9    a rebuilt file does not match its manifest
  10   the source changed while it was being read
  11   other I/O error
  12   the server refused the token
  13   a request was over the server's limits
  14   the server was unreachable, the connection broke (after --retries) or the
       server broke the protocol
  23   partial transfer: some entries could not be copied (names or symlink
       targets that are not valid UTF-8, each reported); the rest was
  70   internal error
  130  interrupted
`;

/**
 * Commander's usage errors ("error: unknown option '--x'", a suggestion on the next line)
 * as every other failure is reported: one line starting "xfer: ", with where to find usage.
 */
export function usageErrorLine(commanderMessage: string): string {
  const text = commanderMessage.replace(/^error:\s*/, '').split('\n').map((l) => l.trim()).filter((l) => l !== '').join(' ');
  return `xfer: ${text} (run xfer --help for usage)\n`;
}

/** Builds the program; exported for in-process tests. */
export async function main(argv: readonly string[]): Promise<number> {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal); // every in-flight operation of a command listens on it
  const onSignal = () => controller.abort(new Error('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let exitCode = EXIT_OK;
  const setExit = (c: number) => {
    exitCode = c;
    noteExitCode(c);
  };
  const program = new Command()
    .name('xfer')
    .description('Chunked, deduplicating, verified file transfer (FastCDC 2020 + BLAKE3)')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(usageErrorLine(str)) })
    .addHelpText('after', EXIT_HELP);
  const registers = await Promise.all(commandsFor(argv).map((name) => COMMANDS[name]!()));
  for (const register of registers) register(program, controller.signal, setExit);
  for (const c of program.commands) c.exitOverride().configureOutput({ outputError: (str, write) => write(usageErrorLine(str)) });
  try {
    await program.parseAsync(argv as string[], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT_OK;
      return EXIT_USAGE;
    }
    return reportError(err);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return exitCode;
}
