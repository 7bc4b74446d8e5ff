// Share links for E2EE regions (issue 14 item 4, docs/sync-protocol.md §6a): one file version handed to someone
// without an account. The link key travels only in the URL fragment (`…/links/<id>#<key>`, never sent by an HTTP
// client); the server keeps the link's payload sealed under it (the file's name, size, hashes and its own file key,
// bound to the link id) and the blob, and enforces expiry and revocation.
import { open as aeadOpen, seal as aeadSeal, KEY_LENGTH, NONCE_LENGTH } from "../../crypto/aead.ts";
import { randomBytes } from "../../crypto/random.ts";
import { AtrestError, IntegrityError } from "../../errors.ts";
import { b64, canonical, parseCanonical, unb64 } from "./canonical.ts";
import { PROTOCOL_VERSION } from "./keys.ts";
import { isValidName } from "./names.ts";

export const LINK_ID = /^[0-9a-f]{32}$/;

export interface LinkPayload {
  v: number;
  type: "link";
  regionId: string;
  entryId: string;
  fver: number;
  name: string;
  size: number;
  /** Plaintext SHA-256. */
  sha: string;
  blobHash: string;
  blobSize: number;
  /** The file version's own key (b64): opens this one container, nothing else of the region. */
  dek: string;
}

const aad = (linkId: string) => Buffer.from(`atrest-sync v1 link ${linkId}`, "ascii");

export function newLink(): { id: string; key: Buffer } {
  return { id: randomBytes(16).toString("hex"), key: randomBytes(KEY_LENGTH) };
}

export function sealLink(key: Buffer, linkId: string, p: LinkPayload): string {
  return b64(aeadSeal(key, randomBytes(NONCE_LENGTH), canonical(p), aad(linkId)));
}

export function openLink(key: Buffer, linkId: string, sealed: string): LinkPayload {
  const p = parseCanonical(aeadOpen(key, unb64(sealed), aad(linkId))) as LinkPayload;
  if (p.type !== "link" || p.v !== PROTOCOL_VERSION) throw new IntegrityError("not a v1 link payload");
  if (!isValidName(p.name) || !/^[0-9a-f]{64}$/.test(p.sha) || !/^[0-9a-f]{64}$/.test(p.blobHash)) {
    throw new IntegrityError("bad link payload");
  }
  return p;
}

/**
 * `https://host/e/<id>#<key>` (the web app's page, which decrypts in the browser) or the API form
 * `https://host/api/v1/sync/links/<id>#<key>` (links made before the page existed) → id and key (the fragment stays
 * on this side).
 */
export function parseLinkUrl(url: string): { origin: string; id: string; key: Buffer } {
  const u = new URL(url);
  const m = /^\/(?:e|api\/v1\/sync\/links)\/([0-9a-f]{32})$/.exec(u.pathname);
  if (u.protocol !== "https:" || !m || !u.hash)
    throw new AtrestError("INVALID_INPUT", "not an atrest sync link (https://…/e/<id>#<key>)");
  return { origin: u.origin, id: m[1] as string, key: unb64(u.hash.slice(1), KEY_LENGTH) };
}

/** The link's URL: the web app's page, which a browser opens and the CLI (`sync link get`) fetches alike. */
export function linkUrl(server: string, id: string, key: Buffer): string {
  return `${server.replace(/\/+$/, "")}/e/${id}#${b64(key)}`;
}
