// File names of a KMS client's TLS material, in the directory `atrest kms client issue --out DIR` writes and
// `--cert DIR` / `--kms-cert DIR` read (all 0600).

export const CLIENT_KEY_FILE = "client.key";
export const CLIENT_CERT_FILE = "client.crt";
export const CLIENT_CA_FILE = "ca.crt";
