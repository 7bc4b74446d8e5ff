// File names of the KMS's own TLS material (kept apart from ca.ts so the backup need not load the certificate
// builder). A client's files are named in ./api/cert-files.ts.

/** In the KMS directory, all 0600. */
export const CA_KEY_FILE = "ca.key";
export const CA_CERT_FILE = "ca.crt";
export const SERVER_KEY_FILE = "server.key";
export const SERVER_CERT_FILE = "server.crt";
