// The OpenAPI 3.1 document: docs/api/openapi.json is current (regenerate with
// `ATREST_WRITE_OPENAPI=1 node --test test/protocols/http/openapi.test.ts`), valid against the OpenAPI Initiative's
// OAS 3.1 JSON Schema (kept in docs/api/schemas, checked by ajv, which Fastify already brings: no Python package),
// its schemas valid JSON Schema 2020-12, structurally sound (unique operation ids,
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

/** Every JSON Schema object of the document: components.schemas and the inline request/response/parameter ones. */
function schemasOf(doc: Record<string, unknown>): unknown[] {
  const out: unknown[] = [];
  const walk = (v: unknown, key?: string) => {
    if (Array.isArray(v)) for (const x of v) walk(x);
    else if (v && typeof v === "object") {
      if (key === "schema") out.push(v);
      for (const [k, x] of Object.entries(v)) {
        if (k === "schemas" && key === "components") for (const s of Object.values(x as object)) out.push(s);
        else walk(x, k);
      }
    }
  };
  walk(doc);
  return out;
}

test("the OpenAPI 3.1 schema (OAI, 2022-10-07, kept in docs/api/schemas) accepts the document, via ajv", async () => {
  const { Ajv2020 } = await import("ajv/dist/2020.js");
  const addFormats = (await import("ajv-formats")).default as unknown as (a: unknown) => void;
  // ajv resolves `$dynamicRef: "#meta"` (the Schema Object's hook for a dialect) to the document root rather than the
  // `$dynamicAnchor` in $defs; with the base dialect that anchor is just "an object or a boolean", so a plain $ref is
  // the same check. The schemas themselves are checked against JSON Schema 2020-12 below.
  const raw = await readFile(join(ROOT, "docs", "api", "schemas", "oas-3.1-schema-2022-10-07.json"), "utf8");
  assert.ok(raw.includes('"$dynamicRef": "#meta"'));
  const oas = JSON.parse(raw.replaceAll('"$dynamicRef": "#meta"', '"$ref": "#/$defs/schema"'));
  assert.equal(oas.$defs.schema.$dynamicAnchor, "meta");
  delete oas.$defs.schema.$dynamicAnchor;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addFormat("media-range", true); // an OAS format (RFC 9110 media ranges) ajv-formats does not know
  const validate = ajv.compile(oas);
  const doc = JSON.parse(await readFile(DOC, "utf8")) as {
    components: { schemas: Record<string, unknown> };
  } & Record<string, unknown>;
  assert.ok(validate(doc), JSON.stringify(validate.errors?.slice(0, 5), null, 2));
  // and every schema in it is a valid JSON Schema 2020-12 (the OAS 3.1 base dialect), $refs resolved
  const schemas = schemasOf(doc);
  assert.ok(schemas.length > 50, `${schemas.length} schemas`);
  for (const s of schemas) assert.ok(ajv.validateSchema(s as object), JSON.stringify(ajv.errors?.slice(0, 3)));
  const withComponents = new Ajv2020({ strict: false });
  addFormats(withComponents);
  withComponents.addSchema({ $id: "urn:atrest:openapi", components: doc.components }, "urn:atrest:openapi");
  for (const name of Object.keys(doc.components.schemas)) {
    withComponents.compile({ $ref: `urn:atrest:openapi#/components/schemas/${name}` });
  }
  // a broken document is refused (the check is not vacuous)
  assert.equal(validate({ ...doc, openapi: "3.0.3" }), false);
  assert.equal(validate({ ...doc, paths: { "/x": { get: { responses: { 200: {} } } } } }), false);
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
  const { SealedCookies } = await import("../../../src/protocols/http/sealed-cookie.ts");
  const options = { accounts: { openSession: none }, login: { logout: none } } as never;
  const routes = allRoutes(
    { options, sessions: new SessionTable(DEFAULT_SESSIONS, () => {}), cookies: new SealedCookies(Buffer.alloc(32)) },
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
