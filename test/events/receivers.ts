// Test peers for trigger actions: an HTTP(S) webhook receiver that checks signatures the way a real receiver would.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttps } from "node:https";
import type { AddressInfo } from "node:net";

export interface Delivery {
  headers: IncomingMessage["headers"];
  body: string;
  json: Record<string, unknown>;
  /** The signature verified with the receiver's secret over `${timestamp}.${body}`. */
  validSignature: boolean;
  status: number;
}

export interface WebhookReceiver {
  url: string;
  deliveries: Delivery[];
  /** Status to answer with (e.g. 500 to make the sender retry). */
  status: number;
  secret: string;
  close(): Promise<void>;
}

export async function startWebhookReceiver(
  secret: string,
  tls?: { key: string; cert: string },
): Promise<WebhookReceiver> {
  const r: WebhookReceiver = { url: "", deliveries: [], status: 200, secret, close: async () => {} };
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      const ts = String(req.headers["x-atrest-timestamp"] ?? "");
      const sig = String(req.headers["x-atrest-signature"] ?? "");
      const expected = `sha256=${createHmac("sha256", r.secret).update(`${ts}.${body}`).digest("hex")}`;
      const fresh = Math.abs(Date.now() / 1000 - Number(ts)) < 300;
      const validSignature =
        fresh && sig.length === expected.length && timingSafeEqual(Buffer.from(sig), Buffer.from(expected));
      r.deliveries.push({ headers: req.headers, body, json: JSON.parse(body), validSignature, status: r.status });
      res.statusCode = r.status;
      res.end();
    });
  };
  const server: Server = tls ? createHttps(tls, handler) : createHttp(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  r.url = `${tls ? "https" : "http"}://${tls ? "localhost" : "127.0.0.1"}:${port}/hook`;
  r.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return r;
}

export async function waitFor<T>(fn: () => Promise<T | undefined> | T | undefined, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
