// KEK names and key refs (`kek:<name>:v<N>`), as both ends of the key manager API spell them.

import { AtrestError } from "../../errors.ts";

const KEY_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const KEY_REF = /^kek:([a-z0-9][a-z0-9._-]{0,62}):v(\d+)$/;

export function isValidKeyName(name: unknown): name is string {
  return typeof name === "string" && KEY_NAME.test(name);
}

/** Throws INVALID_INPUT for a bad key name. The name is echoed: it is an identifier, never secret. */
export function assertKeyName(name: unknown): asserts name is string {
  if (!isValidKeyName(name)) {
    const shown = typeof name === "string" ? JSON.stringify(name.slice(0, 80)) : typeof name;
    throw new AtrestError("INVALID_INPUT", `invalid key name ${shown}: expected [a-z0-9][a-z0-9._-]{0,62}`);
  }
}

export function formatKeyRef(name: string, version: number): string {
  return `kek:${name}:v${version}`;
}

/** The name and version of a well-formed key ref; undefined for anything else. */
export function parseKeyRef(ref: string): { name: string; version: number } | undefined {
  const m = KEY_REF.exec(ref);
  return m ? { name: m[1] as string, version: Number(m[2]) } : undefined;
}
