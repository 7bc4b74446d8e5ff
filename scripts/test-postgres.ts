// The PostgreSQL half of `npm test`: runs the store-touching suites again with every data directory's metadata in
// PostgreSQL (test/helpers/test-hooks.ts ATREST_TEST_META), in a database made for this run and dropped after it;
// the key manager's suites listed below run on its PostgreSQL driver (test/kms/fixture.ts ATREST_TEST_KMS_PG).
// PostgreSQL comes from ATREST_TEST_PG or the local server (127.0.0.1:5432, database `test`, user postgres); without
// one the run is skipped, except in CI (CI=true), where it fails.
//   node scripts/test-postgres.ts [test files or globs…]   (default: the suites below)
import { spawn } from "node:child_process";
import pg from "pg";

const SUITES = [
  "test/store/**/*.test.ts",
  "test/vfs/**/*.test.ts",
  "test/service/**/*.test.ts",
  "test/events/**/*.test.ts",
  "test/keys/**/*.test.ts",
  "test/pgp/**/*.test.ts",
  "test/protocols/**/*.test.ts",
  "test/integration/upload-commit.test.ts",
  "test/integration/at-rest.test.ts",
  "test/integration/https-sftp.test.ts",
  "test/integration/triggers-sftp.test.ts",
  "test/integration/pgp-sftp.test.ts",
  "test/kms/service.test.ts",
  "test/kms/approvals.test.ts",
  "test/kms/byok.test.ts",
  "test/kms/secrets.test.ts",
  "test/kms/server.test.ts",
  "test/kms/approvals-remote.test.ts",
  "test/kms/key-states.test.ts",
  "test/kms/app-crypto.test.ts",
  "test/kms/relay.test.ts",
  "test/kms/client-examples.test.ts",
];

const base = process.env.ATREST_TEST_PG || "postgres://postgres@127.0.0.1:5432/test";
const admin = new pg.Client({ connectionString: base, connectionTimeoutMillis: 3000 });
try {
  await admin.connect();
} catch (err) {
  const why = `PostgreSQL ${base} unreachable (${(err as Error).message})`;
  if (process.env.CI === "true" || process.env.ATREST_TEST_PG) {
    console.error(`test-postgres: ${why}`);
    process.exit(1);
  }
  console.log(`test-postgres: skipped: ${why}; set ATREST_TEST_PG to run the PostgreSQL matrix`);
  process.exit(0);
}
const db = `atrest_matrix_${process.pid}_${Date.now().toString(36)}`;
await admin.query(`CREATE DATABASE ${db}`);
const url = new URL(base);
url.pathname = `/${db}`;
let code = 1;
try {
  const files = process.argv.slice(2);
  const child = spawn(
    process.execPath,
    [
      "--import",
      new URL("../test/helpers/matrix-hooks.ts", import.meta.url).href,
      "--test",
      "--test-concurrency=2",
      "--test-timeout=300000",
      ...(files.length ? files : SUITES),
    ],
    {
      stdio: "inherit",
      env: {
        ...process.env,
        ATREST_TEST_META: url.toString(),
        ATREST_TEST_PG: url.toString(),
        ATREST_TEST_KMS_PG: "1",
      },
    },
  );
  code = await new Promise<number>((res) => child.on("exit", (c, signal) => res(c ?? (signal ? 1 : 0))));
  const probe = new pg.Client({ connectionString: url.toString() });
  await probe.connect();
  const schemas = await probe.query(
    "SELECT count(*)::int AS n FROM pg_namespace WHERE nspname LIKE 'd\\_%' OR nspname LIKE 't\\_%'",
  );
  await probe.end();
  console.log(`test-postgres: ${schemas.rows[0].n} data directories and stores had their metadata in PostgreSQL`);
} finally {
  await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await admin.end();
}
console.log(`test-postgres: ${code === 0 ? "passed" : "FAILED"} (metadata in PostgreSQL ${db})`);
process.exit(code);
