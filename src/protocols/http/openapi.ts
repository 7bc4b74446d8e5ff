// The OpenAPI 3.1 document, built from the route table (routes.ts) and its zod schemas (z.toJSONSchema), so every
// served route is in it with the schemas that validate it. docs/api/openapi.json is a copy a test keeps current.
import { type ZodType, z } from "zod";
import type { Route } from "./routes.ts";

type Json = Record<string, unknown>;

export const API_VERSION = "1";

/** Named schemas (zod `.meta({ id })`) go to components.schemas once and are referenced from there. */
function schemaOf(s: ZodType, io: "input" | "output", components: Json): Json {
  const raw = z.toJSONSchema(s, { target: "draft-2020-12", io, unrepresentable: "any" });
  const out = JSON.parse(JSON.stringify(raw).replaceAll('"#/$defs/', '"#/components/schemas/')) as Json;
  delete out.$schema;
  const defs = out.$defs as Json | undefined;
  delete out.$defs;
  for (const [id, def] of Object.entries(defs ?? {})) components[id] ??= def;
  return out;
}

/** `:name` → `{name}`, a trailing `*` → `{path}`. */
export function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, "{$1}").replace(/\*$/, "{path}");
}

export function openApiDocument(routes: Route[]): Json {
  const paths: Record<string, Json> = {};
  const schemas: Json = {};
  for (const { spec } of routes) {
    const path = openApiPath(spec.url);
    const parameters: Json[] = [];
    const params = spec.params
      ? (schemaOf(spec.params, "input", schemas) as { properties?: Json; required?: string[] })
      : {};
    for (const [name, schema] of Object.entries(params.properties ?? {})) {
      const n = name === "*" ? "path" : name;
      parameters.push({ name: n, in: "path", required: true, schema });
    }
    if (spec.url.endsWith("*") && !parameters.some((p) => p.name === "path")) {
      parameters.push({
        name: "path",
        in: "path",
        required: true,
        schema: { type: "string" },
        description: "file path under your home",
      });
    }
    const query = spec.query
      ? (schemaOf(spec.query, "input", schemas) as { properties?: Json; required?: string[] })
      : {};
    for (const [name, schema] of Object.entries(query.properties ?? {})) {
      parameters.push({ name, in: "query", required: query.required?.includes(name) ?? false, schema });
    }
    for (const [name, description] of Object.entries(spec.headers ?? {})) {
      parameters.push({ name, in: "header", required: false, schema: { type: "string" }, description });
    }
    const responses: Json = {};
    for (const [code, r] of Object.entries(spec.responses)) {
      const content: Json = {};
      if (r.schema) content[r.contentType ?? "application/json"] = { schema: schemaOf(r.schema, "output", schemas) };
      else if (r.contentType) content[r.contentType] = {};
      responses[code] = {
        description: r.description,
        ...(Object.keys(content).length ? { content } : {}),
        ...(r.headers
          ? {
              headers: Object.fromEntries(
                Object.entries(r.headers).map(([h, d]) => [h, { description: d, schema: { type: "string" } }]),
              ),
            }
          : {}),
      };
    }
    const op: Json = {
      operationId: spec.operationId,
      summary: spec.summary,
      tags: spec.tags,
      ...(parameters.length ? { parameters } : {}),
      responses,
      security: spec.auth === "public" ? [] : [{ session: [] }, { token: [spec.auth.scope] }],
      ...(spec.auth === "public" ? {} : { "x-atrest-roles": spec.auth.roles, "x-atrest-scope": spec.auth.scope }),
    };
    if (spec.body) {
      op.requestBody = {
        required: true,
        content: { "application/json": { schema: schemaOf(spec.body, "input", schemas) } },
      };
    } else if (spec.rawBody) {
      op.requestBody = {
        required: true,
        content: Object.fromEntries(spec.rawBody.map((t) => [t, { schema: { type: "string", format: "binary" } }])),
      };
    }
    const methods = Array.isArray(spec.method) ? spec.method : [spec.method];
    paths[path] ??= {};
    for (const m of methods) {
      const key = m.toLowerCase();
      (paths[path] as Json)[key] =
        methods.length > 1 ? { ...op, operationId: `${spec.operationId}${m === methods[0] ? "" : `_${key}`}` } : op;
    }
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "atrest HTTPS API",
      version: API_VERSION,
      description:
        "Files, shares and administration of an atrest server. Errors are application/problem+json (RFC 9457). " +
        "See docs/api.md.",
    },
    servers: [{ url: "/" }],
    paths,
    components: {
      schemas,
      securitySchemes: {
        session: {
          type: "apiKey",
          in: "cookie",
          name: "__Host-atrest_session",
          description: "browser session; unsafe methods also need X-CSRF-Token",
        },
        token: { type: "http", scheme: "bearer", description: "API token (atrest token create / POST /api/v1/tokens)" },
      },
    },
  };
}
