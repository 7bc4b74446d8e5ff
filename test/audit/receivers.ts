// Real syslog receivers for the SIEM tests: rsyslogd (imtcp plain, or TLS with the gtls or ossl driver) and syslog-ng
// (from the .deb that .ci/run extracts, since syslog-ng-core conflicts with rsyslog), each writing exactly what it
// received (`%rawmsg%` / `$RAWMSG`) one message per line to a file; and a throwaway CA made with the openssl CLI.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { ROOT } from "../helpers/atrest.ts";

const execFileP = promisify(execFile);

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface TestCa {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await execFileP("openssl", args, { cwd });
}

/** A CA and a server certificate for 127.0.0.1 / localhost signed by it (openssl CLI). */
export async function makeCa(dir: string, name = "ca"): Promise<TestCa> {
  await mkdir(dir, { recursive: true });
  const ca = join(dir, `${name}.pem`);
  const caKey = join(dir, `${name}.key`);
  const serverKey = join(dir, `${name}-server.key`);
  const csr = join(dir, `${name}-server.csr`);
  const serverCert = join(dir, `${name}-server.pem`);
  const ext = join(dir, `${name}-ext.cnf`);
  await openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      caKey,
      "-out",
      ca,
      "-days",
      "2",
      "-subj",
      `/CN=atrest test ${name}`,
    ],
    dir,
  );
  await openssl(
    ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", serverKey, "-out", csr, "-subj", "/CN=localhost"],
    dir,
  );
  await writeFile(ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n");
  await openssl(
    [
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      ca,
      "-CAkey",
      caKey,
      "-CAcreateserial",
      "-out",
      serverCert,
      "-days",
      "2",
      "-extfile",
      ext,
    ],
    dir,
  );
  return { dir, ca, serverCert, serverKey };
}

export interface Receiver {
  port: number;
  out: string;
  /** Messages received so far (one per line). */
  lines(): Promise<string[]>;
  /** Waits until at least n messages arrived (or throws after timeoutMs with what did). */
  waitFor(n: number, timeoutMs?: number): Promise<string[]>;
  stop(): Promise<void>;
  start(): Promise<void>;
}

