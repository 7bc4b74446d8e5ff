// The PGP actions' view of src/pgp: recipients resolved (and checked for use: expiry, revocation, certification) by
// the key store at every run, streaming encryption in the GnuPG 2.2 shape, signatures by the organisation key.
import { encryptStream, PGP_CONFIG, toWebStream } from "../pgp/encrypt.ts";
import type { PgpKeyStore } from "../pgp/keystore.ts";
import { openpgpLib } from "../pgp/lib.ts";
import type { PgpApi } from "./actions/context.ts";

export function pgpApi(store: PgpKeyStore): PgpApi {
  return {
    async checkRecipients(specs, requireCertified) {
      await store.resolveRecipients(specs, { requireCertified });
    },
    async checkOrgKey() {
      await store.org.requirePublicKey();
    },
    async encrypt(input, specs, opts) {
      const recipients = await store.resolveRecipients(specs, { requireCertified: opts.requireCertified });
      const signingKey = opts.sign ? await store.org.privateKey() : undefined;
      return encryptStream(input, recipients, { signingKey, filename: opts.filename });
    },
    async signDetached(input) {
      const signingKey = await store.org.privateKey();
      const message = await (await openpgpLib()).createMessage({ binary: toWebStream(input) });
      const armored = (await (
        await openpgpLib()
      ).sign({
        message,
        signingKeys: [signingKey],
        detached: true,
        format: "armored",
        config: PGP_CONFIG,
      })) as unknown as ReadableStream<string>;
      return armored.pipeThrough(new TextEncoderStream());
    },
  };
}
