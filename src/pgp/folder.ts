// The OpenPGP side of a folder: what a write under a PGP folder becomes (encrypted to the folder's recipients, or
// checked as an inbound OpenPGP message), and the validation of a folder's `pgp` options when an admin sets them.
import type { AuditEvent, AuditSink } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import type { WriteHandle } from "../vfs/types.ts";
import type { WriteFilter } from "../vfs/write-filters.ts";
import { inboundWriteHandle } from "./inbound.ts";
import type { PgpKeyStore } from "./keystore.ts";
import type { PgpFolderOptions } from "./types.ts";
import { encryptingWriteHandle } from "./write-handle.ts";

/** True when writes under a folder with these options are transformed or checked. */
export function pgpApplies(options: PgpFolderOptions | undefined): options is PgpFolderOptions {
  return !!options && ((options.recipients?.length ?? 0) > 0 || options.inbound !== undefined);
}

/**
 * Checks a folder's options now, so an admin learns about an unknown or unusable recipient when setting the folder,
 * not from a partner's failed upload. Returns the options normalised (no empty fields).
 */
export async function validatePgpFolderOptions(
  keys: PgpKeyStore,
  options: PgpFolderOptions,
): Promise<PgpFolderOptions> {
  const out: PgpFolderOptions = {};
  const recipients = options.recipients ?? [];
  if (recipients.length > 0) out.recipients = recipients;
  if (options.sign) out.sign = true;
  if (options.requireCertified) out.requireCertified = true;
  if (options.inbound) out.inbound = options.inbound;
  if (out.inbound && out.recipients) {
    throw new AtrestError(
      "INVALID_INPUT",
      "a folder either encrypts uploads (--pgp) or requires OpenPGP uploads (--pgp-inbound), not both",
    );
  }
  if (out.inbound && out.inbound !== "encrypted" && out.inbound !== "signed") {
    throw new AtrestError("INVALID_INPUT", `--pgp-inbound is encrypted or signed, not ${out.inbound}`);
  }
  if ((out.sign || out.requireCertified) && !out.recipients) {
    throw new AtrestError("INVALID_INPUT", "--pgp-sign and --pgp-require-certified need recipients (--pgp)");
  }
  if (out.recipients) await keys.resolveRecipients(out.recipients, { requireCertified: out.requireCertified });
  if (out.sign) await keys.org.requirePublicKey();
  return out;
}

export interface PgpWriteContext {
  keys: PgpKeyStore;
  audit: AuditSink;
  /** Global path of the folder (for messages). */
  folder: string;
  /** The file's name (recorded in the OpenPGP literal packet). */
  name: string;
  /** The client asked to append to an existing file. */
  resume: boolean;
  event: Omit<AuditEvent, "action" | "outcome">;
}

/** PGP folders as a vfs write filter, registered by the wiring (app.ts). */
export function pgpWriteFilter(keys: PgpKeyStore): WriteFilter {
  return {
    applies: (folder) => pgpApplies(folder.options.pgp),
    openWrite: (ctx, openInner) =>
      openPgpWrite(
        ctx.folder.options.pgp ?? {},
        { keys, audit: ctx.audit, folder: ctx.folder.path, name: ctx.name, resume: ctx.resume, event: ctx.event },
        openInner,
      ),
    checkMove: (from, to) =>
      checkPgpMove({ path: from?.path, pgp: from?.options.pgp }, { path: to.path, pgp: to.options.pgp }),
  };
}

/**
 * Opens a write under a PGP folder: recipients are resolved and checked before anything is opened (a refused
 * recipient stores nothing), then `openInner` opens the container write that receives the OpenPGP message.
 */
export async function openPgpWrite(
  options: PgpFolderOptions,
  ctx: PgpWriteContext,
  openInner: () => Promise<WriteHandle>,
): Promise<WriteHandle> {
  if (ctx.resume) {
    throw new AtrestError(
      "UNSUPPORTED",
      `resuming (appending to) a file is not supported in the OpenPGP folder ${ctx.folder}: upload the whole file again`,
    );
  }
  if (options.inbound) {
    return inboundWriteHandle(await openInner(), options.inbound, ctx);
  }
  let recipients: Awaited<ReturnType<PgpKeyStore["resolveRecipients"]>>;
  try {
    recipients = await ctx.keys.resolveRecipients(options.recipients ?? [], {
      requireCertified: options.requireCertified,
    });
  } catch (err) {
    // The upload's own audit record carries only the error code; operators need to know which key and why.
    const reason = err instanceof AtrestError ? err.message : "recipient check failed";
    ctx.audit.record({ ...ctx.event, action: "pgp.verify", outcome: "failure", reason, detail: "recipients" });
    throw err;
  }
  const signingKey = options.sign ? await ctx.keys.org.privateKey() : undefined;
  const inner = await openInner();
  try {
    return await encryptingWriteHandle(inner, { recipients, signingKey, filename: ctx.name });
  } catch (err) {
    await inner.abort(false).catch(() => {});
    throw err;
  }
}

/**
 * Moving a file into a PGP folder from elsewhere would place content that was never encrypted (or checked) there:
 * refused unless source and target are under the same PGP folder (renames inside it are fine).
 */
export function checkPgpMove(
  from: { path?: string; pgp?: PgpFolderOptions },
  to: { path?: string; pgp?: PgpFolderOptions },
): void {
  if (!pgpApplies(to.pgp) || from.path === to.path) return;
  throw new AtrestError(
    "REFUSED",
    `cannot move a file into the OpenPGP folder ${to.path} from outside it: upload it there instead`,
  );
}
