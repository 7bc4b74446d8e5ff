import ssh2 from "ssh2";
import { AtrestError } from "../errors.ts";

/** Validates OpenSSH authorized_keys text; returns one normalised `type base64 [comment]` line per key. */
export function parseAuthorizedKeys(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    // Options before the key type (e.g. from="...") are not supported yet; say so rather than ignore them.
    const parsed = ssh2.utils.parseKey(line);
    if (parsed instanceof Error || Array.isArray(parsed)) {
      throw new AtrestError("INVALID_INPUT", `not an OpenSSH public key: ${line.slice(0, 40)}...`);
    }
    if (parsed.isPrivateKey()) throw new AtrestError("INVALID_INPUT", "that is a private key; give the .pub file");
    out.push(line);
  }
  return out;
}
