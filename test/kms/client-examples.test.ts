// The examples of docs/kms-clients.md, run as they are written against a real KMS server over mutual TLS: curl (with
// --cert/--key/--cacert and jq), Node (the KmsAppClient module) and Python (requests with a client certificate).
// Each file must also appear verbatim in docs/kms-clients.md, so the page cannot drift from what was run.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { initKmsDir, issueClient } from "../../src/kms/home.ts";
import { KmsServer } from "../../src/kms/server/server.ts";
import { ROOT, removeDir, tempDir } from "../helpers/atrest.ts";
import { testKmsStore } from "./fixture.ts";

const run = promisify(execFile);
const EXAMPLES = join(ROOT, "docs", "examples");

describe("docs/kms-clients.md examples (curl, Node, Python) against kms serve", () => {
  let root: string;
  let server: KmsServer;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    root = await tempDir("atrest-kms-examples-");
    const dir = join(root, "kms");
    await initKmsDir(dir, { dev: true, ...testKmsStore() });
    server = await KmsServer.start({ dir, port: 0, schedulerIntervalMs: 0 });
    await issueClient(dir, "webapp", "server", join(root, "webapp"));
    const svc = server.service();
    const operator = { name: "oscar", role: "operator" } as const;
    svc.createKey(operator, "customers");
    svc.createKey(operator, "invoices", { type: "ed25519" });
    svc.putSecret(operator, "webapp.mail-api-key", Buffer.from("mk-3c4f9a"));
    svc.policies.set(
      "webapp",
      {
        rules: [
          { keys: ["customers"], ops: ["encrypt", "decrypt"] },
          { keys: ["invoices"], ops: ["sign", "verify"] },
          { secrets: ["webapp.*"], ops: ["read-secret"] },
        ],
      },
      "test",
      new Date(),
    );
    env = { ...process.env, KMS_URL: `https://127.0.0.1:${server.port}`, CERT: join(root, "webapp") };
  });

  after(async () => {
    await server?.close();
    await removeDir(root);
  });

  test("every example file is shown verbatim in docs/kms-clients.md", async () => {
    const doc = await readFile(join(ROOT, "docs", "kms-clients.md"), "utf8");
    for (const f of ["kms-curl.sh", "kms-node.ts", "kms-python.py"]) {
      assert.ok(doc.includes((await readFile(join(EXAMPLES, f), "utf8")).trimEnd()), `${f} is not in the page`);
    }
  });

  test("curl", async () => {
    const { stdout } = await run("sh", [join(EXAMPLES, "kms-curl.sh")], { env });
    const lines = stdout.trim().split("\n");
    assert.match(lines[0] as string, /^ciphertext: atrest:customers:v1:[A-Za-z0-9+/]+=*$/);
    assert.deepEqual(lines.slice(1), ["4111 1111 1111 1111", "mk-3c4f9a"]);
  });

  test("Node (KmsAppClient)", async () => {
    const { stdout } = await run(process.execPath, [join(EXAMPLES, "kms-node.ts")], { env });
    const lines = stdout.trim().split("\n");
    assert.match(lines[0] as string, /^ciphertext: atrest:customers:v1:/);
    assert.deepEqual(lines.slice(1), ["4111 1111 1111 1111", "signature valid: true", "secret v1: mk-3c4f9a"]);
  });

  test("Python (requests with a client certificate)", async () => {
    const { stdout } = await run("python3", [join(EXAMPLES, "kms-python.py")], { env });
    const lines = stdout.trim().split("\n");
    assert.match(lines[0] as string, /^ciphertext: atrest:customers:v1:/);
    assert.equal(lines[1], "4111 1111 1111 1111");
    assert.match(lines[2] as string, /^wrong context: INTEGRITY: ciphertext failed authentication/);
    assert.equal(lines[3], "secret v1: mk-3c4f9a");
  });
});
