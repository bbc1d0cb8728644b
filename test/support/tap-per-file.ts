// `npm test` runs several small test files in one process (scripts/npm-test.js): each process spends ~1.3 s of CPU
// starting Node and loading the bundle before its first test, about half of a small file's CPU. In the bundle, a
// test file's `import t from 'tap'` resolves here instead: a stand-in for tap's root test that forwards to the
// subtest the group opened for that file. The file's tests, teardowns and failures then stay its own: its
// teardowns run when its last test ends, before the next file starts. Run alone, the stand-in forwards to the root.
import { t as root } from 'tap';

/** Where a group process puts the subtest of the file it is running (scripts/npm-test.js writes the groups). */
const CURRENT_FILE_TEST = Symbol.for('errand.test.currentFileTest');

type Tap = typeof root;

function current(): Tap {
  return ((globalThis as Record<symbol, unknown>)[CURRENT_FILE_TEST] as Tap | undefined) ?? root;
}

const t: Tap = new Proxy(root, {
  get(_root, property) {
    const test = current();
    const value: unknown = Reflect.get(test, property, test);
    return typeof value === 'function' ? value.bind(test) : value;
  },
});

export default t;
export * from 'tap';
