// File names of the KMS's TLS material (kept apart from ca.ts so clients need not load the certificate builder).

/** In the KMS directory, all 0600. */
export const CA_KEY_FILE = "ca.key";
export const CA_CERT_FILE = "ca.crt";
export const SERVER_KEY_FILE = "server.key";
export const SERVER_CERT_FILE = "server.crt";

/** In a client directory (`kms client issue --out DIR`, read by `--cert DIR` / `--kms-cert DIR`). */
export const CLIENT_KEY_FILE = "client.key";
export const CLIENT_CERT_FILE = "client.crt";
export const CLIENT_CA_FILE = "ca.crt";
