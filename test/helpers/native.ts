/*
 * Running code on the native addon or on its TypeScript twins (XFER_NO_NATIVE=1, read by
 * src/native/addon.ts at each use), with the variable restored afterwards whatever happens.
 */

/** Runs `fn` with XFER_NO_NATIVE=1 set (the TypeScript twins), then restores the variable. */
export function withTwin<T>(fn: () => T): T {
  const saved = process.env.XFER_NO_NATIVE;
  process.env.XFER_NO_NATIVE = '1';
  const restore = () => {
    if (saved === undefined) delete process.env.XFER_NO_NATIVE;
    else process.env.XFER_NO_NATIVE = saved;
  };
  let result: T;
  try {
    result = fn();
  } catch (err) {
    restore();
    throw err;
  }
  if (result instanceof Promise) return result.finally(restore) as T;
  restore();
  return result;
}

/** Runs `fn` as is when `native`, else with the TypeScript twins (withTwin). */
export function withNative<T>(native: boolean, fn: () => T): T {
  return native ? fn() : withTwin(fn);
}
