// Elastic Common Schema JSON encoder: one compact JSON object per record (ECS 8.x field names, see `ecs` in
// ../types.ts). JSON.stringify escapes quotes, backslashes and control characters (RFC 8259 §7); non-ASCII stays UTF-8.
import { type AuditRecord, ecs } from "../types.ts";
import type { RecordMeta } from "./common.ts";

export function encodeEcsJson(r: AuditRecord, meta: RecordMeta = {}): string {
  const doc = ecs(r);
  if (meta.seq !== undefined) doc.event.sequence = meta.seq;
  return JSON.stringify(doc);
}
