// Test-only behaviour (a moved clock, a crash point) without a production switch: nothing in src/ reads an
// environment variable for it. The production entry (src/cli/main.ts) never installs hooks, so setting any
// environment in a production run changes nothing. Tests install hooks in-process (test/helpers/test-hooks.ts), and
// child processes that need them are started through test/helpers/test-entry.ts, which installs them and then runs
// the CLI; that file is not part of the package's entry points.

export interface TestHooks {
  /** The key manager's "now" (rotation and scheduled destruction fall due after days); undefined: the real time. */
  now?: () => Date | undefined;
  /** Called at a key job's batch boundary (`kind` = rewrap, reencrypt); may kill the process. */
  crashPoint?: (kind: string, batch: number) => void;
  /** S3 SSE-C over plain HTTP from a loopback client (AWS refuses it, as atrest does in production). */
  sseCOverHttp?: () => boolean;
  /** The metadata store of a data directory that names none (the PostgreSQL test matrix): a URL, or undefined. */
  metaStore?: (root: string) => string | undefined;
}

let installed: TestHooks = {};

/** Installs hooks for this process (tests only); returns a function that removes them again. */
export function installTestHooks(hooks: TestHooks): () => void {
  const before = installed;
  installed = { ...installed, ...hooks };
  return () => {
    installed = before;
  };
}

/** The hooks in force: none in a production run. */
export function testHooks(): Readonly<TestHooks> {
  return installed;
}
