// The KMS HTTPS API as an OpenAPI 3.1 document, generated from the route table and its zod schemas, so the document
// cannot drift from what the server accepts. docs/api/kms-openapi.json is this output; test/kms/openapi.test.ts
// fails when it is stale. Regenerate with `npm run openapi`.

import { writeFileSync } from "node:fs";
import * as z from "zod";
import { KMS_ERRORS } from "../api/errors.ts";
import { RELAYABLE_OPS } from "./relay.ts";
import { ROUTES, type Route } from "./routes.ts";

export const OPENAPI_FILE = "docs/api/kms-openapi.json";

type Json = Record<string, unknown>;

function schemaOf(schema: z.ZodType, io: "input" | "output"): Json {
  const s = z.toJSONSchema(schema, { io, unrepresentable: "any", target: "draft-2020-12" }) as Json;
  delete s.$schema;
  return s;
}

function operation(route: Route): Json {
  const params = [...route.path.matchAll(/:([a-z]+)/g)].map((m) => ({
    name: m[1],
    in: "path",
    required: true,
    schema: { type: "string" },
  }));
  const op: Json = {
    operationId: route.op,
    summary: route.summary ?? route.op.replace(/-/g, " "),
    ...(params.length ? { parameters: params } : {}),
    responses: {
      "200": {
        description: "success",
        content: { "application/json": { schema: route.response ? schemaOf(route.response, "output") : {} } },
      },
      default: {
        description: "an error as RFC 9457 problem+json; `code` is stable",
        content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } },
      },
    },
  };
  if (route.body) {
    op.requestBody = { required: true, content: { "application/json": { schema: schemaOf(route.body, "input") } } };
  }
  return op;
}

export function openApiDocument(): Json {
  const paths: Record<string, Json> = {};
  for (const r of ROUTES) {
    const path = r.path.replace(/:([a-z]+)/g, "{$1}");
    paths[path] ??= {};
    (paths[path] as Json)[r.method.toLowerCase()] = operation(r);
  }
  // answered by server.ts before the route table: the signed call inside runs through the table as its signer
  paths["/v1/relay"] = {
    post: operation({
      method: "POST",
      path: "/v1/relay",
      op: "relay",
      summary:
        "Run a call a person signed (docs/kms.md, Signed calls), carried by a server-role client: as the signer, " +
        `if the certificate, signature, audience, time and nonce check; one of ${[...RELAYABLE_OPS].join(", ")}`,
      body: z.strictObject({
        statement: z.string().max(8192).describe('JSON {"v":1,"aud","method","path","body","created","nonce"}'),
        signature: z.string().max(128).describe("ECDSA P-256 / SHA-256 over the statement, IEEE P1363, base64url"),
        certificate: z.string().max(8192).describe("the signer's certificate (PEM) from this KMS's CA"),
      }),
      handler: () => undefined,
    }),
  };
  return {
    openapi: "3.1.0",
    info: {
      title: "atrest key manager (atrest kms serve)",
      version: "1",
      description:
        "HTTPS with mutual TLS: every call presents a client certificate issued by the KMS's own CA " +
        "(atrest kms client issue); its role and client policy decide what it may do. Bytes are standard base64; " +
        "ciphertexts, HMACs and signatures are atrest:<key>:v<version>:<base64> tokens. See docs/kms.md and " +
        "docs/kms-clients.md.",
    },
    servers: [{ url: "https://127.0.0.1:8443" }],
    security: [{ mutualTLS: [] }],
    paths,
    components: {
      securitySchemes: { mutualTLS: { type: "mutualTLS", description: "a client certificate from the KMS CA" } },
      schemas: {
        Problem: {
          type: "object",
          required: ["type", "title", "status", "detail", "code"],
          properties: {
            type: { type: "string" },
            title: { type: "string" },
            status: { type: "integer" },
            detail: { type: "string" },
            code: { type: "string", enum: Object.keys(KMS_ERRORS) },
          },
        },
      },
    },
  };
}

export function openApiJson(): string {
  return `${JSON.stringify(openApiDocument(), null, 2)}\n`;
}

if (import.meta.main) {
  writeFileSync(OPENAPI_FILE, openApiJson());
  process.stdout.write(`wrote ${OPENAPI_FILE}\n`);
}
