// The POST Object form reader (src/protocols/s3/form.ts) over bodies cut into pieces of every size: the delimiter split
// across pieces, file bytes that look like a delimiter, fields after the file ignored, truncated and oversized bodies.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { Readable } from "node:stream";
import { test } from "node:test";
import { FormReader, formBoundary, MAX_FIELDS } from "../../../src/protocols/s3/form.ts";

const B = "----atrestBoundary7MA4YWxkTrZu0gW";

function body(fields: [string, string][], file: Buffer, after = ""): Buffer {
  const parts = fields.map(([k, v]) => `--${B}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`);
  return Buffer.concat([
    Buffer.from(
      `preamble\r\n${parts.join("")}--${B}\r\nContent-Disposition: form-data; name="file"; filename="a \\"q\\".bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    ),
    file,
    Buffer.from(`\r\n--${B}\r\nContent-Disposition: form-data; name="late"\r\n\r\n${after}\r\n--${B}--\r\n`),
  ]);
}

function request(bytes: Buffer, piece: number): IncomingMessage {
  const pieces: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += piece) pieces.push(bytes.subarray(i, i + piece));
  return Readable.from(pieces) as unknown as IncomingMessage;
}

async function readAll(reader: FormReader) {
  const form = await reader.read();
  const chunks: Buffer[] = [];
  if (form.file) for await (const p of form.file.pieces) chunks.push(p);
  return { fields: form.fields, filename: form.file?.filename, file: Buffer.concat(chunks) };
}

test("fields and the file come out whole whatever the pieces the body arrives in", async () => {
  // a file holding near-delimiters: CRLF--, and the boundary without its CRLF
  const file = Buffer.concat([
    randomBytes(3000),
    Buffer.from(`\r\n--${B.slice(0, -1)}x`),
    Buffer.from(`--${B}`),
    randomBytes(70),
  ]);
  const bytes = body(
    [
      ["Key", "a/b c"],
      ["policy", "eyJ4IjoxfQ=="],
    ],
    file,
    "ignored",
  );
  for (const piece of [1, 2, 7, B.length + 3, 1000, 65536]) {
    const got = await readAll(new FormReader(request(bytes, piece), B));
    assert.equal(got.fields.get("key"), "a/b c", `piece ${piece}`);
    assert.equal(got.fields.get("policy"), "eyJ4IjoxfQ==");
    assert.equal(got.fields.has("late"), false, "fields after the file are not read");
    assert.equal(got.filename, 'a "q".bin');
    assert.ok(got.file.equals(file), `file bytes, piece ${piece}`);
  }
});

test("the boundary comes from the Content-Type; other types are not forms", () => {
  assert.equal(formBoundary(`multipart/form-data; boundary=${B}`), B);
  assert.equal(formBoundary('multipart/form-data; charset=utf-8; boundary="quoted b"'), "quoted b");
  assert.equal(formBoundary("application/xml"), undefined);
  assert.equal(formBoundary(undefined), undefined);
  assert.throws(() => formBoundary("multipart/form-data"), /MalformedPOST|not well-formed/);
});

test("a truncated body, a field given twice and fields over the limit are refused", async () => {
  const whole = body([["key", "k"]], randomBytes(5000));
  const cut = whole.subarray(0, whole.length - 200 - 60);
  await assert.rejects(readAll(new FormReader(request(cut, 512), B)), /ends inside the file/);
  await assert.rejects(
    readAll(
      new FormReader(
        request(
          body(
            [
              ["key", "a"],
              ["KEY", "b"],
            ],
            Buffer.from("x"),
          ),
          100,
        ),
        B,
      ),
    ),
    /given twice/,
  );
  const big = body([["policy", "p".repeat(MAX_FIELDS)]], Buffer.from("x"));
  await assert.rejects(readAll(new FormReader(request(big, 4096), B)), /exceed the limit/);
  // no file part at all: the form ends after its fields
  const none = Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n--${B}--\r\n`);
  const got = await new FormReader(request(none, 3), B).read();
  assert.equal(got.fields.get("key"), "k");
  assert.equal(got.file, undefined);
});
