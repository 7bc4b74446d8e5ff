// Routes of audit high-water marks (KmsService → audit-mark-ops.ts): a file server raises its own log's mark at each
// signed checkpoint and reads it back in `audit verify`; auditors read and list; a custodian resets one.

import * as z from "zod";
import { parse } from "./codec.ts";
import type { Route } from "./route.ts";

const mark = z.object({
  client: z.string(),
  log: z.string(),
  seq: z.number(),
  hash: z.string(),
  at: z.string(),
});

export const auditMarkSchemas = {
  raise: z.strictObject({
    seq: z.number().int().min(1),
    hash: z.string().regex(/^[0-9a-f]{64}$/, "64 lowercase hex digits"),
  }),
  reset: z.strictObject({ client: z.string().min(1).max(200), reason: z.string().min(1).max(1000) }),
};

export const AUDIT_MARK_ROUTES: readonly Route[] = [
  {
    method: "GET",
    path: "/v1/audit-marks",
    op: "list-audit-marks",
    summary: "Every audit high-water mark the caller may read (a server: its own)",
    response: z.object({ marks: z.array(mark) }),
    handler: (c) => ({ marks: c.service().listAuditMarks(c.caller) }),
  },
  {
    method: "GET",
    path: "/v1/audit-marks/:log",
    op: "get-audit-mark",
    summary: "The high-water mark of the caller's log (or ?client=NAME's; not for a server), null if none",
    response: z.object({ mark: mark.nullable() }),
    handler: (c) => ({
      mark: c.service().getAuditMark(c.caller, c.params.log, c.query.get("client") ?? undefined) ?? null,
    }),
  },
  {
    method: "POST",
    path: "/v1/audit-marks/:log",
    op: "raise-audit-mark",
    summary: "Raise the caller's mark to a newer signed checkpoint (never lowers it; same seq, other hash: 409)",
    body: auditMarkSchemas.raise,
    response: z.object({ mark, raised: z.boolean() }),
    handler: (c) => {
      const b = parse(auditMarkSchemas.raise, c.body);
      return c.service().raiseAuditMark(c.caller, c.params.log, b.seq, b.hash);
    },
  },
  {
    method: "POST",
    path: "/v1/audit-marks/:log/reset",
    op: "reset-audit-mark",
    summary: "Forget a client's mark (custodian; after its log was moved aside on purpose), with a reason",
    body: auditMarkSchemas.reset,
    response: z.object({ was: mark.nullable() }),
    handler: (c) => {
      const b = parse(auditMarkSchemas.reset, c.body);
      return { was: c.service().resetAuditMark(c.caller, b.client, c.params.log, b.reason) ?? null };
    },
  },
];
