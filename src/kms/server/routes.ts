// The KMS HTTP API: one table of routes. Each handler gets the authenticated caller and the parsed JSON body and
// returns a JSON-able result; errors propagate to the one problem+json mapping in server.ts. Authorization of key
// operations is KmsService's (role + client policy); seal, unseal and metrics are checked here.

import * as z from "zod";
import { AtrestError } from "../../errors.ts";
import type { KmsRole } from "../api/caller.ts";
import type { RequestStatus } from "../approvals.ts";
import { KEY_TYPES } from "../key-types.ts";
import { parseClientPolicy } from "../policy.ts";
import { APP_ROUTES } from "./app-routes.ts";
import { AUDIT_MARK_ROUTES } from "./audit-mark-routes.ts";
import {
  contextSchema,
  dataKeyJson,
  MAX_BATCH,
  mapItems,
  parse,
  plaintextJson,
  schemas,
  wrappedJson,
} from "./codec.ts";
import type { Route } from "./route.ts";
import { SECRET_ROUTES } from "./secret-routes.ts";

export type { Method, Route, RouteContext, SealControl } from "./route.ts";

/** Longest key-state long poll, ms (below the client's request deadline). */
export const MAX_KEY_STATE_WAIT_MS = 10_000;

/** Roles allowed to read /metrics over mTLS. */
export const METRICS_ROLES: readonly KmsRole[] = ["operator", "admin", "auditor"];

const createKey = z.strictObject({
  name: z.string(),
  type: z.enum(KEY_TYPES).optional(),
  preActive: z.boolean().optional(),
  rotation: z.enum(["auto", "manual", "none"]).optional(),
  rotationDays: z.number().int().min(1).optional(),
});

const keyPolicy = z.strictObject({
  rotation: z.enum(["auto", "manual", "none"]).optional(),
  rotationDays: z.number().int().min(1).optional(),
  minDecryptionVersion: z.number().int().min(1).optional(),
  minEncryptionVersion: z.number().int().min(1).optional(),
});

const versionState = z.strictObject({ state: z.enum(["active", "deactivated", "compromised"]) });

const reason = z.string().max(1000).optional();
const decision = z.strictObject({ reason });
const destroy = z.strictObject({
  version: z.number().int().min(1).optional(),
  waitingDays: z.number().int().min(7).max(30).optional(),
  reason,
});
const cancelDestroy = z.strictObject({ version: z.number().int().min(1).optional() });
const exportKey = z.strictObject({
  version: z.number().int().min(1).optional(),
  publicKeyPem: z.string().min(1).max(16_384),
  reason,
});
const importKey = z.strictObject({
  importToken: z.string().min(1).max(256),
  wrappedMaterial: z
    .string()
    .max(8192)
    .refine((s) => s.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(s), { error: "must be standard base64" })
    .transform((s) => Buffer.from(s, "base64")),
});
const clientPolicy = z.strictObject({ policy: z.unknown(), reason });
const masterRotation = z.strictObject({ reason });
const REQUEST_STATUSES = new Set(["pending", "executed", "rejected", "failed", "expired"]);

function versionParam(s: string | undefined): number {
  const v = Number(s);
  if (!Number.isInteger(v) || v < 1) throw new AtrestError("INVALID_INPUT", `invalid key version ${JSON.stringify(s)}`);
  return v;
}

