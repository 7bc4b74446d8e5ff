// Syslog RFC 5424 encoder. Followed: §6 (ABNF), §6.2.1 PRI (= facility × 8 + severity, Table 1 and Table 2),
// §6.2.2 VERSION 1, §6.2.3 TIMESTAMP (RFC 3339, at most 6 fractional digits), §6.2.4–6.2.7 HOSTNAME ≤ 255,
// APP-NAME ≤ 48, PROCID ≤ 128, MSGID ≤ 32 characters of PRINTUSASCII (%d33-126), NILVALUE "-" when empty,
// §6.3 STRUCTURED-DATA (SD-ID = SD-NAME "@" private enterprise number, SD-NAME 1–32 PRINTUSASCII except '=', SP,
// ']' and '"'; §6.3.3: inside PARAM-VALUE the characters '"', '\' and ']' MUST be escaped with a backslash),
// §6.4 MSG (MSG-UTF8 starts with the BOM; plain ASCII is sent as MSG-ANY without it).
//
//   <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [atrest@PEN key="value" ...] MSG
//
// Line breaks inside a PARAM-VALUE are legal UTF-8 and kept: the sender uses octet counting (RFC 6587 §3.4.1), which
// does not depend on them.
import type { AuditRecord } from "../types.ts";
import { effectiveUserOf, messageOf, severityOf } from "../types.ts";
import { type RecordMeta, replaceControls } from "./common.ts";

export interface Rfc5424Options {
  hostname?: string;
  appName?: string;
  procId?: string | number;
  /** Facility 0–23; default 13 ("log audit", RFC 5424 Table 1). */
  facility?: number;
  /** Private enterprise number for the SD-ID; default 32473, the IANA PEN reserved for documentation (RFC 5612). */
  enterpriseNumber?: number;
  /** SD-NAME before the "@"; default "atrest". */
  sdName?: string;
}

const BOM = "\uFEFF";

/** Maps the 0–10 CEF-scale severity to a syslog severity (Table 2): ≥ 9 critical, 7–8 warning, 4–6 notice, else info. */
export function syslogSeverity(cefSeverity: number): number {
  if (cefSeverity >= 9) return 2;
  if (cefSeverity >= 7) return 4;
  if (cefSeverity >= 4) return 5;
  return 6;
}

/** A header field: PRINTUSASCII only (others become `_`), cut to `max`, NILVALUE when empty. */
export function headerField(value: string | number | undefined, max: number): string {
  if (value === undefined) return "-";
  const clean = String(value)
    .replace(/[^\x21-\x7e]/g, "_")
    .slice(0, max);
  return clean === "" ? "-" : clean;
}

/** PARAM-VALUE escaping (§6.3.3): `"` → `\"`, `\` → `\\`, `]` → `\]`. */
export function sdValue(value: string): string {
  // line breaks and other controls as U+FFFD: transports that frame by LF (and receivers that escape controls as
  // #012) would otherwise split or rewrite the message
  return replaceControls(value.replace(/["\\\]]/g, (c) => `\\${c}`));
}

function sdName(name: string): string {
  if (!/^[\x21-\x7e]{1,32}$/.test(name) || /[= \]"@]/.test(name)) throw new RangeError(`invalid SD-NAME ${name}`);
  return name;
}

/** One RFC 5424 message (no framing, no trailing newline). */
export function encodeRfc5424(r: AuditRecord, opts: Rfc5424Options = {}, meta: RecordMeta = {}): string {
  const facility = opts.facility ?? 13;
  if (!Number.isInteger(facility) || facility < 0 || facility > 23) throw new RangeError("facility must be 0–23");
  const pri = facility * 8 + syslogSeverity(severityOf(r));
  const sdId = `${sdName(opts.sdName ?? "atrest")}@${opts.enterpriseNumber ?? 32473}`;
  const params: [string, string | number | undefined][] = [
    ["action", r.action],
    ["outcome", r.outcome],
    ["user", r.user],
    ["userId", r.userId],
    ["effectiveUser", effectiveUserOf(r)],
    ["role", r.role],
    ["srcIp", r.sourceIp],
    ["srcPort", r.sourcePort],
    ["protocol", r.protocol],
    ["sessionId", r.sessionId],
    ["path", r.path],
    ["targetPath", r.targetPath],
    ["size", r.size],
    ["keyRef", r.keyRef],
    ["method", r.method],
    ["node", r.node],
    ["reason", r.reason],
    ["target", r.target],
    ["detail", r.detail],
    ["seq", meta.seq],
  ];
  const sd = `[${sdId}${params
    .filter((kv): kv is [string, string | number] => kv[1] !== undefined)
    .map(([k, v]) => ` ${k}="${sdValue(String(v))}"`)
    .join("")}]`;
  const text = replaceControls(messageOf(r).replace(/\r\n|[\r\n]/g, " "));
  // biome-ignore lint/suspicious/noControlCharactersInRegex: testing for 7-bit ASCII
  const msg = /^[\x00-\x7f]*$/.test(text) ? text : `${BOM}${text}`;
  return [
    `<${pri}>1`,
    headerField(r.time, 64),
    headerField(opts.hostname, 255),
    headerField(opts.appName ?? "atrest", 48),
    headerField(opts.procId, 128),
    headerField(r.action, 32),
    sd,
    msg,
  ].join(" ");
}
