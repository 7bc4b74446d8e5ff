// Bucket CORS (Get/Put/DeleteBucketCors) and what it answers: the Access-Control-* headers of a request from a page of
// another origin, and the preflight OPTIONS a browser sends first. The rules are a sealed record of the bucket
// folder (vfs dirRecord "cors"). docs/s3.md "CORS".
import type { IncomingMessage, ServerResponse } from "node:http";
import { bucketExists, type Ctx, readSmallBody, send } from "./context.ts";
import { S3Error } from "./errors.ts";
import { xmlDoc, xmlTexts } from "./xml.ts";

export interface CorsRule {
  id?: string;
  origins: string[];
  methods: string[];
  headers: string[];
  expose: string[];
  maxAge?: number;
}

const METHODS = new Set(["GET", "PUT", "HEAD", "POST", "DELETE"]);
const MAX_RULES = 100;

const malformed = () =>
  new S3Error(
    "MalformedXML",
    400,
    "The XML you provided was not well-formed or did not validate against our published schema.",
  );

/** The rules of a CORSConfiguration document, checked as S3 checks them. */
export function parseCors(xml: string): CorsRule[] {
  if (!xml.includes("<CORSConfiguration")) throw malformed();
  const rules = xmlTexts(xml, "CORSRule").map((r) => {
    const texts = (tag: string) => xmlTexts(r, tag).map((t) => t.trim());
    const rule: CorsRule = {
      origins: texts("AllowedOrigin"),
      methods: texts("AllowedMethod"),
      headers: texts("AllowedHeader"),
      expose: texts("ExposeHeader"),
    };
    const id = texts("ID")[0];
    if (id) rule.id = id;
    const age = texts("MaxAgeSeconds")[0];
    if (age !== undefined) {
      if (!/^\d{1,9}$/.test(age)) throw malformed();
      rule.maxAge = Number(age);
    }
    if (rule.origins.length === 0 || rule.methods.length === 0) throw malformed();
    for (const m of rule.methods) {
      if (!METHODS.has(m)) {
        throw new S3Error(
          "InvalidRequest",
          400,
          `Found unsupported HTTP method in CORS config. Unsupported method is ${m}`,
        );
      }
    }
    for (const o of [...rule.origins, ...rule.headers]) {
      if ((o.match(/\*/g) ?? []).length > 1) {
        throw new S3Error(
          "InvalidRequest",
          400,
          `AllowedOrigin/AllowedHeader "${o}" can not have more than one wildcard.`,
        );
      }
    }
    return rule;
  });
  if (rules.length === 0 || rules.length > MAX_RULES) throw malformed();
  return rules;
}

/** An AllowedOrigin / AllowedHeader pattern (at most one `*`) against a value. */
function matches(pattern: string, value: string, caseless = false): boolean {
  const p = caseless ? pattern.toLowerCase() : pattern;
  const v = caseless ? value.toLowerCase() : value;
  const star = p.indexOf("*");
  if (star < 0) return p === v;
  const head = p.slice(0, star);
  const tail = p.slice(star + 1);
  return v.length >= head.length + tail.length && v.startsWith(head) && v.endsWith(tail);
}

/** The first rule that allows `origin` to use `method` (with the request headers of a preflight), as S3 picks it. */
export function matchRule(
  rules: CorsRule[],
  origin: string,
  method: string,
  requestHeaders: string[] = [],
): CorsRule | undefined {
  return rules.find(
    (r) =>
      r.origins.some((o) => matches(o, origin)) &&
      r.methods.includes(method) &&
      requestHeaders.every((h) => r.headers.some((a) => matches(a, h, true))),
  );
}

