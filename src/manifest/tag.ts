import { digestToHex } from '../core/ids.js';
import type { ManifestHeader } from './types.js';

/**
 * The tag of a stored tree manifest (an HTTP entity tag, without its quotes; docs/PROTOCOL.md,
 * GET /v1/manifests/): `tree.<algorithm>.<hex digest>`. A tree's digest covers its whole body,
 * every entry with all its attributes and chunks (docs/FORMAT.md), so two trees with one tag
 * rebuild to the same thing. A file manifest has none: its digest is the content's only, and
 * says nothing of its mode or mtime.
 */
export function manifestTag(header: Pick<ManifestHeader, 'kind' | 'digestAlgorithm' | 'digest'>): string | undefined {
  return header.kind === 'tree' ? `tree.${header.digestAlgorithm}.${digestToHex(header.digest)}` : undefined;
}
