// Shared by the SIEM encoders: who the events say they come from, and small value helpers.
import { isIPv4, isIPv6 } from "node:net";

export interface EncoderOptions {
  vendor?: string;
  product?: string;
  version?: string;
}

export const DEFAULT_VENDOR = "atrest";
export const DEFAULT_PRODUCT = "atrest";
export const DEFAULT_VERSION = "0.1.0";

/** Extra per-record context an encoder may carry: the record's position in the hash-chained local log. */
export interface RecordMeta {
  seq?: number;
}

/** Splits an address into IPv4 / IPv6 (an IPv4-mapped IPv6 address counts as IPv4). */
export function splitIp(ip: string | undefined): { v4?: string; v6?: string } {
  if (ip === undefined) return {};
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped?.[1] && isIPv4(mapped[1])) return { v4: mapped[1] };
  if (isIPv4(ip)) return { v4: ip };
  if (isIPv6(ip)) return { v6: ip };
  return {};
}

/** Last path segment ("" for "/"). */
export function baseName(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? path : path.slice(i + 1);
}

// Characters a hostile file name or user name may carry that must not reach a SIEM parser or a terminal as
// themselves: C0 controls (ESC starts terminal escape sequences, NUL ends C strings, VT/FF/NEL/LS/PS break lines in
// some parsers), DEL, C1 controls (U+009B is a one-byte CSI), the Unicode line and paragraph separators and the bidi
// embedding/override/isolate controls (they reorder what an analyst sees). Tab is left alone (every format here takes
// it in a value; LEEF replaces it where it is the delimiter); CR and LF are listed, but each format handles them its
// own way (an escape, a space) before calling `replaceControls`.
// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
const CONTROLS = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
const HAS_CONTROLS = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** The replacement character for each control left in `value` (formats without an escape for them: CEF, LEEF, 5424). */
export function replaceControls(value: string): string {
  return HAS_CONTROLS.test(value) ? value.replace(CONTROLS, "\ufffd") : value;
}

/** True when `value` holds a character `replaceControls` would replace. */
export function hasControls(value: string): boolean {
  return HAS_CONTROLS.test(value);
}

const JSON_UNSAFE = /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/**
 * JSON.stringify, and the characters it leaves as they are but a terminal or a log viewer acts on (DEL, C1 controls,
 * line/paragraph separators, bidi controls) written as \uXXXX escapes: the same value for every JSON parser.
 */
export function safeJson(value: unknown): string {
  return JSON.stringify(value).replace(JSON_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
