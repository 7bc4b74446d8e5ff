// Who is calling the key manager. The HTTPS server derives it from the client certificate (the clients table row it
// was issued under); the embedded provider and local CLI commands use fixed identities. Every KmsService call is
// authorised and audited against it.

export const KMS_ROLES = ["server", "operator", "custodian", "auditor", "admin"] as const;

export type KmsRole = (typeof KMS_ROLES)[number];

export interface KmsCaller {
  /** Client name as issued (`atrest kms client issue <name>`), or a fixed local identity. */
  name: string;
  role: "server" | "operator" | "custodian" | "auditor" | "admin";
  /** SHA-256 of the client certificate (DER), hex, when the call came over mTLS. */
  certFingerprint?: string;
  sourceIp?: string;
  /** A signed call (relayed.ts): the `server` client that carried it; the caller is the person who signed. */
  via?: string;
}

export function isKmsRole(value: unknown): value is KmsRole {
  return typeof value === "string" && (KMS_ROLES as readonly string[]).includes(value);
}
