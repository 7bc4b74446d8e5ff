// Measures `audit verify` on a generated log: node test/audit/verify-bench.ts [records] (default 1,000,000).
// Not a test (not *.test.ts): writes the file with the real AuditLog, then times verifyChain over it.
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { keyFingerprint, verifyChain } from "../../src/audit/chain.ts";
import { AuditLog } from "../../src/audit/log.ts";

const n = Number(process.argv[2] ?? 1_000_000);
const dir = mkdtempSync(join(tmpdir(), "atrest-audit-bench-"));
const path = join(dir, "audit.log");
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const fingerprint = keyFingerprint(publicKey);
let t = performance.now();
const log = new AuditLog(path, randomBytes(32), { signer: { privateKey, fingerprint } });
for (let i = 0; i < n; i++) {
  log.record({
    action: "upload",
    outcome: "success",
    user: "alice",
    effectiveUser: "alice",
    protocol: "sftp",
    sourceIp: "192.0.2.7",
    sessionId: `s${i % 97}`,
    path: `/alice/reports/2026/q4/file-${i}.csv`,
    size: i * 7,
    keyRef: "kek:default:v1",
  });
}
await log.close();
const wrote = (performance.now() - t) / 1000;
t = performance.now();
const r = verifyChain(path, { publicKeys: new Map([[fingerprint, publicKey]]) });
const verified = (performance.now() - t) / 1000;
console.log(
  `${r.records} records + ${r.checkpoints} checkpoints, ${(statSync(path).size / 2 ** 20).toFixed(0)} MiB: ` +
    `written in ${wrote.toFixed(1)} s, verified in ${verified.toFixed(2)} s${r.error ? ` ERROR ${r.error.message}` : ""}`,
);
rmSync(dir, { recursive: true, force: true });
