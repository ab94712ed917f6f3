/**
 * Names as the filesystem gives them: byte strings. Manifests carry UTF-8 names only
 * (docs/FORMAT.md), so a walk keeps a name only if its bytes are valid UTF-8; Node would
 * otherwise decode the invalid bytes to U+FFFD, a different name, which the filesystem
 * then does not find (or, for a symlink target, stores altered).
 */

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** `bytes` decoded if they are valid UTF-8; undefined otherwise. */
export function strictUtf8(bytes: Uint8Array): string | undefined {
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Bytes of the UTF-8 sequence a lead byte starts, or 0 if it cannot start one. */
function sequenceBytes(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/**
 * A name for a one-line message: its valid UTF-8 as it is; each byte that is not part of a
 * valid sequence, each control character, and DEL as `\xNN`; a backslash as `\\` (so the
 * escaped form is unambiguous, as `ls -b` prints it).
 */
export function escapeName(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i]!;
    const n = sequenceBytes(b);
    const text = n > 1 && i + n <= bytes.length ? strictUtf8(bytes.subarray(i, i + n)) : undefined;
    if (text !== undefined) {
      out += text;
      i += n;
    } else if (n === 1 && b >= 0x20 && b !== 0x7f) {
      out += b === 0x5c ? '\\\\' : String.fromCharCode(b);
      i += 1;
    } else {
      out += `\\x${b.toString(16).padStart(2, '0')}`;
      i += 1;
    }
  }
  return out;
}
