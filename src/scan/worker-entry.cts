/**
 * The file piscina loads in each worker thread: CommonJS on purpose. Piscina require()s
 * its worker file first, and Node 20.19+ then loads an ES module through require(esm),
 * which crashed worker threads intermittently here (V8 fatal errors "IsGraphAsync must be
 * used on an instantiated module" and "facade->InstantiateModule ... IsJust()", seen in
 * about one full test run in five). From this CommonJS file the ES module worker
 * (worker.js) is loaded with import(), the path that does not crash.
 */
type Worker = typeof import('./worker.js');
type Task = Parameters<Worker['default']>[0];

let loaded: Promise<Worker['default']> | undefined;

module.exports = async function run(task: Task): Promise<unknown> {
  loaded ??= import('./worker.js').then((m) => m.default);
  return (await loaded)(task);
};
