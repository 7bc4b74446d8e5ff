// S3-compatible endpoint (issue 13) over node:http / node:https: path-style requests (http://host:port/bucket/key)
// and virtual-hosted-style ones (http://bucket.<domain>:port/key, for the configured base domains).
// Buckets are the top-level folders of the user's tree (their home is '/'); an object key a/b/c is the file a/b/c in
// that folder. Every request is signed (SigV4, ./sigv4.ts) and logged in through the service's LoginService (defender,
// login audit); the file operations go through the user's VfsSession, which checks permissions and quotas and
// audits them with protocol s3. Errors become S3 XML once (./errors.ts).

import { randomUUID } from "node:crypto";
import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttps } from "node:https";
import type { AddressInfo } from "node:net";
import { zero } from "../../crypto/bytes.ts";
import { AtrestError } from "../../errors.ts";
import type { Logger } from "../../logger.ts";
import type { LoginService } from "../../service/login.ts";
import { ANONYMOUS } from "../../service/login.ts";
import type { S3Buckets } from "../../service/s3-buckets.ts";
import type { VfsSession } from "../../vfs/types.ts";
import { placeBucket } from "./access.ts";
import { admit } from "./acl.ts";
import { expectContinue, sendContinue } from "./body.ts";
import { BUCKET_NAME } from "./buckets.ts";
import { type Ctx, type CustomerKey, hasControl, sendError } from "./context.ts";
import { answerPreflight, applyCors, type CorsRule } from "./cors.ts";
import { dispatch } from "./dispatch.ts";
import { accessDenied, noSuchBucket, S3Error } from "./errors.ts";
import { type Form, FormReader, formBoundary } from "./form.ts";
import { fieldRequest, isPostObject, postCredential, postObject } from "./post-object.ts";
import { canonicalRequest, type ParsedAuth, parseAuth, queryPairs, UNSIGNED, verifier } from "./sigv4.ts";
import { COPY_SOURCE_SSE_C, customerKeyOf } from "./sse.ts";

export interface S3ServerOptions {
  login: LoginService;
  host: string;
  /** 0 = any free port. */
  port: number;
  logger: Logger;
  /** PEM certificate and key for HTTPS; absent = plain HTTP (loopback tests: --s3-tls off). */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Clock (tests). */
  now?: () => number;
  /** The region this endpoint is (GetBucketLocation, CreateBucket's LocationConstraint); default us-east-1. */
  region?: string;
  /**
   * Base domains of virtual-hosted-style requests: a Host `photos.s3.example.com` with domain `s3.example.com`
   * names bucket `photos`; a Host that is a domain itself (or anything else) is path-style. Default none.
   */
  domains?: string[];
  /**
   * The CORS rules of `bucket` for an unsigned preflight OPTIONS: the bucket's owner in the global namespace (or, for
   * a name not registered, the owner of the access key in a presigned URL's X-Amz-Credential, never checked: a
   * preflight is not signed); undefined when there is none.
   */
  corsRules?: (bucket: string, accessKeyId: string | undefined) => Promise<CorsRule[] | undefined>;
  /** The global bucket namespace (absent: every user's buckets are only their own folders, as before it). */
  buckets?: S3Buckets;
  /** Public ACLs (grants to AllUsers / AuthenticatedUsers) may be set and are honoured; default blocked. */
  publicAcls?: boolean;
}

/** The bucket a virtual-hosted-style Host names (bucket.<domain>[:port]), or undefined for a path-style request. */
export function virtualBucket(host: string | undefined, domains: readonly string[]): string | undefined {
  if (!host || domains.length === 0) return undefined;
  const name = host.replace(/:\d+$/, "").replace(/\.$/, "").toLowerCase();
  if (domains.includes(name)) return undefined;
  const d = domains.find((dom) => name.endsWith(`.${dom}`));
  return d ? name.slice(0, -(d.length + 1)) : undefined;
}

export interface S3Server {
  port: number;
  close(): Promise<void>;
}

