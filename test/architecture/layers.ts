// The layer map of src/ (DESIGN §5, issue 10), in one place: test/architecture.test.ts enforces it and
// docs/architecture.md quotes it. A file imports only from its own layer or lower ones; kms internals stay behind
// kms/api; folders never form a cycle.

export interface Layer {
  rank: number;
  /** Path prefixes under src/ ("dir/" for a folder, "file.ts" for a top-level file). Longest prefix wins. */
  paths: string[];
  why: string;
}

export const LAYERS: Record<string, Layer> = {
  base: {
    rank: 0,
    paths: ["crypto/", "errors.ts", "logger.ts", "fsutil/", "test-hooks.ts"],
    why:
      "node:crypto wrappers, the error family, the logger shape, durable writes and pid checks, the test-hook slot: " +
      "used everywhere",
  },
  format: { rank: 1, paths: ["format/"], why: "the container format: bytes in, bytes out" },
  foundation: {
    rank: 2,
    paths: ["store/", "kms/api/", "container-io/", "metrics/"],
    why:
      "metadata and blob stores, what key manager clients import, container streaming over format; metrics: a " +
      "registry and its HTTP endpoint that audit, the KMS and the server all feed, needing nothing above errors",
  },
  "sync core": {
    rank: 2,
    paths: ["sync/core/"],
    why: "the E2EE sync protocol's pure core (docs/sync-protocol.md): keys, chains, envelopes, names, manifests, files",
  },
  "sync server": {
    rank: 7,
    paths: ["sync/server/"],
    why: "the server's side of E2EE sync: its checks and stores over the metadata and blob stores, audited",
  },
  "sync client": {
    rank: 8,
    paths: ["sync/client/"],
    why: "the E2EE sync client: sealed device state, the HTTPS client and the two-way sync engine (used by the CLI)",
  },
  kms: {
    rank: 4,
    paths: ["kms/"],
    why:
      "the key manager service: a program of its own over kms/api, keeping its own hash-chained audit log (hence above " +
      "audit); the file server reaches it only through app.ts and the CLI",
  },
  audit: { rank: 3, paths: ["audit/"], why: "the audit log and SIEM shipping: every layer above records into it" },
  vfs: {
    rank: 4,
    paths: ["vfs/"],
    why: "the encrypted filesystem; PGP folders and KEK choice are registered from above",
  },
  keys: {
    rank: 5,
    paths: ["keys/"],
    why: "key jobs over the vfs tree and the store (rewrap, reencrypt, shred report, DEK cache, who-can-decrypt)",
  },
  pgp: { rank: 5, paths: ["pgp/"], why: "OpenPGP key store and the folder write filter over the vfs" },
  events: { rank: 6, paths: ["events/"], why: "triggers: run actions (pgp, move, webhook) on vfs events" },
  backup: {
    rank: 6,
    paths: ["backup/"],
    why: "the file server's metadata bundle: needs the store and a key manager (keys/provider), used by the CLI",
  },
  service: { rank: 7, paths: ["service/"], why: "what every door shares: login, defender, sessions, admin use-cases" },
  protocols: { rank: 8, paths: ["protocols/"], why: "thin adapters per door (sftp; http and s3 next)" },
  config: {
    rank: 9,
    paths: ["config/"],
    why: "the configuration schema: composes the schemas of what it configures (audit, defender); read by the CLI",
  },
  wiring: {
    rank: 9,
    paths: ["app.ts", "wiring/"],
    why: "builds the layers and registers upward behaviour (hooks) at start; wiring/ holds its parts the CLI shares",
  },
  cli: { rank: 10, paths: ["cli/"], why: "the commands: may use everything" },
};

/** Outside src/kms only these may import kms internals (anything but kms/api). */
export const KMS_INTERNALS_ALLOWED = ["app.ts", "wiring/", "cli/"];

/**
 * Today's violations, each "importer -> imported" (paths under src/) with the lane that removes it. Remove an entry in
 * the commit that fixes it; the check fails on an entry whose import no longer exists, so the list only shrinks. At the
 * end of issue 10 it is empty.
 */
export const KNOWN_VIOLATIONS: Record<string, string> = {};
