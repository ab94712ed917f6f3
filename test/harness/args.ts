/** Flags of the harness commands (bench/soak.ts, bench/fuzz.ts): `--name value`, env fallbacks. */
export function flagValue(argv: readonly string[], name: string, env?: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0) {
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`--${name} needs a value`);
    return v;
  }
  return env === undefined ? undefined : process.env[env];
}

export function hasFlag(argv: readonly string[], name: string): boolean {
  return argv.includes(`--${name}`);
}

/** A non-negative integer flag, with its default. */
export function intFlag(argv: readonly string[], name: string, env: string | undefined, fallback: number): number {
  const v = flagValue(argv, name, env);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got "${v}"`);
  return n;
}

/**
 * Runs a harness command's `main` on this process's arguments: what it resolves to is the
 * exit code; a failure prints `<name>: <stack>` and exits 2.
 */
export function runMain(name: string, main: (argv: string[]) => Promise<number>): void {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err) => {
      console.error(`${name}: ${(err as Error).stack ?? err}`);
      process.exitCode = 2;
    },
  );
}
