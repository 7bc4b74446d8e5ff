// Field encryption, a signature and a secret from Node with the client module (src/kms/api/apps-client.ts).
// KMS_URL=https://kms.example:8443 CERT=/etc/webapp/kms node kms-node.ts
import { KmsAppClient } from "../../src/kms/api/apps-client.ts";

const kms = await KmsAppClient.connect({ url: process.env.KMS_URL ?? "", certDir: process.env.CERT ?? "" });
try {
  const context = { table: "cards", row: "42" };
  const { ciphertext } = await kms.encrypt("customers", "4111 1111 1111 1111", context);
  console.log(`ciphertext: ${ciphertext}`);
  const plain = await kms.decrypt("customers", ciphertext, context);
  console.log(plain.toString("utf8"));
  plain.fill(0);

  const signature = await kms.sign("invoices", "invoice 17: 100.00 EUR");
  console.log(`signature valid: ${await kms.verify("invoices", "invoice 17: 100.00 EUR", signature)}`);

  const secret = await kms.getSecret("webapp.mail-api-key");
  console.log(`secret v${secret.version}: ${secret.value.toString("utf8")}`);
  secret.value.fill(0);
} finally {
  await kms.close();
}
