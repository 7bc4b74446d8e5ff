// Elastic Common Schema JSON encoder: one compact JSON object per record (ECS 8.x field names, see `ecs` in
// ../types.ts). JSON.stringify escapes quotes, backslashes and control characters (RFC 8259 §7); safeJson also escapes
// DEL, C1 controls, U+2028/2029 and bidi controls, which JSON allows raw; other non-ASCII stays UTF-8.
import { type AuditRecord, ecs } from "../types.ts";
import { type RecordMeta, safeJson } from "./common.ts";

export function encodeEcsJson(r: AuditRecord, meta: RecordMeta = {}): string {
  const doc = ecs(r);
  if (meta.seq !== undefined) doc.event.sequence = meta.seq;
  return safeJson(doc);
}
