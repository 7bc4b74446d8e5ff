// The key manager API has one error-code list (src/kms/api/errors.ts; the compiler keeps it equal to ErrorCode plus
// INTERNAL). These tests check that the service only sends codes on it and that the client maps every one back to
// the error the embedded key manager throws.
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { AtrestError, type ErrorCode, IntegrityError, KeyUnavailableError } from "../../src/errors.ts";
import { errorFromCode, KMS_ERROR_CODES, KMS_ERRORS, kmsErrorCode } from "../../src/kms/api/errors.ts";
import { HttpError, problemOf, SealedError } from "../../src/kms/server/problem.ts";

const SRC = new URL("../../src/", import.meta.url).pathname;

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name.endsWith(".ts")) out.push(join(e.parentPath, e.name));
  }
  return out;
}

describe("key manager error codes", () => {
  it("every code the key manager service names in its source is on the list", async () => {
    const seen = new Set<string>();
    for (const file of await sources(join(SRC, "kms"))) {
      const text = await readFile(file, "utf8");
      for (const m of text.matchAll(/new (?:AtrestError|HttpError)\(\s*(?:\d+,\s*"[^"]*",\s*)?"([A-Z_]+)"/g)) {
        seen.add(m[1] as string);
      }
      for (const m of text.matchAll(/\bcode: "([A-Z_]+)"/g)) seen.add(m[1] as string);
    }
    assert.ok(seen.has("INVALID_INPUT") && seen.has("INTERNAL"), "the scan finds codes");
    for (const code of seen)
      assert.ok((KMS_ERROR_CODES as readonly string[]).includes(code), `${code} not on the list`);
  });

  it("each code round-trips: service error → problem+json → the client's error, same code and class", () => {
    for (const code of KMS_ERROR_CODES) {
      if (code === "INTERNAL") continue;
      const p = problemOf(new AtrestError(code as ErrorCode, "why"));
      assert.equal(p.code, code);
      assert.equal(p.status, KMS_ERRORS[code].status);
      assert.equal(p.title, KMS_ERRORS[code].title);
      const back = errorFromCode(p.code, p.detail);
      assert.ok(back instanceof AtrestError);
      assert.equal(back.code, code);
      assert.equal(back.message, "why");
    }
    assert.ok(errorFromCode("INTEGRITY", "x") instanceof IntegrityError);
    assert.ok(errorFromCode("KEY_UNAVAILABLE", "x") instanceof KeyUnavailableError);
  });

  it("an unexpected error is INTERNAL, never echoed, and reads as key unavailable on the client", () => {
    const p = problemOf(new Error("secret detail"));
    assert.equal(p.code, "INTERNAL");
    assert.equal(p.status, 500);
    assert.doesNotMatch(p.detail, /secret/);
    assert.equal(kmsErrorCode(new Error("x")), "INTERNAL");
    assert.equal(kmsErrorCode(new IntegrityError()), "INTEGRITY");
    for (const code of ["INTERNAL", undefined, "NO_SUCH_CODE"]) {
      assert.ok(errorFromCode(code, "m") instanceof KeyUnavailableError, String(code));
    }
  });

  it("sealed and HTTP-level refusals carry codes from the list", () => {
    const sealed = problemOf(new SealedError(2));
    assert.equal(sealed.status, 503);
    assert.equal(errorFromCode(sealed.code, sealed.detail).code, "KEY_UNAVAILABLE");
    const http = problemOf(new HttpError(405, "method not allowed", "UNSUPPORTED", "GET only"));
    assert.equal(http.status, 405);
    assert.equal(errorFromCode(http.code, http.detail).code, "UNSUPPORTED");
  });
});
