// ArcSight Common Event Format (CEF) encoder, written from "Micro Focus Security ArcSight Common Event Format,
// Implementing ArcSight CEF" (revision 25): §"CEF Header" / "Character Encoding" for the escaping rules and
// §"ArcSight Extension Dictionary" for the keys.
//
//   CEF:0|Device Vendor|Device Product|Device Version|Device Event Class ID|Name|Severity|Extension
//
// Header: a pipe must be escaped as `\|` and a backslash as `\\` (an equal sign needs no escape there). Extension:
// space-separated key=value; in values an equal sign is escaped `\=`, a backslash `\\`, and multi-line values use
// `\n` (and `\r`) for the line breaks; a pipe needs no escape. Header fields cannot span lines, so CR/LF there
// become a space.
import type { AuditRecord } from "../types.ts";
import { ACTIONS, effectiveUserOf, messageOf, severityOf } from "../types.ts";
import {
  baseName,
  DEFAULT_PRODUCT,
  DEFAULT_VENDOR,
  DEFAULT_VERSION,
  type EncoderOptions,
  type RecordMeta,
  replaceControls,
  splitIp,
} from "./common.ts";

/** CEF header field escaping: `\` → `\\`, `|` → `\|`; line breaks are not allowed in the header. */
export function cefHeader(value: string): string {
  if (!/[\\|\r\n]/.test(value)) return replaceControls(value); // the common case: nothing to escape
  return replaceControls(value.replace(/[\\|]/g, (c) => `\\${c}`).replace(/\r\n|[\r\n]/g, " "));
}

/** CEF extension value escaping: `\` → `\\`, `=` → `\=`, LF → `\n`, CR → `\r`. */
export function cefValue(value: string): string {
  if (!/[\\=\r\n]/.test(value)) return replaceControls(value);
  return replaceControls(value.replace(/[\\=\r\n]/g, (c) => (c === "\n" ? "\\n" : c === "\r" ? "\\r" : `\\${c}`)));
}

/**
 * One CEF line (no trailing newline). Keys: rt (ms since the epoch), act, outcome, suser (job user), suid, spriv
 * (role), duser (target user of an IAM event), src (IPv4; an IPv6 source goes to c6a2), spt, app (the application
 * protocol), proto (TCP), fname/filePath/fsize, msg, externalId (chain sequence number) and labelled custom strings:
 * cs1 effectiveUser, cs2 keyRef, cs3 sessionId, cs4 authMethod, cs5 targetPath, cs6 reason.
 */
export function encodeCef(r: AuditRecord, opts: EncoderOptions = {}, meta: RecordMeta = {}): string {
  const header = [
    "CEF:0",
    cefHeader(opts.vendor ?? DEFAULT_VENDOR),
    cefHeader(opts.product ?? DEFAULT_PRODUCT),
    cefHeader(opts.version ?? DEFAULT_VERSION),
    cefHeader(r.action),
    cefHeader(ACTIONS[r.action].name),
    String(severityOf(r)),
  ].join("|");
  const ext: [string, string | number | undefined][] = [
    ["rt", Date.parse(r.time)],
    ["act", r.action],
    ["outcome", r.outcome],
    ["suser", r.user],
    ["suid", r.userId],
    ["spriv", r.role],
    ["duser", ACTIONS[r.action].category === "iam" ? r.target : undefined],
    ["dvchost", r.node],
  ];
  const ip = splitIp(r.sourceIp);
  ext.push(["src", ip.v4], ["spt", r.sourcePort]);
  if (ip.v6) ext.push(["c6a2", ip.v6], ["c6a2Label", "sourceIPv6Address"]);
  if (r.protocol) ext.push(["app", r.protocol], ["proto", r.protocol === "cli" ? undefined : "TCP"]);
  if (r.path !== undefined) ext.push(["fname", baseName(r.path)], ["filePath", r.path]);
  ext.push(["fsize", r.size], ["externalId", meta.seq], ["msg", messageOf(r)]);
  const custom: [string, string | undefined][] = [
    ["effectiveUser", effectiveUserOf(r)],
    ["keyRef", r.keyRef],
    ["sessionId", r.sessionId],
    ["authMethod", r.method],
    ["targetPath", r.targetPath],
    ["reason", r.reason],
  ];
  custom.forEach(([label, value], i) => {
    if (value !== undefined) ext.push([`cs${i + 1}`, value], [`cs${i + 1}Label`, label]);
  });
  const extension = ext
    .filter((kv): kv is [string, string | number] => kv[1] !== undefined && !Number.isNaN(kv[1]))
    .map(([k, v]) => `${k}=${cefValue(String(v))}`)
    .join(" ");
  return `${header}|${extension}`;
}
