// Request validation (zod) and JSON shapes of the KMS API. Bytes travel as standard base64; encryption contexts as
// flat objects of strings. Limits keep one request's work bounded.

import * as z from "zod";
import { AtrestError } from "../../errors.ts";
import type { KmsItemError } from "../api/errors.ts";
import type { DataKey, EncryptionContext } from "../api/types.ts";

export const MAX_BATCH = 1000;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export const bytes = (what: string, maxBytes: number) =>
  z
    .string({ error: `${what} must be a base64 string` })
    .max(Math.ceil(maxBytes / 3) * 4, { error: `${what} is too long` })
    .refine((s) => s.length % 4 === 0 && BASE64.test(s), { error: `${what} must be standard base64 (with padding)` })
    .transform((s, ctx) => {
      const b = Buffer.from(s, "base64");
      if (b.length > maxBytes) {
        b.fill(0);
        ctx.issues.push({ code: "custom", message: `${what} is too long`, input: s });
      }
      return b;
    });

export const contextSchema = z
  .record(z.string().max(256), z.string({ error: "context values must be strings" }).max(4096), {
    error: "context must be an object of strings",
  })
  .refine((c) => Object.keys(c).length <= 64, { error: "context has more than 64 entries" })
  .default({});

const wrapped = bytes("wrapped", 512);
const plaintext = bytes("plaintext", 64);
const version = z.number().int().min(1).optional();

export const schemas = {
  generate: z.strictObject({ context: contextSchema, version }),
  generateBatch: z.strictObject({ contexts: z.array(contextSchema).min(1).max(MAX_BATCH) }),
  wrap: z.strictObject({ plaintext, context: contextSchema, version }),
  wrapBatch: z.strictObject({
    items: z
      .array(z.strictObject({ plaintext, context: contextSchema }))
      .min(1)
      .max(MAX_BATCH),
  }),
  unwrap: z.strictObject({ wrapped, context: contextSchema }),
  unwrapBatch: z.strictObject({
    items: z
      .array(z.strictObject({ wrapped, context: contextSchema }))
      .min(1)
      .max(MAX_BATCH),
  }),
  unseal: z.union([z.strictObject({ share: z.string().min(1).max(256) }), z.strictObject({ reset: z.literal(true) })]),
  empty: z.strictObject({}),
};

/** Parses `input` with `schema`; a failure is one INVALID_INPUT line naming the field. */
export function parse<T extends z.ZodType>(schema: T, input: unknown): z.output<T> {
  const r = schema.safeParse(input ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue?.path.length ? `${issue.path.join(".")}: ` : "";
  throw new AtrestError("INVALID_INPUT", `invalid request: ${where}${issue?.message ?? "malformed"}`);
}

/** Encodes and then zeroes the plaintext: the JSON string is the only copy left (V8 strings cannot be wiped). */
export function dataKeyJson(dk: DataKey): { plaintext: string; wrapped: string; keyRef: string } {
  const out = { plaintext: dk.plaintext.toString("base64"), wrapped: dk.wrapped.toString("base64"), keyRef: dk.keyRef };
  dk.plaintext.fill(0);
  return out;
}

export function plaintextJson(r: { plaintext: Buffer; keyRef: string }): { plaintext: string; keyRef: string } {
  const out = { plaintext: r.plaintext.toString("base64"), keyRef: r.keyRef };
  r.plaintext.fill(0);
  return out;
}

export function wrappedJson(r: { wrapped: Buffer; keyRef: string }): { wrapped: string; keyRef: string } {
  return { wrapped: r.wrapped.toString("base64"), keyRef: r.keyRef };
}

export type ItemResult<T> = T | KmsItemError;

export function mapItems<A, B>(items: readonly ItemResult<A>[], fn: (a: A) => B): ItemResult<B>[] {
  return items.map((it) => (it && typeof it === "object" && "error" in it ? it : fn(it as A)));
}

export type { EncryptionContext };
