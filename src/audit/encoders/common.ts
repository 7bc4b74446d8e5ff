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
