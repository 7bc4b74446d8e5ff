// Routes of application secrets (KmsService → secret-ops.ts): versioned values sealed in kms.db, read by name and
// version, listed with their rotation reminders. Values travel as standard base64, only in a PUT body and a GET answer.

import * as z from "zod";
import { AtrestError } from "../../errors.ts";
import { MAX_SECRET_BYTES } from "../secrets.ts";
import { bytes, parse } from "./codec.ts";
import type { Route } from "./route.ts";

export const secretSchemas = {
  put: z.strictObject({
    value: bytes("value", MAX_SECRET_BYTES),
    rotateAfterDays: z.number().int().min(1).max(3650).nullable().optional(),
  }),
};

const info = z.object({
  name: z.string(),
  currentVersion: z.number(),
  createdAt: z.string(),
  updatedAt: z.string(),
  rotateAfterDays: z.number().optional(),
  rotateAt: z.string().optional(),
  rotationDue: z.boolean(),
});

function versionQuery(q: URLSearchParams): number | undefined {
  const v = q.get("version");
  if (v === null) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) {
    throw new AtrestError("INVALID_INPUT", `invalid secret version ${JSON.stringify(v)}`);
  }
  return n;
}

export const SECRET_ROUTES: readonly Route[] = [
  {
    method: "GET",
    path: "/v1/secrets",
    op: "list-secrets",
    summary: "Secrets the caller may list (metadata, never values); ?due=true for those due for rotation",
    response: z.object({ secrets: z.array(info) }),
    handler: (c) => {
      const due = c.query.get("due");
      if (due !== null && due !== "true" && due !== "false") {
        throw new AtrestError("INVALID_INPUT", "due must be true or false");
      }
      return { secrets: c.service().listSecrets(c.caller, due === "true") };
    },
  },
  {
    method: "PUT",
    path: "/v1/secrets/:name",
    op: "put-secret",
    summary:
      "Write a new version of a secret (created at version 1); rotateAfterDays sets or (null) clears the reminder",
    body: secretSchemas.put,
    response: info,
    handler: (c) => {
      const b = parse(secretSchemas.put, c.body);
      try {
        return c.service().putSecret(c.caller, c.params.name, b.value, b.rotateAfterDays);
      } finally {
        b.value.fill(0);
      }
    },
  },
  {
    method: "GET",
    path: "/v1/secrets/:name",
    op: "get-secret",
    summary: "A secret's value (base64): the current version, or ?version=N",
    response: z.object({
      name: z.string(),
      version: z.number(),
      createdAt: z.string(),
      value: z.string().describe("base64"),
      rotationDue: z.boolean(),
    }),
    handler: (c) => {
      const s = c.service().getSecret(c.caller, c.params.name, versionQuery(c.query));
      const out = {
        name: s.name,
        version: s.version,
        createdAt: s.createdAt,
        value: s.value.toString("base64"),
        rotationDue: s.rotationDue,
      };
      s.value.fill(0);
      return out;
    },
  },
  {
    method: "GET",
    path: "/v1/secrets/:name/versions",
    op: "secret-versions",
    summary: "A secret's versions: when and by whom each was written, whether it was destroyed",
    response: z.object({
      secret: info,
      versions: z.array(
        z.object({ version: z.number(), createdAt: z.string(), createdBy: z.string(), destroyed: z.boolean() }),
      ),
    }),
    handler: (c) => c.service().secretVersions(c.caller, c.params.name),
  },
  {
    method: "DELETE",
    path: "/v1/secrets/:name",
    op: "delete-secret",
    summary: "Remove a secret: every version's value is shredded",
    response: z.object({ name: z.string(), destroyedVersions: z.number() }),
    handler: (c) => c.service().removeSecret(c.caller, c.params.name),
  },
];
