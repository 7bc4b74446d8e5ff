// Fuzz targets (issue 11 "Suites to add"): parsers that take bytes from outside — the SFTP packet reader, the container
// header and segment parser, the audit log reader and verifier, the KMS request decoder — driven by fast-check with
// random and mutated-valid inputs. Each property states what must hold for every input: a typed refusal
// (BadMessage, IntegrityError, INVALID_INPUT) or a correct result, never another exception, never a wrong value.
// test/fuzz/fuzz.test.ts runs them briefly in `npm test`; `npm run fuzz` runs 1,000,000 inputs per target.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { verifyChain } from "../../src/audit/chain.ts";
import { AuditLog, readAuditLog } from "../../src/audit/log.ts";
import { AtrestError, IntegrityError } from "../../src/errors.ts";
import { createHeader, openContainer } from "../../src/format/container.ts";
import { FIXED_LENGTH, parseHeader } from "../../src/format/header.ts";
import { parse, schemas } from "../../src/kms/server/codec.ts";
import { ATTR, BadMessage, Reader, Writer } from "../../src/protocols/sftp/protocol/packets.ts";

export interface Target {
  name: string;
  /** Inputs per second are low (file I/O per input): fewer runs in the short pass and in `npm run fuzz`. */
  slow?: boolean;
  /** A fresh property (targets with fixtures build them once per call). */
  /** `property` is a fast-check property, sync or async (run it with `runTarget`). */
  property(): { property: unknown; cleanup?: () => void };
}

function expect(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}

/** Runs `fn`; an exception must be one of `allowed`. */
function refusesWith(fn: () => unknown, ...allowed: (new (...args: never[]) => Error)[]): unknown {
  try {
    return fn();
  } catch (err) {
    if (allowed.some((c) => err instanceof c)) return undefined;
    throw err;
  }
}

/** Header bytes the key commitment covers or is: everything before the wrapped DEK's length field. */
const COMMITTED_END = FIXED_LENGTH - 2;

const READ_OPS = ["u32", "u64", "bytes", "string", "attrs"] as const;

const sftpReader: Target = {
  name: "sftp-packet-reader",
  property: () => ({
    property: fc.property(
      fc.uint8Array({ maxLength: 512 }),
      fc.array(fc.constantFrom(...READ_OPS), { minLength: 1, maxLength: 12 }),
      (bytes, ops) => {
        const r = new Reader(Buffer.from(bytes));
        for (const op of ops) {
          const before = r.pos;
          const v = refusesWith(() => r[op](), BadMessage);
          if (v === undefined) break;
          expect(r.pos > before && r.pos <= r.buf.length, `${op} moved the cursor to ${r.pos}`);
          if (op === "u64") expect(Number.isSafeInteger(v as number), "u64 beyond 2^53");
        }
      },
    ),
  }),
};

const sftpAttrsRoundTrip: Target = {
  name: "sftp-attrs-roundtrip",
  property: () => ({
    property: fc.property(
      fc.record(
        {
          size: fc.maxSafeNat(),
          uid: fc.nat({ max: 0xffffffff }),
          gid: fc.nat({ max: 0xffffffff }),
          mode: fc.nat({ max: 0xffffffff }),
          atime: fc.nat({ max: 0xffffffff }),
          mtime: fc.nat({ max: 0xffffffff }),
        },
        { requiredKeys: [] },
      ),
      (a) => {
        const attrs = { ...a };
        if ((attrs.uid === undefined) !== (attrs.gid === undefined)) {
          delete attrs.uid;
          delete attrs.gid;
        }
        if ((attrs.atime === undefined) !== (attrs.mtime === undefined)) {
          delete attrs.atime;
          delete attrs.mtime;
        }
        const packet = new Writer(105).attrs(attrs).finish();
        const back = new Reader(packet, 5).attrs();
        expect(JSON.stringify(back) === JSON.stringify(attrs), `${JSON.stringify(attrs)} → ${JSON.stringify(back)}`);
        void ATTR;
      },
    ),
  }),
};

const containerHeader: Target = {
  name: "container-header",
  property: () => {
    const dek = randomBytes(32);
    const fileId = "f-7d0c3a6e";
    const { header } = createHeader({ dek, fileId, wrappedDek: randomBytes(120), segmentLog2: 12 });
    return {
      property: fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 1024 }).map((b) => Buffer.from(b)),
          // a valid header with a few bytes changed, or cut, or grown
          fc
            .tuple(
              fc.array(fc.tuple(fc.nat({ max: header.length - 1 }), fc.integer({ min: 1, max: 255 })), {
                minLength: 1,
                maxLength: 4,
              }),
              fc.integer({ min: -300, max: 300 }),
            )
            .map(([flips, resize]) => {
              const b = Buffer.from(header);
              for (const [at, x] of flips) b[at] = (b[at] as number) ^ x;
              return resize < 0
                ? b.subarray(0, Math.max(0, b.length + resize))
                : Buffer.concat([b, Buffer.alloc(resize)]);
            }),
        ),
        (bytes) => {
          const parsed = refusesWith(() => parseHeader(bytes), IntegrityError) as ReturnType<typeof parseHeader>;
          if (!parsed) return;
          // whatever parses is then held to its key commitment: a header whose committed fields (magic to commitment)
          // changed never opens. (The wrapped DEK after them is authenticated by the key manager's unwrap instead.)
          const opened = refusesWith(() => openContainer(parsed, dek, fileId), IntegrityError);
          if (opened) {
            expect(
              bytes.subarray(0, COMMITTED_END).equals(header.subarray(0, COMMITTED_END)),
              "a changed header opened",
            );
          }
        },
      ),
    };
  },
};