function makeReceiver(out: string, port: number, launch: () => Promise<ChildProcess>): Receiver {
  let proc: ChildProcess | undefined;
  const lines = async () => {
    const text = await readFile(out, "utf8").catch(() => "");
    return text.split("\n").filter((l) => l.length > 0);
  };
  const r: Receiver = {
    port,
    out,
    lines,
    async waitFor(n, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const got = await lines();
        if (got.length >= n) return got;
        if (Date.now() > deadline) throw new Error(`expected ${n} messages in ${out}, got ${got.length}`);
        await new Promise((res) => setTimeout(res, 100));
      }
    },
    async stop() {
      const p = proc;
      proc = undefined;
      if (!p || p.exitCode !== null) return;
      const exited = new Promise((res) => p.once("exit", res));
      p.kill("SIGTERM");
      const timer = setTimeout(() => p.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
    async start() {
      proc = await launch();
      await waitListening(port, proc);
    },
  };
  return r;
}

async function waitListening(port: number, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  const { connect } = await import("node:net");
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`receiver exited with ${proc.exitCode}`);
    const ok = await new Promise<boolean>((res) => {
      const s = connect({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        res(true);
      });
      s.once("error", () => res(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`receiver not listening on ${port}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

function spawnLogged(cmd: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
  const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: env ?? process.env });
  let err = "";
  p.stdout?.on("data", (d) => {
    err += d;
  });
  p.stderr?.on("data", (d) => {
    err += d;
  });
  p.once("exit", (code) => {
    if (code && code !== 0 && code !== 143) process.stderr.write(`${cmd} exited ${code}: ${err}\n`);
  });
  return p;
}

export type RsyslogTls = { driver: "gtls" | "ossl"; ca: TestCa };

/**
 * rsyslogd in the foreground with its own work dir: imtcp on a free port (TLS with `tls`), also imudp on the same
 * port number with `udp`, raw messages to a file.
 */
export async function startRsyslog(
  dir: string,
  tls?: RsyslogTls,
  o: { port?: number; udp?: boolean } = {},
): Promise<Receiver> {
  await mkdir(join(dir, "work"), { recursive: true });
  const port = o.port ?? (await freePort());
  const out = join(dir, "received.log");
  const conf = join(dir, "rsyslog.conf");
  const global = tls
    ? `global(workDirectory="${dir}/work" maxMessageSize="64k" parser.escapeControlCharactersOnReceive="off" defaultNetstreamDriverCAFile="${tls.ca.ca}" ` +
      `defaultNetstreamDriverCertFile="${tls.ca.serverCert}" defaultNetstreamDriverKeyFile="${tls.ca.serverKey}")`
    : `global(workDirectory="${dir}/work" maxMessageSize="64k" parser.escapeControlCharactersOnReceive="off")`;
  const mod = tls
    ? `module(load="imtcp" maxSessions="200" streamDriver.name="${tls.driver}" streamDriver.mode="1" streamDriver.authMode="anon")`
    : `module(load="imtcp" maxSessions="200")`;
  await writeFile(
    conf,
    [
      global,
      mod,
      `template(name="raw" type="string" string="%rawmsg%\\n")`,
      `ruleset(name="siem" queue.type="Direct") { action(type="omfile" file="${out}" template="raw") }`,
      `input(type="imtcp" port="${port}" address="127.0.0.1" ruleset="siem")`,
      ...(o.udp
        ? ['module(load="imudp")', `input(type="imudp" port="${port}" address="127.0.0.1" ruleset="siem")`]
        : []),
      "",
    ].join("\n"),
  );
  const r = makeReceiver(out, port, async () =>
    spawnLogged("rsyslogd", ["-n", "-f", conf, "-i", join(dir, "rsyslogd.pid")]),
  );
  await r.start();
  return r;
}

/** Where .ci/run extracts syslog-ng-core (or the machine's experiment copy). */
export function syslogNgRoot(): string | undefined {
  for (const root of [join(ROOT, ".cache", "syslog-ng", "root"), "/tmp/sng/root"]) {
    if (existsSync(join(root, "usr", "sbin", "syslog-ng"))) return root;
  }
  return undefined;
}

/** syslog-ng in the foreground: a syslog() source (RFC 5424 + octet counting) over TCP or TLS, raw messages to a file. */
export async function startSyslogNg(dir: string, tls?: TestCa): Promise<Receiver> {
  const root = syslogNgRoot();
  if (!root) throw new Error("syslog-ng is not extracted (run .ci/run, which fetches syslog-ng-core)");
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const out = join(dir, "received.log");
  const conf = join(dir, "syslog-ng.conf");
  const transport = tls
    ? `transport("tls") tls(key-file("${tls.serverKey}") cert-file("${tls.serverCert}") peer-verify(optional-untrusted))`
    : `transport("tcp")`;
  await writeFile(
    conf,
    [
      "@version: 3.38",
      "options { keep-hostname(yes); stats-freq(0); };",
      `source s_siem { syslog(ip("127.0.0.1") port(${port}) ${transport} flags(store-raw-message) log-msg-size(65536)); };`,
      `destination d_file { file("${out}" template("$RAWMSG\\n") flush-lines(1)); };`,
      "log { source(s_siem); destination(d_file); };",
      "",
    ].join("\n"),
  );
  const lib = `${root}/usr/lib/x86_64-linux-gnu:${root}/usr/lib/syslog-ng`;
  const env = { ...process.env, LD_LIBRARY_PATH: lib };
  const r = makeReceiver(out, port, async () =>
    spawnLogged(
      `${root}/usr/sbin/syslog-ng`,
      [
        "-F",
        `--module-path=${root}/usr/lib/syslog-ng/3.38`,
        "-f",
        conf,
        "-p",
        join(dir, "syslog-ng.pid"),
        "-c",
        join(dir, "syslog-ng.ctl"),
        "-R",
        join(dir, "syslog-ng.persist"),
        "--no-caps",
      ],
      env,
    ),
  );
  await r.start();
  return r;
}

/** Strips the RFC 5424 header (`<PRI>1 TS HOST APP PROCID MSGID SD `) and returns [header fields, rest]. */
export function splitSyslog(line: string): { pri: number; msgid: string; sd: string; msg: string } {
  const m = /^<(\d+)>1 \S+ \S+ \S+ \S+ (\S+) (-|\[.*?[^\\]\](?:\[.*?[^\\]\])*) ?(.*)$/.exec(line);
  if (!m) throw new Error(`not an RFC 5424 message: ${line}`);
  return { pri: Number(m[1]), msgid: m[2] as string, sd: m[3] as string, msg: m[4] as string };
}
