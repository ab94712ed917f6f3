import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { parseRuleFile, PathFilter, type FilterRule } from '../src/scan/filter.js';

const ex = (pattern: string): FilterRule => ({ include: false, pattern });
const inc = (pattern: string): FilterRule => ({ include: true, pattern });

/** The paths of `paths` (a trailing '/' marks a directory) that `rules` leave out. */
function leftOut(rules: FilterRule[], paths: string[]): string[] {
  const f = PathFilter.from(rules);
  return paths.filter((p) => (p.endsWith('/') ? f.excludes(p.slice(0, -1), true) : f.excludes(p, false)));
}

describe('include/exclude rules follow rsync', () => {
  it('a pattern with no slash matches the name at any depth, dot files included', () => {
    assert.deepEqual(leftOut([ex('*.log')], ['a.log', 'x/b.log', 'x/y/.c.log', 'a.txt', 'log/']), ['a.log', 'x/b.log', 'x/y/.c.log']);
  });

  it('a leading slash anchors the pattern at the transfer root', () => {
    assert.deepEqual(leftOut([ex('/tmp')], ['tmp/', 'a/tmp/', 'tmp']), ['tmp/', 'tmp']);
    assert.deepEqual(leftOut([ex('/a/*.o')], ['a/x.o', 'b/a/x.o', 'a/b/x.o']), ['a/x.o']);
  });

  it('a trailing slash matches only directories', () => {
    assert.deepEqual(leftOut([ex('cache/')], ['cache/', 'x/cache/', 'cache', 'x/cache']), ['cache/', 'x/cache/']);
  });

  it('* and ? do not cross a slash; ** does', () => {
    assert.deepEqual(leftOut([ex('/src/*.c')], ['src/a.c', 'src/deep/b.c']), ['src/a.c']);
    assert.deepEqual(leftOut([ex('/src/**.c')], ['src/a.c', 'src/deep/b.c', 'other/c.c']), ['src/a.c', 'src/deep/b.c']);
    assert.deepEqual(leftOut([ex('?.txt')], ['a.txt', 'ab.txt']), ['a.txt']);
  });

  it('an unanchored pattern with a slash matches the end of the path', () => {
    assert.deepEqual(leftOut([ex('sub/*.txt')], ['sub/a.txt', 'x/sub/b.txt', 'sub/d/c.txt', 'xsub/a.txt']), ['sub/a.txt', 'x/sub/b.txt']);
  });

  it('the first matching rule wins, in the order given', () => {
    assert.deepEqual(leftOut([inc('keep.log'), ex('*.log')], ['keep.log', 'drop.log', 'x/keep.log']), ['drop.log']);
    assert.deepEqual(leftOut([ex('*.log'), inc('keep.log')], ['keep.log', 'drop.log']), ['keep.log', 'drop.log']);
  });

  it('no rule matching keeps the entry; an empty pattern is refused', () => {
    assert.deepEqual(leftOut([ex('*.o')], ['a.c', 'd/']), []);
    assert.throws(() => PathFilter.from([ex('')]), /empty pattern/);
  });

  it('an exclude file: a pattern per line, # and ; comments and blank lines ignored, "+ " and "- " prefixes', () => {
    const rules = parseRuleFile('# build output\n*.o\n\n; editor files\n+ keep.tmp\n- *.tmp\r\n  \n/cache/\n');
    assert.deepEqual(rules, [ex('*.o'), inc('keep.tmp'), ex('*.tmp'), ex('/cache/')]);
  });
});