const containerSegment: Target = {
  name: "container-segment",
  property: () => {
    const dek = randomBytes(32);
    const { header, keys } = createHeader({ dek, fileId: "f-1", wrappedDek: randomBytes(80), segmentLog2: 10 });
    const plain = randomBytes(700);
    const sealed = keys.seal(0, plain, true);
    const reader = openContainer(parseHeader(header), dek, "f-1");
    return {
      property: fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 1200 }).map((b) => Buffer.from(b)),
          fc
            .array(fc.tuple(fc.nat({ max: sealed.length - 1 }), fc.integer({ min: 1, max: 255 })), {
              minLength: 1,
              maxLength: 3,
            })
            .map((flips) => {
              const b = Buffer.from(sealed);
              for (const [at, x] of flips) b[at] = (b[at] as number) ^ x;
              return b;
            }),
        ),
        fc.nat({ max: 3 }),
        fc.boolean(),
        (bytes, index, last) => {
          const out = refusesWith(() => reader.open(index, bytes, last), IntegrityError, AtrestError) as Buffer;
          if (out) expect(index === 0 && last && bytes.equals(sealed) && out.equals(plain), "a changed segment opened");
        },
      ),
    };
  },
};

const auditReader: Target = {
  name: "audit-log-reader",
  slow: true,
  property: () => {
    const dir = mkdtempSync(join(tmpdir(), "atrest-fuzz-audit-"));
    const key = randomBytes(32);
    const good = join(dir, "good.log");
    const log = new AuditLog(good, Buffer.from(key), { checkpointEvery: 3 });
    for (let i = 0; i < 7; i++) log.record({ action: "upload", outcome: "success", user: "alice", path: `/f${i}` });
    void log.close();
    const original = require_(good);
    const path = join(dir, "fuzzed.log");
    let written: string[] | undefined;
    return {
      cleanup: () => rmSync(dir, { recursive: true, force: true }),
      property: fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)),
          fc
            .array(fc.tuple(fc.nat({ max: original.length - 1 }), fc.integer({ min: 1, max: 255 })), {
              minLength: 1,
              maxLength: 3,
            })
            .map((flips) => {
              const b = Buffer.from(original);
              for (const [at, x] of flips) b[at] = (b[at] as number) ^ x;
              return b;
            }),
        ),
        async (bytes) => {
          written ??= (await readAuditLog(good, key)).map((r) => JSON.stringify(r));
          writeFileSync(path, bytes);
          // the verifier never throws on content: it reports
          const v = verifyChain(path);
          const records = (await readAuditLog(path, key)).map((r) => JSON.stringify(r));
          if (bytes.equals(original)) expect(!v.error && records.length === 7, "the intact log verifies");
          else if (!v.error) {
            // the chain holds: what decrypts is the log as written, or a part of it cut at a line (an unsigned tail,
            // which verify reports with exit 3; only an anchor or the high-water mark tells a cut at a checkpoint)
            expect(
              records.every((r, i) => r === written?.[i]),
              `a changed log verified: ${records.join(" ")}`,
            );
          }
        },
      ),
    };
  },
};

const kmsDecoder: Target = {
  name: "kms-request-decoder",
  property: () => ({
    property: fc.property(
      fc.oneof(
        fc.jsonValue(),
        fc.record({
          context: fc.dictionary(
            fc.oneof(fc.string(), fc.constantFrom("__proto__", "constructor", "toString")),
            fc.string(),
            {
              maxKeys: 8,
            },
          ),
          version: fc.oneof(fc.integer(), fc.double(), fc.constant(undefined)),
          plaintext: fc.oneof(fc.base64String({ maxLength: 120 }), fc.string()),
          wrapped: fc.oneof(fc.base64String({ maxLength: 800 }), fc.string()),
        }),
      ),
      fc.constantFrom(...(Object.keys(schemas) as (keyof typeof schemas)[])),
      (body, which) => {
        // what the server does with a body: JSON text → value → schema
        const value = JSON.parse(JSON.stringify(body ?? null));
        const out = refusesWith(() => parse(schemas[which] as never, value), AtrestError) as Record<string, unknown>;
        if (!out || typeof value !== "object" || value === null) return;
        // an accepted context is exactly the one sent: no key dropped or changed (e.g. "__proto__")
        const sent = (value as { context?: Record<string, string> }).context;
        if (sent && "context" in out) {
          const got = out.context as Record<string, string>;
          expect(
            JSON.stringify(Object.entries(got).sort()) === JSON.stringify(Object.entries(sent).sort()),
            `context ${JSON.stringify(sent)} decoded as ${JSON.stringify(got)}`,
          );
        }
      },
    ),
  }),
};

function require_(path: string): Buffer {
  const { readFileSync } = process.getBuiltinModule("node:fs") as typeof import("node:fs");
  return readFileSync(path);
}

export const TARGETS: Target[] = [
  sftpReader,
  sftpAttrsRoundTrip,
  containerHeader,
  containerSegment,
  auditReader,
  kmsDecoder,
];

/** Runs one target for `numRuns` inputs (throws fast-check's report with the shrunk counterexample on a failure). */
export async function runTarget(t: Target, numRuns: number, seed?: number): Promise<void> {
  const { property, cleanup } = t.property();
  try {
    await fc.assert(property as fc.IAsyncProperty<[unknown]>, { numRuns, ...(seed !== undefined ? { seed } : {}) });
  } finally {
    cleanup?.();
  }
}
