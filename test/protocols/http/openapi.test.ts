// The OpenAPI 3.1 document: docs/api/openapi.json is current (regenerate with
// `ATREST_WRITE_OPENAPI=1 node --test test/protocols/http/openapi.test.ts`), structurally valid (unique operation ids,
// every path template parameter declared, every operation with responses and a security requirement), and every
// route the server registers is in it.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { openApiPath } from "../../../src/protocols/http/openapi.ts";
import { apiDocument } from "../../../src/protocols/http/server.ts";
import { ROOT } from "../../helpers/atrest.ts";

const DOC = join(ROOT, "docs", "api", "openapi.json");
type Op = {
  operationId: string;
  parameters?: { name: string; in: string }[];
  responses: Record<string, { description: string }>;
  security?: unknown[];
};

test("docs/api/openapi.json is the document the server serves", async () => {
  const doc = `${JSON.stringify(apiDocument(), null, 2)}\n`;
  if (process.env.ATREST_WRITE_OPENAPI === "1") await writeFile(DOC, doc);
  assert.equal(
    await readFile(DOC, "utf8"),
    doc,
    "stale: run ATREST_WRITE_OPENAPI=1 node --test test/protocols/http/openapi.test.ts",
  );
});

test("openapi-spec-validator (Python) accepts docs/api/openapi.json", async () => {
  const { execFile } = await import("node:child_process");
  const out = await new Promise<string>((resolve, reject) =>
    execFile("python3", ["-m", "openapi_spec_validator", DOC], (err, stdout, stderr) =>
      err ? reject(new Error(`${stdout}${stderr}`)) : resolve(stdout),
    ),
  );
  assert.match(out, /OK/);
});

test("the document is valid OpenAPI 3.1 in what a generator relies on", () => {
  const doc = apiDocument() as {
    openapi: string;
    info: { title: string; version: string };
    paths: Record<string, Record<string, Op>>;
    components: { securitySchemes: Record<string, unknown> };
  };
  assert.equal(doc.openapi, "3.1.0");
  assert.ok(doc.info.title && doc.info.version);
  const ids = new Set<string>();
  const methods = new Set(["get", "head", "post", "put", "patch", "delete", "options"]);
  for (const [path, item] of Object.entries(doc.paths)) {
    assert.ok(path.startsWith("/"), path);
    const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    for (const [method, op] of Object.entries(item)) {
      assert.ok(methods.has(method), `${method} ${path}`);
      assert.ok(!ids.has(op.operationId), `duplicate operationId ${op.operationId}`);
      ids.add(op.operationId);
      const declared = (op.parameters ?? []).filter((p) => p.in === "path").map((p) => p.name);
      assert.deepEqual(declared.sort(), [...templated].sort(), `path parameters of ${method} ${path}`);
      assert.ok(Object.keys(op.responses).length > 0, `${op.operationId} has responses`);
      for (const [code, r] of Object.entries(op.responses)) {
        assert.match(code, /^[1-5]\d\d$/);
        assert.ok(r.description, `${op.operationId} ${code} description`);
      }
      assert.ok(Array.isArray(op.security), `${op.operationId} security`);
      for (const req of op.security ?? []) {
        for (const scheme of Object.keys(req as object)) assert.ok(scheme in doc.components.securitySchemes, scheme);
      }
    }
  }
});

test("every registered route is in the document", async () => {
  const { allRoutes } = await import("../../../src/protocols/http/server.ts");
  const doc = apiDocument() as { paths: Record<string, Record<string, unknown>> };
  const none = () => {
    throw new Error("unused");
  };
  const { SessionTable, DEFAULT_SESSIONS } = await import("../../../src/protocols/http/sessions.ts");
  const { TusUploads } = await import("../../../src/protocols/http/tus.ts");
  const options = { accounts: { openSession: none }, login: { logout: none } } as never;
  const routes = allRoutes(
    { options, sessions: new SessionTable(DEFAULT_SESSIONS, () => {}) },
    new TusUploads(options, 0),
  );
  assert.ok(routes.length > 15);
  for (const { spec } of routes) {
    for (const m of Array.isArray(spec.method) ? spec.method : [spec.method]) {
      assert.ok(doc.paths[openApiPath(spec.url)]?.[m.toLowerCase()], `${m} ${spec.url} missing`);
    }
  }
  assert.ok(doc.paths["/openapi.json"]?.get);
});
