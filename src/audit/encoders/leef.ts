// IBM QRadar Log Event Extended Format (LEEF) 2.0 encoder, written from "IBM QRadar Log Event Extended Format (LEEF)
// Version 2" — §"LEEF event components" (header), §"Predefined event attributes" (keys) and §"Custom event keys".
//
//   LEEF:2.0|Vendor|Product|Version|EventID|DelimiterCharacter|key=value<delim>key=value…
//
// The delimiter header field is one character or its hex code written `xHH` (or `0xHH`); the default when omitted is
// a tab. LEEF defines no escaping at all: a value must not contain the delimiter, and header fields must not contain
// `|`. So both are replaced (never silently dropped, so a path stays recognisable): the delimiter in a value and `|`
// in a header field by `_` (or by a space when `_` is itself the delimiter). Line breaks are replaced too, because
// syslog transports split on them.
import type { AuditRecord } from "../types.ts";
import { ACTIONS, effectiveUserOf, severityOf } from "../types.ts";
import {
  DEFAULT_PRODUCT,
  DEFAULT_VENDOR,
  DEFAULT_VERSION,
  type EncoderOptions,
  type RecordMeta,
  replaceControls,
  splitIp,
} from "./common.ts";

export interface LeefOptions extends EncoderOptions {
  /** One character, default tab (written in the header as `x09`). */
  delimiter?: string;
}

/** Java SimpleDateFormat pattern matching the `time` field (ISO 8601 UTC with ms). */
export const LEEF_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSX";

function replacementFor(delimiter: string): string {
  return delimiter === "_" ? " " : "_";
}

/** Header field: no `|`, no line breaks. */
export function leefHeader(value: string, delimiter = "\t"): string {
  return replaceControls(value.replace(/[|\r\n]/g, (c) => (c === "|" ? replacementFor(delimiter) : " ")));
}

/** Attribute value: no delimiter, no line breaks (LEEF has no escape mechanism). */
export function leefValue(value: string, delimiter: string): string {
  const rep = replacementFor(delimiter);
  let out = "";
  for (const c of value) out += c === delimiter ? rep : c === "\n" || c === "\r" ? " " : c;
  return replaceControls(out);
}

/** The header's delimiter field: printable ASCII other than `|` and space as itself, anything else as `xHH`. */
export function leefDelimiterField(delimiter: string): string {
  const code = delimiter.charCodeAt(0);
  if (code > 0x20 && code < 0x7f && delimiter !== "|") return delimiter;
  return `x${code.toString(16).toUpperCase().padStart(2, "0")}`;
}

/**
 * One LEEF 2.0 line (no trailing newline). EventID is the action. Predefined keys: devTime + devTimeFormat, cat (ECS
 * category), sev (1–10), usrName (job user), role, src / srcPort, proto, resource (path), identSrc (the source IP on
 * login/logout, which QRadar uses for identity correlation), isLoginEvent / isLogoutEvent, accountName (target user of
 * an IAM event). Custom keys: action, outcome, effectiveUser, userId, sessionId, filePath, fileSize, targetPath,
 * keyRef, authMethod, reason, detail, seq.
 */
export function encodeLeef(r: AuditRecord, opts: LeefOptions = {}, meta: RecordMeta = {}): string {
  const d = opts.delimiter ?? "\t";
  if ([...d].length !== 1 || d === "=") throw new RangeError("LEEF delimiter must be one character other than '='");
  const header = [
    "LEEF:2.0",
    leefHeader(opts.vendor ?? DEFAULT_VENDOR, d),
    leefHeader(opts.product ?? DEFAULT_PRODUCT, d),
    leefHeader(opts.version ?? DEFAULT_VERSION, d),
    leefHeader(r.action, d),
    leefDelimiterField(d),
  ].join("|");
  const info = ACTIONS[r.action];
  const ip = splitIp(r.sourceIp);
  const src = ip.v4 ?? ip.v6;
  const attrs: [string, string | number | undefined][] = [
    ["devTime", r.time],
    ["devTimeFormat", LEEF_TIME_FORMAT],
    ["cat", info.category],
    ["sev", Math.max(1, severityOf(r))],
    ["action", r.action],
    ["outcome", r.outcome],
    ["usrName", r.user],
    ["userId", r.userId],
    ["effectiveUser", effectiveUserOf(r)],
    ["role", r.role],
    ["accountName", info.category === "iam" ? r.target : undefined],
    ["src", src],
    ["srcPort", r.sourcePort],
    ["identSrc", info.category === "authentication" ? src : undefined],
    ["isLoginEvent", r.action === "login" && r.outcome === "success" ? "true" : undefined],
    ["isLogoutEvent", r.action === "logout" ? "true" : undefined],
    ["proto", r.protocol],
    ["sessionId", r.sessionId],
    ["resource", r.path],
    ["filePath", r.path],
    ["fileSize", r.size],
    ["targetPath", r.targetPath],
    ["keyRef", r.keyRef],
    ["authMethod", r.method],
    ["node", r.node],
    ["reason", r.reason],
    ["detail", r.detail],
    ["seq", meta.seq],
  ];
  const body = attrs
    .filter((kv): kv is [string, string | number] => kv[1] !== undefined)
    .map(([k, v]) => `${k}=${leefValue(String(v), d)}`)
    .join(d);
  return `${header}|${body}`;
}