export async function startS3Server(options: S3ServerOptions): Promise<S3Server> {
  const { login, logger } = options;
  const now = options.now ?? Date.now;
  const region = options.region ?? "us-east-1";
  const domains = (options.domains ?? []).map((d) => d.toLowerCase().replace(/^\.+|\.+$/g, "")).filter(Boolean);
  const sockets = new Set<import("node:net").Socket>();

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const requestId = randomUUID().replace(/-/g, "").slice(0, 16).toUpperCase();
    res.setHeader("x-amz-request-id", requestId);
    res.setHeader("server", "atrest");
    const url = req.url ?? "/";
    const qAt = url.indexOf("?");
    const rawPath = qAt < 0 ? url : url.slice(0, qAt);
    let resource = rawPath;
    let sessionId: string | undefined;
    let session: VfsSession | undefined;
    let signingKey: Buffer | undefined;
    let customerKey: CustomerKey | undefined;
    let copySourceKey: CustomerKey | undefined;
    let formReader: FormReader | undefined;
    const more = new Map<string, Promise<VfsSession>>();
    try {
      const pairs = queryPairs(qAt < 0 ? "" : url.slice(qAt + 1));
      const segments = rawPath.split("/");
      const decode = (s: string) => {
        try {
          return decodeURIComponent(s);
        } catch {
          throw new S3Error("InvalidURI", 400, "Couldn't parse the specified URI.");
        }
      };
      const hostBucket = virtualBucket(req.headers.host, domains);
      const bucket = hostBucket ?? decode(segments[1] ?? "");
      const key = segments
        .slice(hostBucket === undefined ? 2 : 1)
        .map(decode)
        .join("/");
      resource = key ? `/${bucket}/${key}` : `/${bucket}`;
      if (req.method === "OPTIONS") {
        // a browser's preflight: unsigned, answered from the bucket's CORS rules alone
        const credential = pairs.find(([k]) => k === "X-Amz-Credential")?.[1];
        const rules =
          BUCKET_NAME.test(bucket) && options.corsRules
            ? await options.corsRules(bucket, credential?.split("/")[0])
            : undefined;
        answerPreflight(req, res, rules);
        return;
      }
      // POST Object: the credential and policy are fields of the form, read (bounded) before the login
      const boundary = isPostObject(req, bucket, key, pairs) ? formBoundary(req.headers["content-type"]) : undefined;
      let form: Form | undefined;
      if (boundary !== undefined) {
        // the form carries the credential: its body is needed before anything can be decided
        sendContinue(req);
        formReader = new FormReader(req, boundary);
        form = await formReader.read();
      }
      // unsigned: no Authorization header, no presigned query, no signed form (served as `anonymous`, docs/s3.md)
      const anonymous = form
        ? !["x-amz-credential", "x-amz-signature", "x-amz-algorithm", "awsaccesskeyid"].some((f) => form.fields.has(f))
        : req.headers.authorization === undefined && !pairs.some(([k]) => k === "X-Amz-Algorithm");
      sessionId = randomUUID();
      let auth: ParsedAuth;
      let requester: string;
      if (anonymous) {
        auth = UNSIGNED;
        requester = ANONYMOUS;
      } else {
        const post = form && postCredential(form, now());
        auth = post ? post.auth : parseAuth(req, pairs, now());
        const check = post ? post.verifier : verifier(auth, canonicalRequest(req, rawPath, pairs, auth));
        const result = await login.login({
          user: auth.accessKeyId,
          protocol: "s3",
          sessionId,
          sourceIp: req.socket.remoteAddress,
          credential: { method: post ? "s3-post-policy" : "s3-sigv4", verify: (secret) => check.verify(secret) },
        });
        signingKey = check.signingKey();
        if (result.outcome !== "success") {
          // unknown key, wrong signature and a ban look alike
          throw new S3Error(
            "SignatureDoesNotMatch",
            403,
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
          );
        }
        requester = result.user;
        // an admin ending the user's sessions (or disabling or removing them) cuts a request in flight, as SFTP's
        login.onEnd(sessionId, () => {
          req.destroy();
          res.destroy();
        });
      }
      if (key.length > 1024) throw new S3Error("KeyTooLongError", 400, "Your key is too long");
      // keys are file names: control characters (C0, DEL, C1) are refused, as Ceph RGW refuses them
      if (hasControl(key)) throw new S3Error("InvalidURI", 400, "Couldn't parse the specified URI.");
      const sid = sessionId;
      const own = anonymous ? undefined : await login.openSession(sid);
      session = own;
      const placed = await placeBucket({
        buckets: options.buckets,
        bucket,
        requester,
        own,
        open: (owner) =>
          anonymous ? login.openAnonymous(owner, sid, req.socket.remoteAddress) : login.openSessionAs(sid, owner),
      });
      if (placed.session !== own) {
        await own?.close().catch(() => undefined);
        session = placed.session;
      }
      // anonymous: no bucket by that name (or a CreateBucket, which needs a user)
      if (!session) throw bucket && !(req.method === "PUT" && !key) ? noSuchBucket() : accessDenied();
      const ctx: Ctx = {
        req,
        res,
        session,
        bucket,
        key,
        query: new Map(pairs),
        auth,
        signingKey,
        requestId,
        region,
        secure: !!options.tls,
        logger,
        requester,
        owner: placed.owner,
        buckets: options.buckets,
        publicAcls: options.publicAcls === true,
        openAs: (owner) => {
          let s = more.get(owner);
          if (!s) {
            s =
              owner === requester && !anonymous
                ? login.openSession(sid)
                : anonymous
                  ? login.openAnonymous(owner, sid, req.socket.remoteAddress)
                  : login.openSessionAs(sid, owner);
            more.set(owner, s);
          }
          return s;
        },
      };
      await applyCors(ctx);
      // before the SSE-C headers are parsed: a policy may refuse a request by them (a wrong algorithm included)
      await admit(ctx, !!form);
      customerKey = customerKeyOf(form ? fieldRequest(form, req) : req, !!options.tls);
      copySourceKey = form ? undefined : customerKeyOf(req, !!options.tls, COPY_SOURCE_SSE_C);
      ctx.customerKey = customerKey;
      ctx.copySourceKey = copySourceKey;
      if (form) await postObject(ctx, form, now());
      else await dispatch(ctx);
    } catch (err) {
      if (err instanceof AtrestError && err.code === "NOT_FOUND" && resource.split("/").length <= 2) {
        sendError(res, noSuchBucket(), resource, requestId, logger);
      } else sendError(res, err, resource, requestId, logger);
      // drain what the client still sends, so it reads the answer instead of a reset
      if (formReader) formReader.drain();
      else if (!req.complete) req.resume();
    } finally {
      if (signingKey) zero(signingKey);
      if (customerKey) zero(customerKey.key);
      if (copySourceKey) zero(copySourceKey.key);
      await session?.close().catch(() => undefined);
      for (const s of more.values()) await s.then((x) => x.close()).catch(() => undefined);
      if (sessionId) login.logout(sessionId);
    }
  };

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    void handle(req, res).catch((err) => {
      logger.error({ err }, "s3: request failed");
      res.destroy();
    });
  };
  const server: Server = options.tls
    ? createHttps({ cert: options.tls.cert, key: options.tls.key }, listener)
    : createHttp(listener);
  // an Expect other than 100-continue (even an empty one) is served like any request, not refused with 417
  server.on("checkExpectation", listener);
  // 100-continue is sent when the operation reads the body (./body.ts), so a refusal comes first
  server.on("checkContinue", (req: IncomingMessage, res: ServerResponse) => {
    expectContinue(req, res);
    listener(req, res);
  });
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 60_000;
  server.on("connection", (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => {
          for (const s of sockets) s.destroy();
        }, 5000).unref();
      });
    },
  };
}
