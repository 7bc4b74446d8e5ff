// The API client of the web app: same-origin fetch with the session cookie (sent by the browser) and the CSRF token
// on every state-changing request; errors arrive as RFC 9457 problems and are thrown as ApiError.

export interface Session {
  user: string;
  role: "admin" | "custodian" | "auditor" | "user";
  csrfToken?: string;
  via: "session" | "token";
  expiresAt?: string;
  idleTimeoutSeconds?: number;
  /** TOTP is required of this user and not set up yet: only enrolment works until a code is confirmed. */
  totpEnrolmentRequired?: boolean;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, detail: string) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

let csrf: string | undefined;
let onUnauthorized: () => void = () => {};

export function setCsrf(token: string | undefined): void {
  csrf = token;
}
export function csrfToken(): string | undefined {
  return csrf;
}
/** Called when a request answers 401 (the session ended): the app shows the login form again. */
export function setOnUnauthorized(f: () => void): void {
  onUnauthorized = f;
}

export function headers(extra: Record<string, string> = {}): Record<string, string> {
  return csrf ? { "x-csrf-token": csrf, ...extra } : extra;
}

async function fail(r: Response): Promise<never> {
  let code = `HTTP_${r.status}`;
  let detail = r.statusText || `HTTP ${r.status}`;
  try {
    const p = (await r.json()) as { code?: string; detail?: string; title?: string };
    code = p.code ?? code;
    detail = p.detail ?? p.title ?? detail;
  } catch {}
  throw new ApiError(r.status, code, detail);
}

let signer: ((statement: string) => Promise<string>) | undefined;

/**
 * Signs a key-manager call for the logged-in custodian (custody-key.ts): a custodian route answers 428 with the
 * statement when the key manager is remote, and the request is sent again with the signed envelope.
 */
export function setSigner(f: ((statement: string) => Promise<string>) | undefined): void {
  signer = f;
}

export async function api<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
  quiet401 = false,
  extra: Record<string, string> = {},
): Promise<T> {
  const init: RequestInit = { method, credentials: "same-origin", headers: headers(extra) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = headers({ "content-type": "application/json", ...extra });
  }
  const r = await fetch(path, init);
  if (r.status === 428 && signer && !("atrest-kms-signed" in extra)) {
    const p = (await r
      .clone()
      .json()
      .catch(() => ({}))) as { code?: string; statement?: unknown };
    if (p.code === "KMS_SIGNATURE_REQUIRED" && typeof p.statement === "string") {
      const signed = await signer(p.statement);
      return api<T>(method, path, body, quiet401, { ...extra, "atrest-kms-signed": signed });
    }
  }
  if (r.status === 401 && !quiet401) onUnauthorized();
  if (!r.ok) await fail(r);
  if (r.status === 204) return undefined as T;
  const type = r.headers.get("content-type") ?? "";
  return (type.includes("json") ? await r.json() : await r.text()) as T;
}

export const get = <T>(path: string) => api<T>("GET", path);
export const post = <T>(path: string, body?: unknown) => api<T>("POST", path, body ?? {});
export const put = <T>(path: string, body?: unknown) => api<T>("PUT", path, body ?? {});
export const del = <T>(path: string, body?: unknown) => api<T>("DELETE", path, body);
export const patch = <T>(path: string, body: unknown) => api<T>("PATCH", path, body);

/** Query string of the defined values. */
export function qs(o: Record<string, string | number | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v !== undefined && v !== "") p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
}

/** /api/v1/files/<path> with each segment encoded. */
export function fileUrl(path: string): string {
  return `/api/v1/files${path.split("/").map(encodeURIComponent).join("/")}`;
}

export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
