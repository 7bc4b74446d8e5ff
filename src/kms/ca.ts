// The KMS's own certificate authority: ECDSA P-256, certificates built with @peculiar/x509 over WebCrypto, keys
// generated and stored with node:crypto. The CA signs one TLS server certificate (for `kms serve`) and one
// certificate per client (`kms client issue`); the server trusts only this CA, so mTLS identity = "issued here".
//
// Files in the KMS directory, all 0600: ca.key, ca.crt, server.key, server.crt. Client keys are written only to the
// directory the operator names and are never kept by the KMS.

import {
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  type KeyObject,
  X509Certificate as NodeX509,
  randomBytes,
  webcrypto,
} from "node:crypto";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import "./reflect-metadata.ts";
import * as x509 from "@peculiar/x509";
import { AtrestError } from "../errors.ts";
import { writeFileDurable } from "../fsutil/durable.ts";
import type { KmsRole } from "./api/caller.ts";
import { CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE } from "./cert-files.ts";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

export const DEFAULT_SANS: readonly string[] = ["127.0.0.1", "::1", "localhost"];

export interface IssuedCert {
  certPem: string;
  keyPem: string;
  /** SHA-256 of the certificate's DER, lowercase hex: the identity the server looks up. */
  fingerprint: string;
  serial: string;
  notAfter: string;
}

function newKeyPair(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync("ec", { namedCurve: "P-256" });
}

/** Positive, 127-bit random serial (RFC 5280 allows up to 20 octets; a set high bit would read as negative). */
function newSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] & 0x7f) | 0x40;
  return b.toString("hex");
}

export function fingerprintOfDer(der: Uint8Array): string {
  return createHash("sha256").update(der).digest("hex");
}

export function fingerprintOfPem(pem: string): string {
  return fingerprintOfDer(new NodeX509(pem).raw);
}

async function signingKey(key: KeyObject): Promise<CryptoKey> {
  return (await key.toCryptoKey(EC, false, ["sign"])) as unknown as CryptoKey;
}

async function verifyingKey(key: KeyObject): Promise<CryptoKey> {
  return (await key.toCryptoKey(EC, true, ["verify"])) as unknown as CryptoKey;
}

function subjectAltNames(sans: readonly string[]): x509.JsonGeneralNames {
  return [...new Set(sans)].map((s) => (isIP(s) ? { type: "ip", value: s } : { type: "dns", value: s }));
}

function keyPem(key: KeyObject): string {
  return key.export({ format: "pem", type: "pkcs8" }) as string;
}

export interface Ca {
  cert: x509.X509Certificate;
  certPem: string;
  key: CryptoKey;
}

async function issue(
  ca: Ca,
  subject: string,
  days: number,
  extensions: x509.Extension[],
  subjectKey?: KeyObject,
): Promise<IssuedCert & { cert: x509.X509Certificate }> {
  const pair = subjectKey ? undefined : newKeyPair();
  const publicKey = await verifyingKey(subjectKey ?? (pair as { publicKey: KeyObject }).publicKey);
  const serial = newSerial();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject,
    issuer: ca.cert.subject,
    // A minute of slack for clocks between the KMS and its clients.
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + days * DAY_MS),
    signingAlgorithm: SIGNING,
    publicKey,
    signingKey: ca.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
      ...extensions,
    ],
  });
  const certPem = cert.toString("pem");
  return {
    cert,
    certPem,
    keyPem: pair ? keyPem(pair.privateKey) : "",
    fingerprint: fingerprintOfDer(new Uint8Array(cert.rawData)),
    serial,
    notAfter: cert.notAfter.toISOString(),
  };
}

