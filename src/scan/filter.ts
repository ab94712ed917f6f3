import picomatch from 'picomatch';
import { InvalidArgumentError } from '../core/errors.js';

/** One --include or --exclude rule as given, in command-line order. */
export interface FilterRule {
  readonly include: boolean;
  readonly pattern: string;
}

/** A rule compiled: the glob test and what it applies to. */
interface Compiled {
  readonly include: boolean;
  readonly dirOnly: boolean;
  /** Tested against the last path component (a pattern with no '/' and no '**'), else the whole path. */
  readonly nameOnly: boolean;
  readonly test: (s: string) => boolean;
}

/**
 * rsync's include/exclude rules over paths in a transferred tree ('/'-separated, relative to
 * the transfer root, never the root itself). The rules are tried in order and the first one
 * whose pattern matches decides (include: kept; exclude: left out); a path no rule matches is
 * kept. Patterns follow rsync ("INCLUDE/EXCLUDE PATTERN RULES"):
 * - a trailing '/' matches only directories;
 * - a leading '/' anchors the pattern at the transfer root;
 * - a pattern with no '/' (besides those) and no '**' matches an entry's name at any depth;
 *   one with a '/' or '**' matches the whole path, or, if not anchored, its end
 *   (`sub/*.txt` matches `a/sub/x.txt`);
 * - `*` and `?` do not cross '/', `**` does, `[...]` is a class; names starting with '.'
 *   match like any other.
 * The glob part is picomatch's. Callers leave out everything below an excluded directory
 * without asking (rsync does not descend into it).
 */
export class PathFilter {
  private constructor(private readonly rules: readonly Compiled[]) {}

  /** Compiles `rules` (InvalidArgumentError for an empty pattern). */
  static from(rules: readonly FilterRule[]): PathFilter {
    return new PathFilter(rules.map(compile));
  }

  get empty(): boolean {
    return this.rules.length === 0;
  }

  /** Whether entry `path` (a directory if `isDir`) is left out. */
  excludes(path: string, isDir: boolean): boolean {
    const name = path.slice(path.lastIndexOf('/') + 1);
    for (const r of this.rules) {
      if (r.dirOnly && !isDir) continue;
      if (r.test(r.nameOnly ? name : path)) return !r.include;
    }
    return false;
  }
}

function compile(rule: FilterRule): Compiled {
  let p = rule.pattern;
  const dirOnly = p.length > 1 && p.endsWith('/');
  if (dirOnly) p = p.replace(/\/+$/, '');
  const anchored = p.startsWith('/');
  if (anchored) p = p.replace(/^\/+/, '');
  if (p === '') throw new InvalidArgumentError(`--${rule.include ? 'include' : 'exclude'}: an empty pattern matches nothing; give a name or a glob`);
  const nameOnly = !anchored && !p.includes('/') && !p.includes('**');
  const glob = nameOnly || anchored ? p : `**/${p}`;
  return { include: rule.include, dirOnly, nameOnly, test: picomatch(globstars(glob), { dot: true }) };
}

/**
 * rsync's `**` crosses '/' wherever it stands (`src/**.c` matches `src/a/b.c`); picomatch's
 * only as a whole path segment. Each `**` inside a segment becomes the two globs it stands
 * for there: `*` (within the segment) and `*` + `/**` + `/*` (across segments).
 */
function globstars(glob: string): string[] {
  const i = [...glob.matchAll(/\*\*/g)].map((m) => m.index!).find((at) => !((at === 0 || glob[at - 1] === '/') && (at + 2 === glob.length || glob[at + 2] === '/')));
  if (i === undefined) return [glob];
  const [before, after] = [glob.slice(0, i), glob.slice(i + 2)];
  return [...globstars(`${before}*${after}`), ...globstars(`${before}*/**/*${after}`)];
}

/**
 * The rules of an --exclude-from file, as rsync reads one: a pattern per line, blank lines
 * and lines starting with '#' or ';' ignored; a line starting "+ " is an include rule and
 * "- " an exclude rule, any other line an exclude rule. Trailing CRs are dropped.
 */
export function parseRuleFile(text: string): FilterRule[] {
  const out: FilterRule[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.startsWith('#') || line.startsWith(';')) continue;
    if (line.startsWith('+ ')) out.push({ include: true, pattern: line.slice(2) });
    else if (line.startsWith('- ')) out.push({ include: false, pattern: line.slice(2) });
    else out.push({ include: false, pattern: line });
  }
  return out;
}
