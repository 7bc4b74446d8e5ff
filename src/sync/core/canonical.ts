// Canonical JSON (docs/sync-protocol.md §1): sorted keys, no whitespace, only strings, booleans, safe integers,
// arrays and plain objects. Every signed sync object is hashed and signed in this form, so two encoders agree on the
// bytes and a verifier never signs or checks anything but what it parsed.
import { createHash } from "node:crypto";
import { IntegrityError } from "../../errors.ts";

export type Json = string | boolean | number | Json[] | { [key: string]: Json };

function encode(value: unknown, depth: number): string {
  if (depth > 32) throw new IntegrityError("sync object nested too deeply");
  switch (typeof value) {
    case "string":
      if (!value.isWellFormed()) throw new IntegrityError("sync object holds a malformed string");
      return JSON.stringify(value);
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isSafeInteger(value)) throw new IntegrityError("sync object holds a number that is not an integer");
      return String(value);
    case "object": {
      if (value === null) throw new IntegrityError("sync object holds null");
      if (Array.isArray(value)) return `[${value.map((v) => encode(v, depth + 1)).join(",")}]`;
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) throw new IntegrityError("sync object holds a non-plain value");
      const keys = Object.keys(value).sort();
      const parts: string[] = [];
      for (const k of keys) {
        const v = (value as Record<string, unknown>)[k];
        if (v === undefined) continue;
        parts.push(`${JSON.stringify(k)}:${encode(v, depth + 1)}`);
      }
      return `{${parts.join(",")}}`;
    }
    default:
      throw new IntegrityError(`sync object holds a ${typeof value}`);
  }
}

/** The canonical bytes of `value` (UTF-8). */
export function canonical(value: unknown): Buffer {
  return Buffer.from(encode(value, 0), "utf8");
}

/** `value` without its `sig` field. */
export function unsigned<T extends { sig?: string }>(value: T): Omit<T, "sig"> {
  const { sig: _sig, ...rest } = value;
  return rest;
}

export function sha256Hex(...parts: Buffer[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

/** hex SHA-256 of the canonical form of the whole object (signature included). */
export function objectHash(value: unknown): string {
  return sha256Hex(canonical(value));
}

/** Parses JSON text that must be canonical (re-encoding it gives the same bytes): no duplicate keys, floats, nulls. */
export function parseCanonical(bytes: Buffer): unknown {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new IntegrityError("sync object is not JSON");
  }
  if (!canonical(value).equals(bytes)) throw new IntegrityError("sync object is not in canonical form");
  return value;
}

export const b64 = (b: Buffer): string => b.toString("base64url");

/** Strict base64url (no padding) of exactly `length` bytes when given. */
export function unb64(s: unknown, length?: number): Buffer {
  if (typeof s !== "string" || !/^[A-Za-z0-9_-]*$/.test(s)) throw new IntegrityError("bad base64url field");
  const b = Buffer.from(s, "base64url");
  if (b64(b) !== s) throw new IntegrityError("non-canonical base64url field");
  if (length !== undefined && b.length !== length) throw new IntegrityError("base64url field of the wrong length");
  return b;
}
