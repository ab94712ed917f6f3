import { InvalidArgumentError } from '../core/errors.js';
import { composition, type OpenOptions, type StoreEndpoint, type StoreLocation } from './registry.js';

export { checkLocalPath, composition, parseLocation, registerScheme, storeScheme, supportedLocations, unregisterScheme } from './registry.js';
export type { Composition, Decorators, Location, LocationSpec, LocalLocation, Scheme, Store, StoreEndpoint, StoreLocation, TargetInfo, TargetType } from './registry.js';

/**
 * Opens the store behind a store location: a store object the caller passed as it is
 * (never closed by xfer, and not decorated: it is the caller's to compose), anything else
 * through its scheme, with the decorators its entry declares composed around it
 * (registry.ts, composition). Every command and the library open stores here. The
 * endpoint modules are imported here, when a store location is opened, so that a command
 * on local paths only does not load them (issue 15).
 */
export async function openStoreLocation(location: StoreLocation, options: OpenOptions): Promise<StoreEndpoint> {
  refuseWireOptions(location, options);
  if (location.given) return (await import('./store.js')).storeEndpoint(location.given, (name) => name, false);
  const scheme = location.scheme!;
  return scheme.open(location, options, composition(scheme.decorators, options));
}

/** A rate limit applies to a wire: a local path, a store object or a scheme without a network has none. */
export function refuseWireOptions(location: { readonly kind: string; readonly scheme?: { readonly wire: boolean } }, options: { readonly bwlimitBytesPerSecond?: number; readonly connections?: number }): void {
  const wire = location.kind === 'store' && location.scheme?.wire === true;
  if (options.bwlimitBytesPerSecond !== undefined && !wire) {
    throw new InvalidArgumentError('--bwlimit applies to transfers to or from a server (http:// or https://)');
  }
  if (options.connections !== undefined && !wire) {
    throw new InvalidArgumentError('--connections applies to transfers to or from a server (http:// or https://)');
  }
}
