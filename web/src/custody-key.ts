// A custodian's own key for a remote key manager (docs/kms.md "Signed calls"): an ECDSA P-256 key made in this
// browser, non-extractable (the page can use it, nobody can read it out, the server never sees it), kept in
// IndexedDB per user with the certificate the key manager's operator issued for its public key. A custodian call
// the server answers with 428 carries the exact key-manager call to sign; the custodian confirms it, the key signs
// it, and the request goes again with the envelope.

const DB = "atrest-custody";
const STORE = "keys";

export interface CustodyKey {
  user: string;
  privateKey: CryptoKey;
  /** SPKI PEM, to give to the key manager's operator. */
  publicPem: string;
  /** The certificate the key manager issued for it (PEM), once pasted. */
  certificate?: string;
}

function db(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(DB, 1);
    r.onupgradeneeded = () => r.result.createObjectStore(STORE, { keyPath: "user" });
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

async function tx<T>(mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const d = await db();
  try {
    return await new Promise<T>((resolve, reject) => {
      const r = f(d.transaction(STORE, mode).objectStore(STORE));
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
  } finally {
    d.close();
  }
}

export const loadCustodyKey = (user: string) => tx<CustodyKey | undefined>("readonly", (s) => s.get(user));

const pem = (label: string, der: ArrayBuffer) => {
  const b64 = btoa(String.fromCharCode(...new Uint8Array(der)));
  return `-----BEGIN ${label}-----\n${b64.replace(/.{64}/g, "$&\n")}\n-----END ${label}-----\n`;
};

/** Makes (or replaces) this user's key; the old certificate no longer matches and is dropped. */
export async function makeCustodyKey(user: string): Promise<CustodyKey> {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  const key: CustodyKey = {
    user,
    privateKey: pair.privateKey,
    publicPem: pem("PUBLIC KEY", await crypto.subtle.exportKey("spki", pair.publicKey)),
  };
  await tx("readwrite", (s) => s.put(key));
  return key;
}

export async function saveCertificate(user: string, certificate: string): Promise<CustodyKey> {
  const key = await loadCustodyKey(user);
  if (!key) throw new Error("make your custody key first");
  const text = certificate.trim();
  if (!/^-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----$/.test(text)) {
    throw new Error("paste the certificate (client.crt) as PEM, BEGIN and END lines included");
  }
  const next = { ...key, certificate: `${text}\n` };
  await tx("readwrite", (s) => s.put(next));
  return next;
}

const b64url = (b: ArrayBuffer) =>
  btoa(String.fromCharCode(...new Uint8Array(b)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");

/** What a statement asks the key manager to do, in words for the confirmation. */
export function describeStatement(statement: string): string {
  const s = JSON.parse(statement) as { method: string; path: string; body: unknown };
  const body = s.body === null ? "" : ` ${JSON.stringify(s.body)}`;
  return `${s.method} ${s.path}${body}`;
}

/** A statement of a GET: it reads, it changes nothing at the key manager. */
export function isRead(statement: string): boolean {
  return (JSON.parse(statement) as { method?: string }).method === "GET";
}

/** The `atrest-kms-signed` header value for `statement`, signed with `user`'s key. */
export async function signStatement(user: string, statement: string): Promise<string> {
  const key = await loadCustodyKey(user);
  if (!key?.certificate) {
    throw new Error(
      "the key manager is remote: make your custody key and add its certificate (Keys page, Your custody key) first",
    );
  }
  const sig = await crypto.subtle.sign(
    { name: "ECDSA", hash: "SHA-256" },
    key.privateKey,
    new TextEncoder().encode(statement),
  );
  const envelope = JSON.stringify({ statement, signature: b64url(sig), certificate: key.certificate });
  return b64url(new TextEncoder().encode(envelope).buffer as ArrayBuffer);
}
