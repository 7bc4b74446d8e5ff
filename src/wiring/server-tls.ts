// The TLS certificate of the file server's HTTPS doors (the REST API; the S3 door uses the same one): an operator's
// certificate and key (`--tls-cert/--tls-key`), or a self-signed ECDSA P-256 certificate generated at the first start
// and kept, like the SSH host keys, sealed under the key manager (keys/sealed-secrets.ts), so its fingerprint stays the
// same across restarts and a copy of the data directory holds no usable private key. The certificate alone (public)
// is written to <data>/tls/server.crt for clients to trust. The fingerprint (SHA-256 of the DER, as browsers and
// `openssl x509 -fingerprint -sha256` show it) is printed at start, for clients to pin.
import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  type KeyObject,
  webcrypto,
  X509Certificate,
} from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { AtrestError } from "../errors.ts";
import { writeFileDurable } from "../fsutil/durable.ts";
import type { SecretVault } from "../keys/sealed-secrets.ts";

export const TLS_DIR = "tls";
export const TLS_CERT_FILE = "server.crt";
const DAY_MS = 86_400_000;
const DEFAULT_SANS = ["127.0.0.1", "::1", "localhost"];

export interface ServerTls {
  key: string;
  cert: string;
  /** SHA-256 of the certificate's DER, colon-separated upper-case hex (as browsers show it). */
  fingerprint: string;
  /** Where it came from: the sealed generated one (and where its certificate is) or the operator's file. */
  source: string;
}

export function tlsFingerprint(certPem: string): string {
  const der = new X509Certificate(certPem).raw;
  const hex = createHash("sha256").update(der).digest("hex").toUpperCase();
  return `SHA256:${hex.match(/../g)?.join(":")}`;
}

function validate(key: string, cert: string, where: string): void {
  let parsed: X509Certificate;
  try {
    parsed = new X509Certificate(cert);
  } catch {
    throw new AtrestError("INVALID_INPUT", `${where}: not a PEM certificate`);
  }
  if (!parsed.checkPrivateKey(createKey(key, where))) {
    throw new AtrestError("INVALID_INPUT", `${where}: the key does not belong to the certificate`);
  }
}

function createKey(pem: string, where: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch {
    throw new AtrestError("INVALID_INPUT", `${where}: not a PEM private key`);
  }
}

// @peculiar/x509 and its ~200 modules (asn1 schemas, tsyringe) only when a certificate is made, at the first start:
// a server that already has one does not keep them in memory (14 MB of its idle RSS)
async function x509Lib(): Promise<typeof import("@peculiar/x509")> {
  await import("../kms/reflect-metadata.ts");
  const x509 = await import("@peculiar/x509");
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  return x509;
}

async function generate(sans: readonly string[]): Promise<{ key: string; cert: string }> {
  const x509 = await x509Lib();
  const pair = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const alg = { name: "ECDSA", namedCurve: "P-256" } as const;
  const publicKey = (await pair.publicKey.toCryptoKey(alg, true, ["verify"])) as unknown as CryptoKey;
  const privateKey = (await pair.privateKey.toCryptoKey(alg, false, ["sign"])) as unknown as CryptoKey;
  const serial = webcrypto.getRandomValues(new Uint8Array(16));
  serial[0] = (serial[0] & 0x7f) | 0x40;
  const now = Date.now();
  const names = [...new Set([...DEFAULT_SANS, ...sans])].map((s) =>
    isIP(s) ? { type: "ip" as const, value: s } : { type: "dns" as const, value: s },
  );
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(serial).toString("hex"),
    name: "CN=atrest, O=atrest",
    notBefore: new Date(now - 60_000),
    // 825 days: what browsers still accept for a TLS server certificate
    notAfter: new Date(now + 825 * DAY_MS),
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    keys: { privateKey, publicKey },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension(names, false),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });
  return { key: pair.privateKey.export({ format: "pem", type: "pkcs8" }) as string, cert: cert.toString("pem") };
}

/** Name of the sealed secret holding the generated key and certificate (one value: they never part). */
export const TLS_SECRET = "tls.server";

export interface ServerTlsOptions {
  /** The data directory (the generated certificate is written to its tls/). */
  data: string;
  /** Where the generated key and certificate are kept sealed. */
  vault: SecretVault;
  certFile?: string;
  keyFile?: string;
  /** Extra names (IPs or DNS names) for a generated certificate besides 127.0.0.1, ::1, localhost. */
  sans?: readonly string[];
}

/** The operator's certificate if given, else the data dir's, generated on first use. */
export async function loadOrCreateServerTls(o: ServerTlsOptions): Promise<ServerTls> {
  if (o.certFile || o.keyFile) {
    if (!o.certFile || !o.keyFile) throw new AtrestError("INVALID_INPUT", "--tls-cert and --tls-key go together");
    const [cert, key] = await Promise.all([readFile(o.certFile, "utf8"), readFile(o.keyFile, "utf8")]);
    validate(key, cert, o.certFile);
    return { key, cert, fingerprint: tlsFingerprint(cert), source: o.certFile };
  }
  const dir = join(o.data, TLS_DIR);
  const certPath = join(dir, TLS_CERT_FILE);
  let generated = false;
  let sealed = await o.vault.get(TLS_SECRET);
  if (!sealed) {
    const made = await generate(o.sans ?? []);
    const value = Buffer.from(JSON.stringify(made));
    // another process starting at the same moment may win: everyone then uses its pair
    sealed = await o.vault.putIfAbsent(TLS_SECRET, value);
    generated = sealed.equals(value);
    value.fill(0);
  }
  const pair = JSON.parse(sealed.toString("utf8")) as { key: string; cert: string };
  sealed.fill(0);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  // public: what clients pin (curl --cacert); rewritten at each start so it always matches the sealed key
  await writeFileDurable(certPath, pair.cert, { mode: 0o644 });
  const { cert, key } = pair;
  validate(key, cert, certPath);
  return {
    key,
    cert,
    fingerprint: tlsFingerprint(cert),
    source: `${generated ? "generated; " : ""}key sealed under the key manager, certificate ${certPath}`,
  };
}
