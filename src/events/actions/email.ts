// Email notification over SMTP (nodemailer). STARTTLS is required on a plain port (requireTLS: the message and the
// credentials never cross the network in the clear) and certificates are verified; `ca` pins a private CA. The
// message carries event fields only, never file content.
import { eventFields } from "../event.ts";
import { expand } from "../template.ts";
import { type ActionContext, type ActionResult, templateFields } from "./context.ts";

function defaultText(ctx: ActionContext): string {
  const fields = { rule: ctx.rule.name, ...eventFields(ctx.event), ...(ctx.current ? { file: ctx.current } : {}) };
  return `${Object.entries(fields)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n")}\n`;
}

export async function email(ctx: ActionContext): Promise<ActionResult> {
  if (ctx.action.type !== "email") throw new Error("not an email");
  const a = ctx.action;
  const fields = templateFields(ctx);
  // Loaded on first use: nodemailer is ~6 MB of heap that a server without email rules never needs.
  const { default: nodemailer } = await import("nodemailer");
  const transport = nodemailer.createTransport({
    host: a.smtp.host,
    port: a.smtp.port,
    secure: a.smtp.secure,
    requireTLS: !a.smtp.secure,
    auth: a.smtp.user ? { user: a.smtp.user, pass: ctx.secrets.password ?? "" } : undefined,
    tls: { rejectUnauthorized: true, ...(a.smtp.ca ? { ca: a.smtp.ca } : {}), servername: a.smtp.host },
    connectionTimeout: 15_000,
    greetingTimeout: 15_000,
    socketTimeout: 30_000,
  });
  try {
    const info = await transport.sendMail({
      from: a.smtp.from,
      to: a.to,
      subject: expand(a.subject, fields),
      text: a.text !== undefined ? expand(a.text, fields) : defaultText(ctx),
      headers: { "X-Atrest-Delivery": ctx.executionId },
    });
    return { detail: `sent to ${info.accepted.length} recipient(s)` };
  } finally {
    transport.close();
  }
}
