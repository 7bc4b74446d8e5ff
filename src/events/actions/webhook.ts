// Webhook: POST of the event as JSON, signed with HMAC-SHA256 over `<timestamp>.<body>` (the Stripe/Slack scheme:
// the receiver recomputes it with the shared secret, compares in constant time and rejects stale timestamps, which
// stops replays). TLS certificates are always verified; `ca` pins a private CA instead of the system store.
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { hmacSha256 } from "../../crypto/hmac.ts";
import { AtrestError } from "../../errors.ts";
import { eventFields } from "../event.ts";
import type { ActionContext, ActionResult } from "./context.ts";

export const SIGNATURE_HEADER = "x-atrest-signature";
export const TIMESTAMP_HEADER = "x-atrest-timestamp";
export const DELIVERY_HEADER = "x-atrest-delivery";

/** Hex HMAC-SHA256 of `${timestamp}.${body}`; what receivers recompute. */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return hmacSha256(Buffer.from(secret), Buffer.from(`${timestamp}.`), Buffer.from(body)).toString("hex");
}

/** A receiver's answer that retrying cannot change: a client error other than timeout / too many requests. */
export class WebhookRejected extends AtrestError {
  constructor(status: number) {
    super("INVALID_INPUT", `webhook receiver answered HTTP ${status}`);
  }
}

export async function webhook(ctx: ActionContext): Promise<ActionResult> {
  if (ctx.action.type !== "webhook") throw new Error("not a webhook");
  const a = ctx.action;
  const secret = ctx.secrets.secret;
  if (!secret) throw new AtrestError("KEY_UNAVAILABLE", "webhook secret missing (re-add the rule)");
  const body = JSON.stringify({
    id: ctx.executionId,
    rule: ctx.rule.name,
    ...eventFields(ctx.event),
    ...(ctx.event.size !== undefined ? { size: ctx.event.size } : {}),
    ...(ctx.current ? { file: ctx.current } : {}),
  });
  const timestamp = String(Math.floor(ctx.now() / 1000));
  const signature = webhookSignature(secret, timestamp, body);
  const url = new URL(a.url);
  const send = url.protocol === "https:" ? httpsRequest : httpRequest;
  const status = await new Promise<number>((resolve, reject) => {
    const req = send(
      url,
      {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
          "user-agent": "atrest-trigger",
          [TIMESTAMP_HEADER]: timestamp,
          [SIGNATURE_HEADER]: `sha256=${signature}`,
          [DELIVERY_HEADER]: ctx.executionId,
        },
        ...(url.protocol === "https:" ? { ca: a.ca, rejectUnauthorized: true } : {}),
        timeout: a.timeoutSeconds * 1000,
        signal: ctx.signal,
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`webhook timed out after ${a.timeoutSeconds} s`)));
    req.on("error", reject);
    req.end(body);
  }).catch((err: Error) => {
    // the URL is configuration, not a secret; the body never appears in errors
    throw new Error(`webhook ${url.origin}${url.pathname}: ${err.message}`);
  });
  if (status >= 200 && status < 300) return { detail: `HTTP ${status}` };
  // redirects are not followed (the signed body must not wander to another host): fix the URL instead
  if ((status >= 300 && status < 500 && status !== 408 && status !== 429) || status === 0) {
    throw new WebhookRejected(status);
  }
  throw new Error(`webhook receiver answered HTTP ${status}`);
}