function escapeRdn(value: string): string {
  return value.replace(/([,+"\\<>;=#])/g, "\\$1");
}

export interface CreateCaOptions {
  /** Extra server certificate names (IP addresses or DNS names) besides 127.0.0.1, ::1 and localhost. */
  sans?: readonly string[];
  /** Shown in the CA's common name, to tell several KMS instances apart. */
  label?: string;
}

/**
 * Creates the CA and the server's TLS key and certificate in `dir`. Never replaces an existing CA key: returns false
 * if one exists (then nothing is written).
 */
export async function createCa(dir: string, options: CreateCaOptions = {}): Promise<boolean> {
  const pair = newKeyPair();
  const publicKey = await verifyingKey(pair.publicKey);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: newSerial(),
    name: `CN=${escapeRdn(`atrest KMS CA${options.label ? ` ${options.label}` : ""}`)}, O=atrest`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3650 * DAY_MS),
    signingAlgorithm: SIGNING,
    keys: { privateKey: await signingKey(pair.privateKey), publicKey },
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });
  if (!(await writeFileDurable(join(dir, CA_KEY_FILE), keyPem(pair.privateKey), { exclusive: true }))) return false;
  const certPem = cert.toString("pem");
  await writeFileDurable(join(dir, CA_CERT_FILE), certPem);
  await issueServerCert(dir, { cert, certPem, key: await signingKey(pair.privateKey) }, options.sans ?? []);
  return true;
}

/** (Re)issues the server certificate, e.g. to add `--san` names; clients keep trusting it (same CA). */
export async function issueServerCert(dir: string, ca: Ca, extraSans: readonly string[]): Promise<IssuedCert> {
  const issued = await issue(ca, "CN=atrest-kms, O=atrest", 825, [
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
    new x509.SubjectAlternativeNameExtension(subjectAltNames([...DEFAULT_SANS, ...extraSans]), false),
  ]);
  await writeFileDurable(join(dir, SERVER_KEY_FILE), issued.keyPem);
  await writeFileDurable(join(dir, SERVER_CERT_FILE), issued.certPem);
  return issued;
}

export async function loadCa(dir: string): Promise<Ca> {
  let keyPemText: string;
  let certPem: string;
  try {
    [keyPemText, certPem] = await Promise.all([
      readFile(join(dir, CA_KEY_FILE), "utf8"),
      readFile(join(dir, CA_CERT_FILE), "utf8"),
    ]);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      throw new AtrestError("NOT_FOUND", `no KMS CA in ${dir} (run atrest kms init --data ${dir})`);
    }
    throw e;
  }
  return {
    cert: new x509.X509Certificate(certPem),
    certPem,
    key: await signingKey(createPrivateKey(keyPemText)),
  };
}

/**
 * A client certificate for `name` (CN) with its role in OU; the role that counts is the one recorded in kms.db. With
 * `publicKey` (an ECDSA P-256 key the person generated, e.g. in the browser) the certificate is for that key and
 * `keyPem` is empty: the private key never existed here.
 */
export async function issueClientCert(
  ca: Ca,
  name: string,
  role: KmsRole,
  days = 365,
  publicKey?: KeyObject,
): Promise<IssuedCert> {
  if (
    publicKey &&
    (publicKey.asymmetricKeyType !== "ec" || publicKey.asymmetricKeyDetails?.namedCurve !== "prime256v1")
  ) {
    throw new AtrestError("INVALID_INPUT", "the public key must be ECDSA P-256 (WebCrypto: ECDSA, namedCurve P-256)");
  }
  const { cert: _cert, ...issued } = await issue(
    ca,
    `CN=${escapeRdn(name)}, OU=${role}, O=atrest`,
    days,
    [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], false),
    ],
    publicKey,
  );
  return issued;
}

export interface TlsFiles {
  key: string;
  cert: string;
  ca: string;
}

/** The server's TLS key, certificate and the CA certificate (to verify clients). */
export async function loadServerTls(dir: string): Promise<TlsFiles> {
  const [key, cert, ca] = await Promise.all(
    [SERVER_KEY_FILE, SERVER_CERT_FILE, CA_CERT_FILE].map((f) => readFile(join(dir, f), "utf8")),
  );
  return { key, cert, ca };
}
