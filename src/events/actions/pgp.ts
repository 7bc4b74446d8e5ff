// PGP actions through the OpenPGP key store (src/pgp): encrypt the file to recipients into `<name>.pgp` (the next
// actions work on the .pgp), or write a detached signature `<name>.asc` by the organisation key. Both stream.
import { AtrestError } from "../../errors.ts";
import { type ActionContext, type ActionResult, baseName, requireCurrent } from "./context.ts";

function pgpOf(ctx: ActionContext) {
  if (!ctx.pgp) throw new AtrestError("UNSUPPORTED", "the OpenPGP key store is not available");
  return ctx.pgp;
}

export async function pgpEncrypt(ctx: ActionContext): Promise<ActionResult> {
  if (ctx.action.type !== "pgp-encrypt") throw new Error("not pgp-encrypt");
  const a = ctx.action;
  const pgp = pgpOf(ctx);
  const from = requireCurrent(ctx);
  const to = `${from}.pgp`;
  if ((await ctx.fs.kind(from)) === undefined && (await ctx.fs.kind(to)) === "file") {
    // a rerun after the plaintext was already removed
    return { detail: `already encrypted to ${to}`, current: to };
  }
  const encrypted = await pgp.encrypt(ctx.fs.readStream(from), a.recipients, {
    sign: a.sign,
    requireCertified: a.requireCertified,
    filename: baseName(from),
  });
  const size = await ctx.fs.writeStream(to, encrypted, true);
  if (a.removePlaintext) await ctx.fs.remove(from);
  return { detail: `encrypted to ${to} (${size} bytes)`, current: to };
}

export async function pgpSign(ctx: ActionContext): Promise<ActionResult> {
  const pgp = pgpOf(ctx);
  const from = requireCurrent(ctx);
  const to = `${from}.asc`;
  await ctx.fs.writeStream(to, await pgp.signDetached(ctx.fs.readStream(from)), true);
  return { detail: `signature ${to}` };
}
