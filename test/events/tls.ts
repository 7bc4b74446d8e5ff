// Throwaway TLS material for test peers, made by the real openssl CLI: a CA and a server certificate for localhost.
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface TestTls {
  ca: string;
  key: string;
  cert: string;
}

export async function makeTls(dir: string): Promise<TestTls> {
  const p = (f: string) => join(dir, f);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await run("openssl", [
    "req",
    "-x509",
    ...ec,
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.pem"),
    "-days",
    "2",
    "-subj",
    "/CN=atrest test CA",
  ]);
  await run("openssl", ["req", ...ec, "-keyout", p("srv.key"), "-out", p("srv.csr"), "-subj", "/CN=localhost"]);
  await writeFile(p("srv.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    p("srv.csr"),
    "-CA",
    p("ca.pem"),
    "-CAkey",
    p("ca.key"),
    "-CAcreateserial",
    "-out",
    p("srv.pem"),
    "-days",
    "2",
    "-extfile",
    p("srv.ext"),
  ]);
  return {
    ca: await readFile(p("ca.pem"), "utf8"),
    key: await readFile(p("srv.key"), "utf8"),
    cert: await readFile(p("srv.pem"), "utf8"),
  };
}
