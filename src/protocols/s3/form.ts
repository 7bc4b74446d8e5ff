// multipart/form-data (RFC 7578) of a POST Object upload, read as it streams: the fields before the file part are
// collected (bounded: an unauthenticated client cannot make the server hold more than MAX_FIELDS bytes), the file part
// is handed over piece by piece with the request's backpressure, and what follows the file is drained unread (S3
// ignores fields after the file).
import type { IncomingMessage } from "node:http";
import { S3Error } from "./errors.ts";

/** The policy, signature and other fields before the file, with their part headers: S3 allows about 20 KB. */
export const MAX_FIELDS = 64 * 1024;

export interface FormFile {
  /** The file part's filename (what `${filename}` in the key field stands for). */
  filename: string;
  /** The file's content, without the part framing. */
  pieces: AsyncGenerator<Buffer>;
}

export interface Form {
  /** Field names lowercased (S3 form field names are case-insensitive); values as sent. */
  fields: Map<string, string>;
  file?: FormFile;
}

const malformed = (m: string) => new S3Error("MalformedPOSTRequest", 400, m);

/** The boundary of a multipart/form-data Content-Type, or undefined for any other type. */
export function formBoundary(contentType: string | undefined): string | undefined {
  if (!contentType || !/^multipart\/form-data\s*(;|$)/i.test(contentType)) return undefined;
  const m = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;]{1,70}))/i.exec(contentType);
  const b = m?.[1] ?? m?.[2];
  if (!b) throw malformed("The body of your POST request is not well-formed multipart/form-data.");
  return b;
}

export class FormReader {
  private readonly it: AsyncIterator<Buffer>;
  // the body as if it began with CRLF, so that every delimiter, the first too, is CRLF--boundary
  private buf: Buffer = Buffer.from("\r\n");
  private readonly delim: Buffer;
  private ended = false;
  private draining = false;

  constructor(req: IncomingMessage, boundary: string) {
    this.it = req[Symbol.asyncIterator]();
    this.delim = Buffer.from(`\r\n--${boundary}`);
  }

  private async more(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.it.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    this.buf = this.buf.length === 0 ? r.value : Buffer.concat([this.buf, r.value]);
    return true;
  }

  /** Waits until `pattern` is in the buffer (within `limit` bytes); its index. */
  private async find(pattern: Buffer, limit: number): Promise<number> {
    for (;;) {
      const at = this.buf.indexOf(pattern);
      if (at >= 0 && at <= limit) return at;
      if (this.buf.length > limit + pattern.length) throw malformed("Your POST request fields exceed the limit.");
      if (!(await this.more()))
        throw malformed("The body of your POST request is not well-formed multipart/form-data.");
    }
  }

  /** The fields up to the file part, and the file (its pieces stream from the request). */
  async read(): Promise<Form> {
    const fields = new Map<string, string>();
    let budget = MAX_FIELDS;
    const take = (n: number) => {
      budget -= n;
      if (budget < 0) throw malformed("Your POST request fields exceed the limit.");
      this.buf = this.buf.subarray(n);
    };
    // the preamble, then the first delimiter
    take((await this.find(this.delim, budget)) + this.delim.length);
    for (;;) {
      while (this.buf.length < 2) {
        if (!(await this.more()))
          throw malformed("The body of your POST request is not well-formed multipart/form-data.");
      }
      if (this.buf[0] === 0x2d && this.buf[1] === 0x2d) {
        this.drain();
        return { fields };
      }
      const headEnd = await this.find(Buffer.from("\r\n\r\n"), budget);
      const head = this.buf.subarray(0, headEnd).toString("utf8");
      take(headEnd + 4);
      const disposition = /^content-disposition:\s*form-data(.*)$/im.exec(head)?.[1] ?? "";
      const name = param(disposition, "name")?.toLowerCase();
      if (name === undefined) throw malformed("A form part has no name.");
      if (name === "file") {
        return { fields, file: { filename: param(disposition, "filename") ?? "", pieces: this.filePieces() } };
      }
      const end = await this.find(this.delim, budget);
      if (fields.has(name)) throw new S3Error("InvalidArgument", 400, `The form field ${name} is given twice.`);
      fields.set(name, this.buf.subarray(0, end).toString("utf8"));
      take(end + this.delim.length);
    }
  }

  private async *filePieces(): AsyncGenerator<Buffer> {
    const keep = this.delim.length - 1;
    for (;;) {
      const at = this.buf.indexOf(this.delim);
      if (at >= 0) {
        if (at > 0) yield this.buf.subarray(0, at);
        this.buf = Buffer.alloc(0);
        this.drain();
        return;
      }
      if (this.buf.length > keep) {
        const piece = this.buf.subarray(0, this.buf.length - keep);
        this.buf = this.buf.subarray(this.buf.length - keep);
        yield piece;
      }
      if (!(await this.more())) throw malformed("The body of your POST request ends inside the file.");
    }
  }

  /** Reads what is left of the request and drops it (fields after the file; the rest of a refused upload). */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    this.buf = Buffer.alloc(0);
    void (async () => {
      while (!this.ended) {
        const r = await this.it.next();
        if (r.done) this.ended = true;
      }
    })().catch(() => undefined);
  }
}

/** A parameter of a Content-Disposition value: name="x" (quoted, with \" escapes) or name=x. */
function param(disposition: string, key: string): string | undefined {
  const re = new RegExp(`;\\s*${key}=(?:"((?:[^"\\\\]|\\\\.)*)"|([^;\\s]*))`, "i");
  const m = re.exec(disposition);
  if (!m) return undefined;
  return m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2];
}