export const ROUTES: readonly Route[] = [
  // ---- seal state ----
  { method: "GET", path: "/v1/status", op: "status", handler: (c) => c.seal.status() },
  {
    method: "POST",
    path: "/v1/unseal",
    op: "unseal",
    body: schemas.unseal,
    handler: (c) => {
      const body = parse(schemas.unseal, c.body);
      return "share" in body ? c.seal.unseal(c.caller, body.share) : c.seal.resetUnseal(c.caller);
    },
  },
  {
    method: "POST",
    path: "/v1/seal",
    op: "seal",
    handler: (c) => c.seal.seal(c.caller),
  },

  // ---- data keys ----
  {
    method: "POST",
    path: "/v1/keys/:name/generate-data-key",
    op: "generate-data-key",
    body: schemas.generate,
    handler: (c) => {
      const b = parse(schemas.generate, c.body);
      return dataKeyJson(c.service().generateDataKey(c.caller, c.params.name, b.context, b.version));
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/batch/generate-data-key",
    op: "batch-generate-data-key",
    body: schemas.generateBatch,
    handler: (c) => {
      const b = parse(schemas.generateBatch, c.body);
      return { items: c.service().generateDataKeys(c.caller, c.params.name, b.contexts).map(dataKeyJson) };
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/wrap",
    op: "wrap",
    body: schemas.wrap,
    handler: (c) => {
      const b = parse(schemas.wrap, c.body);
      try {
        return wrappedJson(c.service().wrap(c.caller, c.params.name, b.plaintext, b.context, b.version));
      } finally {
        b.plaintext.fill(0);
      }
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/batch/wrap",
    op: "batch-wrap",
    body: schemas.wrapBatch,
    handler: (c) => {
      const b = parse(schemas.wrapBatch, c.body);
      try {
        return { items: mapItems(c.service().wrapBatch(c.caller, c.params.name, b.items), wrappedJson) };
      } finally {
        for (const it of b.items) it.plaintext.fill(0);
      }
    },
  },
  {
    method: "POST",
    path: "/v1/unwrap",
    op: "unwrap",
    body: schemas.unwrap,
    handler: (c) => {
      const b = parse(schemas.unwrap, c.body);
      return plaintextJson(c.service().unwrap(c.caller, b.wrapped, b.context));
    },
  },
  {
    method: "POST",
    path: "/v1/batch/unwrap",
    op: "batch-unwrap",
    body: schemas.unwrapBatch,
    handler: (c) => {
      const b = parse(schemas.unwrapBatch, c.body);
      return { items: mapItems(c.service().unwrapBatch(c.caller, b.items), plaintextJson) };
    },
  },
  {
    method: "POST",
    path: "/v1/rewrap",
    op: "rewrap",
    body: schemas.unwrap,
    handler: (c) => {
      const b = parse(schemas.unwrap, c.body);
      return wrappedJson(c.service().rewrap(c.caller, b.wrapped, b.context));
    },
  },
  {
    method: "POST",
    path: "/v1/batch/rewrap",
    op: "batch-rewrap",
    body: schemas.unwrapBatch,
    handler: (c) => {
      const b = parse(schemas.unwrapBatch, c.body);
      return { items: mapItems(c.service().rewrapBatch(c.caller, b.items), wrappedJson) };
    },
  },

  // ---- keys ----
  { method: "GET", path: "/v1/keys", op: "list-keys", handler: (c) => ({ keys: c.service().listKeys(c.caller) }) },
  {
    method: "POST",
    path: "/v1/keys",
    op: "create-key",
    body: createKey,
    handler: (c) => {
      const { name, ...options } = parse(createKey, c.body);
      return c.service().createKey(c.caller, name, options);
    },
  },
  {
    method: "GET",
    path: "/v1/key-states",
    op: "key-states",
    summary:
      "States of the keys the caller may read; with ?since=<etag>&wait=<ms ≤ 10000> answers when they change (long poll)",
    handler: (c) => {
      const since = c.query.get("since") ?? undefined;
      const wait = Number(c.query.get("wait") ?? 0);
      if (!Number.isInteger(wait) || wait < 0 || wait > MAX_KEY_STATE_WAIT_MS) {
        throw new AtrestError("INVALID_INPUT", `wait must be 0 to ${MAX_KEY_STATE_WAIT_MS} ms`);
      }
      return c.service().watchKeyStates(c.caller, since, wait);
    },
  },
  { method: "GET", path: "/v1/keys/:name", op: "get-key", handler: (c) => c.service().getKey(c.caller, c.params.name) },
  {
    method: "POST",
    path: "/v1/keys/:name/rotate",
    op: "rotate-key",
    body: schemas.empty,
    handler: (c) => {
      parse(schemas.empty, c.body);
      return c.service().rotateKey(c.caller, c.params.name);
    },
  },
  {
    method: "PUT",
    path: "/v1/keys/:name/policy",
    op: "set-key-policy",
    body: keyPolicy,
    handler: (c) => c.service().setKeyPolicy(c.caller, c.params.name, parse(keyPolicy, c.body)),
  },
  {
    method: "PUT",
    path: "/v1/keys/:name/versions/:version/state",
    op: "set-version-state",
    body: versionState,
    handler: (c) =>
      c
        .service()
        .setVersionState(c.caller, c.params.name, versionParam(c.params.version), parse(versionState, c.body).state),
  },

  // ---- dual control: destroy, export, client policy, master rotation (requests approved by custodians) ----
  {
    method: "GET",
    path: "/v1/requests",
    op: "list-requests",
    handler: (c) => {
      const status = c.query.get("status") ?? undefined;
      if (status !== undefined && !REQUEST_STATUSES.has(status)) {
        throw new AtrestError("INVALID_INPUT", `invalid status ${JSON.stringify(status)}`);
      }
      return { requests: c.service().listRequests(c.caller, status as RequestStatus | undefined) };
    },
  },
  {
    method: "GET",
    path: "/v1/requests/:id",
    op: "get-request",
    handler: (c) => c.service().getRequest(c.caller, c.params.id),
  },
  {
    method: "POST",
    path: "/v1/requests/:id/approve",
    op: "approve",
    body: decision,
    handler: (c) => c.service().approve(c.caller, c.params.id, parse(decision, c.body).reason),
  },
  {
    method: "POST",
    path: "/v1/requests/:id/reject",
    op: "reject",
    body: decision,
    handler: (c) => c.service().reject(c.caller, c.params.id, parse(decision, c.body).reason),
  },
  {
    method: "POST",
    path: "/v1/keys/:name/destroy",
    op: "request-destroy",
    body: destroy,
    handler: (c) => c.service().requestDestroy(c.caller, c.params.name, parse(destroy, c.body)),
  },
  {
    method: "POST",
    path: "/v1/keys/:name/cancel-destroy",
    op: "cancel-destroy",
    body: cancelDestroy,
    handler: (c) => c.service().cancelDestroy(c.caller, c.params.name, parse(cancelDestroy, c.body).version),
  },
  {
    method: "POST",
    path: "/v1/keys/:name/export",
    op: "request-export",
    body: exportKey,
    handler: (c) => c.service().exportKey(c.caller, c.params.name, parse(exportKey, c.body)),
  },
  {
    method: "GET",
    path: "/v1/exports/:id",
    op: "fetch-export",
    handler: (c) => {
      const r = c.service().fetchExport(c.caller, c.params.id);
      return { wrapped: r.wrapped.toString("base64"), keyRef: r.keyRef, algorithm: r.algorithm };
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/import-params",
    op: "import-params",
    body: schemas.empty,
    handler: (c) => {
      parse(schemas.empty, c.body);
      return c.service().importParams(c.caller, c.params.name);
    },
  },
  {
    method: "POST",
    path: "/v1/keys/:name/import",
    op: "import",
    body: importKey,
    handler: (c) => {
      const b = parse(importKey, c.body);
      try {
        return c.service().importKey(c.caller, c.params.name, b.importToken, b.wrappedMaterial);
      } finally {
        b.wrappedMaterial.fill(0);
      }
    },
  },
  {
    method: "GET",
    path: "/v1/client-policies",
    op: "list-client-policies",
    handler: (c) => ({ policies: c.service().listClientPolicies(c.caller) }),
  },
  {
    method: "GET",
    path: "/v1/clients/:client/policy",
    op: "get-client-policy",
    handler: (c) => {
      const p = c.service().getClientPolicy(c.caller, c.params.client);
      if (!p) throw new AtrestError("NOT_FOUND", `client ${c.params.client} has no policy (its role alone applies)`);
      return p;
    },
  },
  {
    method: "PUT",
    path: "/v1/clients/:client/policy",
    op: "request-client-policy",
    body: clientPolicy,
    handler: (c) => {
      const b = parse(clientPolicy, c.body);
      const policy = b.policy === null ? null : parseClientPolicy(b.policy);
      return c.service().setClientPolicy(c.caller, c.params.client, policy, b.reason);
    },
  },
  {
    method: "POST",
    path: "/v1/master/rotate",
    op: "request-master-rotation",
    body: masterRotation,
    handler: (c) => c.service().requestMasterRotation(c.caller, parse(masterRotation, c.body).reason),
  },

  // ---- the encryption API for applications ----
  ...APP_ROUTES,

  // ---- application secrets ----
  ...SECRET_ROUTES,
  ...AUDIT_MARK_ROUTES,
];

export { contextSchema, MAX_BATCH };

// ---- matching ----

interface Compiled {
  route: Route;
  segments: readonly string[];
}

export interface Match {
  route: Route;
  params: Record<string, string>;
}

export class Router {
  readonly #routes: Compiled[];

  constructor(routes: readonly Route[]) {
    this.#routes = routes.map((route) => ({ route, segments: route.path.split("/").slice(1) }));
  }

  /** A match, or the allowed methods of the path (empty: unknown path). */
  match(method: string, path: string): Match | { allowed: string[] } {
    const parts = path.split("/").slice(1);
    const allowed: string[] = [];
    for (const c of this.#routes) {
      const params = matchSegments(c.segments, parts);
      if (!params) continue;
      if (c.route.method === method) return { route: c.route, params };
      allowed.push(c.route.method);
    }
    return { allowed };
  }
}

function matchSegments(pattern: readonly string[], parts: readonly string[]): Record<string, string> | undefined {
  if (pattern.length !== parts.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i];
    if (p.startsWith(":")) {
      let v: string;
      try {
        v = decodeURIComponent(parts[i]);
      } catch {
        return undefined;
      }
      if (v === "") return undefined;
      params[p.slice(1)] = v;
    } else if (p !== parts[i]) {
      return undefined;
    }
  }
  return params;
}