/** The Access-Control-* headers a matching rule answers. */
export function corsHeaders(rule: CorsRule, origin: string, requestHeaders: string[] = []): Record<string, string> {
  const any = rule.origins.includes("*");
  return {
    "access-control-allow-origin": any ? "*" : origin,
    "access-control-allow-methods": rule.methods.join(", "),
    ...(requestHeaders.length > 0 ? { "access-control-allow-headers": requestHeaders.join(", ") } : {}),
    ...(rule.expose.length > 0 ? { "access-control-expose-headers": rule.expose.join(", ") } : {}),
    ...(rule.maxAge !== undefined ? { "access-control-max-age": String(rule.maxAge) } : {}),
    ...(any ? {} : { "access-control-allow-credentials": "true" }),
    vary: "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
  };
}

/** Get/Put/DeleteBucketCors. Setting them needs `mkdir` on the bucket folder and is audited (the rule count only). */
export async function bucketCors(c: Ctx): Promise<void> {
  await bucketExists(c.session, c.bucket);
  const s = c.session;
  if (!s.getDirRecord || !s.setDirRecord) {
    throw new S3Error("NotImplemented", 501, "A header you provided implies functionality that is not implemented");
  }
  const dir = `/${c.bucket}`;
  const m = c.req.method;
  if (m === "GET") {
    const rules = await s.getDirRecord<CorsRule[]>(dir, "cors");
    if (!rules) throw new S3Error("NoSuchCORSConfiguration", 404, "The CORS configuration does not exist");
    const doc = xmlDoc("CORSConfiguration", {
      CORSRule: rules.map((r) => ({
        ID: r.id,
        AllowedHeader: r.headers,
        AllowedMethod: r.methods,
        AllowedOrigin: r.origins,
        ExposeHeader: r.expose,
        MaxAgeSeconds: r.maxAge,
      })),
    });
    send(c.res, 200, doc);
    return;
  }
  if (m === "DELETE") {
    await s.setDirRecord(dir, "cors", undefined, "cors removed");
    send(c.res, 204);
    return;
  }
  if (m !== "PUT")
    throw new S3Error("MethodNotAllowed", 405, "The specified method is not allowed against this resource.");
  const rules = parseCors(await readSmallBody(c));
  await s.setDirRecord(dir, "cors", rules, `cors ${rules.length} rules`);
  send(c.res, 200);
}

const listOf = (h: string | string[] | undefined): string[] =>
  (Array.isArray(h) ? h.join(",") : (h ?? ""))
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);

/**
 * A preflight OPTIONS (unsigned, as browsers send it): 400 without Origin or Access-Control-Request-Method, 403 when the
 * bucket has no rule allowing it, else 200 with the rule's headers. `rules` are the bucket's, when it could be found.
 */
export function answerPreflight(req: IncomingMessage, res: ServerResponse, rules: CorsRule[] | undefined): void {
  const origin = req.headers.origin;
  const method = req.headers["access-control-request-method"];
  if (typeof origin !== "string" || typeof method !== "string") {
    throw new S3Error("BadRequest", 400, "Insufficient information. Origin request header needed.");
  }
  if (!rules) throw new S3Error("AccessForbidden", 403, "CORSResponse: CORS is not enabled for this bucket.");
  const asked = listOf(req.headers["access-control-request-headers"]);
  const rule = matchRule(rules, origin, method, asked);
  if (!rule) throw new S3Error("AccessForbidden", 403, "CORSResponse: This CORS request is not allowed.");
  send(res, 200, undefined, corsHeaders(rule, origin, asked));
}

/** On a signed request from another origin: the matching rule's headers, set before the answer is written. */
export async function applyCors(c: Ctx): Promise<void> {
  const origin = c.req.headers.origin;
  if (typeof origin !== "string" || !c.bucket || !c.session.getDirRecord) return;
  let rules: CorsRule[] | undefined;
  try {
    rules = await c.session.getDirRecord<CorsRule[]>(`/${c.bucket}`, "cors");
  } catch {
    // no bucket (or no right to list it): the request's own answer says so, without CORS headers
    return;
  }
  const rule = rules && matchRule(rules, origin, c.req.method ?? "GET");
  if (!rule) return;
  for (const [k, v] of Object.entries(corsHeaders(rule, origin))) c.res.setHeader(k, v);
}
