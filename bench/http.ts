// HTTPS: GET and PUT of one large file with curl against atrest (encryption at rest: every PUT is sealed into the
// container format under a fresh data key, every GET opened) and against Debian's nginx serving the same bytes over
// TLS from a plain directory (static GET, dav PUT), started here on loopback with a self-signed certificate; same
// client (curl, HTTP/2 negotiated by ALPN with both), same run, alternating order. Peak RSS of both servers. Then
// listing requests/s of a 10,000-entry folder (paginated, 1,000 a page) with wrk.
import { randomFillSync } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { join } from "node:path";
import { serverRuntime } from "./lib/atrest.ts";
import { captureTail, freePort, run, spawnTracked, stop, waitForLine } from "./lib/proc.ts";
import { GiB, MiB, mbps, ratio, seconds, size } from "./lib/report.ts";
import { processTree, startRssSampler } from "./lib/rss.ts";
import type { BenchContext, BenchModule, BenchSection } from "./lib/types.ts";

const TARGET = 0.85;
const ENTRIES = 10_000;

async function makeFile(path: string, bytes: number): Promise<void> {
  const fh = await open(path, "w");
  const block = Buffer.allocUnsafe(8 * MiB);
  try {
    for (let left = bytes; left > 0; left -= block.length) {
      randomFillSync(block);
      await fh.write(block, 0, Math.min(left, block.length));
    }
  } finally {
    await fh.close();
  }
}

/** User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15, in clock ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** curl's time_total of one transfer (seconds); rejects on an HTTP error. */
async function curl(args: string[]): Promise<number> {
  const r = await run("curl", ["-sS", "--fail", "-o", "/dev/null", "-w", "%{time_total} %{http_version}", ...args], {
    timeoutMs: 20 * 60_000,
  });
  return Number(r.stdout.trim().split(" ")[0]);
}

function post(port: number, ca: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: "POST",
        ca,
        servername: "localhost",
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(data), ...headers },
      },
      (res) => {
        let b = "";
        res.on("data", (d: Buffer) => {
          b += d.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b }));
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

async function startNginx(dir: string, root: string): Promise<{ port: number; pid: number; stop(): Promise<void> }> {
  const port = await freePort();
  const key = join(dir, "nginx.key");
  const crt = join(dir, "nginx.crt");
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-keyout",
    key,
    "-out",
    crt,
  ]);
  const tmp = join(dir, "nginx-tmp");
  mkdirSync(tmp, { recursive: true });
  const conf = join(dir, "nginx.conf");
  // one worker: atrest is one Node process too. Run as root, the worker keeps root (not nobody): the bench's temp
  // directories are private (0700).
  await writeFile(
    conf,
    `daemon off;
${process.getuid?.() === 0 ? "user root;\n" : ""}worker_processes 1;
pid ${join(dir, "nginx.pid")};
error_log stderr warn;
load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path ${tmp}/body;
  proxy_temp_path ${tmp}/proxy;
  fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi;
  scgi_temp_path ${tmp}/scgi;
  server {
    listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${crt};
    ssl_certificate_key ${key};
    ssl_protocols TLSv1.3;
    root ${root};
    client_max_body_size 0;
    client_body_buffer_size 1m;
    location / {
      dav_methods PUT DELETE MKCOL;
      dav_ext_methods PROPFIND OPTIONS;
      create_full_put_path on;
    }
  }
}
`,
  );
  const child = spawnTracked("nginx", ["-c", conf, "-p", dir, "-e", "stderr"]);
  const tail = captureTail(child);
  // nginx prints nothing when it is up: wait for the port
  for (let i = 0; i < 100; i++) {
    const r = await run("curl", ["-sk", "-o", "/dev/null", "-w", "%{http_code}", `https://127.0.0.1:${port}/`], {
      check: false,
      timeoutMs: 5000,
    });
    if (r.stdout.trim() !== "000") break;
    if (child.exitCode !== null) throw new Error(`nginx exited: ${tail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { port, pid: child.pid as number, stop: () => stop(child) };
}

async function startAtrestHttps(ctx: BenchContext, dir: string) {
  const cli = join(ctx.root, "src", "cli", "main.ts");
  const data = join(dir, "data");
  // the server's process settings as bin/atrest.js applies them (V8 flags, MALLOC_ARENA_MAX)
  const { nodeFlags: runtimeFlags, env } = serverRuntime(ctx.root);
  // --profile: a CPU profile of each thread of the server (main, seal worker), written when it stops
  const profileDir = join(ctx.root, ".cache", "profiles", "http");
  if (ctx.profile) mkdirSync(profileDir, { recursive: true });
  const nodeFlags = ctx.profile ? [...runtimeFlags, "--cpu-prof", `--cpu-prof-dir=${profileDir}`] : runtimeFlags;
  const node = process.execPath;
  await run(node, [cli, "init", "--data", data], { env, timeoutMs: 60_000 });
  // the user and the 10,000-entry folder, made in-process before the server holds the data dir
  const { App } = await import("../src/app.ts");
  const app = await App.open(data);
  try {
    await app.addUser({ name: "bench", password: "bench-password-1", home: "/bench" });
    const s = await app.openSession("bench", { protocol: "cli", sessionId: "bench-setup" });
    await s.mkdir("/big");
    for (let i = 0; i < ENTRIES; i++) await s.mkdir(`/big/entry-${String(i).padStart(5, "0")}`);
    await s.close();
  } finally {
    await app.close();
  }
  const port = await freePort();
  const child = spawnTracked(
    node,
    [
      ...nodeFlags,
      cli,
      "server",
      "--data",
      data,
      "--host",
      "127.0.0.1",
      "--sftp-port",
      "0",
      "--s3-port",
      "0",
      "--http-port",
      String(port),
      "--log-level",
      "warn",
    ],
    { env },
  );
  // keep reading its output: a pipe nobody drains would stall the server's writes to it
  captureTail(child);
  await waitForLine(child, /atrest: https listening on 127\.0\.0\.1:(\d+)/, 60_000);
  const ca = await readFile(join(data, "tls", "server.crt"), "utf8");
  const login = await post(port, ca, "/api/v1/auth/login", { username: "bench", password: "bench-password-1" });
  if (login.status !== 200) throw new Error(`atrest login: ${login.status} ${login.body}`);
  const cookie = String((login.headers["set-cookie"] as string[])[0]).split(";")[0];
  const csrf = (JSON.parse(login.body) as { csrfToken: string }).csrfToken;
  const tok = await post(
    port,
    ca,
    "/api/v1/tokens",
    { name: "bench", scopes: ["files:read", "files:write"], expiresInDays: 1 },
    { cookie, "x-csrf-token": csrf },
  );
  if (tok.status !== 201) throw new Error(`atrest token: ${tok.status} ${tok.body}`);
  const token = (JSON.parse(tok.body) as { token: string }).token;
  return { port, pid: child.pid as number, ca: join(data, "tls", "server.crt"), token, stop: () => stop(child) };
}

export const http: BenchModule = {
  name: "http",
  title: "HTTPS GET/PUT: atrest vs nginx",
  method: [
    "**HTTPS**: one random file (1 GiB) with `curl` (HTTP/2 negotiated by ALPN, TLS 1.3 AES-GCM) to `/dev/null` (GET) " +
      "and from disk (`curl -T`, PUT; also once with `--http1.1`), against atrest (`--http-port`; API token; a PUT is sealed into a new container " +
      "version and fsynced before the answer, a GET is opened and authenticated as it streams) and Debian's nginx 1.22 " +
      "(one worker, `sendfile on`, static GET of the same bytes from a directory, PUT through `dav_methods PUT`, which " +
      "spools the body to a temp file and renames it), both started by the bench on loopback with their own self-signed " +
      "certificate. Best of 2, alternating order. Ratio = nginx s / atrest s (target ≥ 0.85×). Server CPU per GiB from " +
      "/proc/PID/stat (utime + stime) around each transfer: the atrest process, the nginx worker. The durable-write row " +
      "is `dd bs=1M conv=fdatasync` of the same file into the bench's temp directory, after nginx's turn. Peak RSS of each server " +
      "sampled every 100 ms during its transfers. Listing: `wrk -t1 -c4 -d10s --timeout 30s` on `GET /api/v1/fs/list?path=/big&limit=1000&order=name|store` " +
      "of a folder with 10,000 entries (the first page, and page 6 of the name order by its cursor; order=name reuses the folder's sorted names while the store's digest of its names is unchanged, order=store reads one page).",
    "`--profile` starts the atrest server with `node --cpu-prof` (every thread: main and seal worker); the profiles, written when it stops, go to `.cache/profiles/http/`.",
  ],
  async run(ctx: BenchContext): Promise<BenchSection> {
    const total = ctx.quick ? 64 * MiB : GiB;
    const src = join(ctx.tmp, "src.bin");
    await makeFile(src, total);
    const webroot = join(ctx.tmp, "www");
    mkdirSync(webroot, { recursive: true });
    await run("cp", [src, join(webroot, "get.bin")]);
    const nginx = await startNginx(ctx.tmp, webroot);
    const atrest = await startAtrestHttps(ctx, join(ctx.tmp, "atrest"));
    const ngx = `https://localhost:${nginx.port}`;
    const at = `https://localhost:${atrest.port}`;
    const auth = ["-H", `Authorization: Bearer ${atrest.token}`];
    // best wall time of each workload, and the server CPU (user + system, /proc) of that best run
    type Fig = { s: number; cpu: number };
    const workloads = ["get", "put", "put1"] as const;
    type W = (typeof workloads)[number];
    const none = (): Record<W, Fig> => ({
      get: { s: Infinity, cpu: 0 },
      put: { s: Infinity, cpu: 0 },
      put1: { s: Infinity, cpu: 0 },
    });
    const figs = { atrest: none(), nginx: none() };
    const timed = async (server: "atrest" | "nginx", w: W, pid: number, args: string[]) => {
      const c0 = cpuSeconds(pid);
      const t = await curl(args);
      const cpu = cpuSeconds(pid) - c0;
      if (t < figs[server][w].s) figs[server][w] = { s: t, cpu };
    };
    let atRss = 0;
    let ngxRss = 0;
    let durable = Infinity;
    try {
      // atrest's copy of the file to GET
      await curl([...auth, "--cacert", atrest.ca, "-T", src, `${at}/api/v1/files/get.bin`]);
      for (let n = 0; n < ctx.runs; n++) {
        const ngxFirst = n % 2 === 0;
        const steps: [string, () => Promise<void>][] = [
          [
            "nginx",
            async () => {
              const s = startRssSampler(nginx.pid, { tree: true });
              // the worker process does the transfers (the master only supervises)
              const worker = processTree(nginx.pid).find((p) => p !== nginx.pid) ?? nginx.pid;
              await timed("nginx", "put", worker, ["-k", "-T", src, `${ngx}/put-${n}.bin`]);
              await timed("nginx", "put1", worker, ["-k", "--http1.1", "-T", src, `${ngx}/put1-${n}.bin`]);
              await timed("nginx", "get", worker, ["-k", `${ngx}/get.bin`]);
              ngxRss = Math.max(ngxRss, s.stop().peakBytes);
              await rm(join(webroot, `put-${n}.bin`), { force: true });
              await rm(join(webroot, `put1-${n}.bin`), { force: true });
              // what the disk takes to make the same bytes durable (atrest fsyncs a PUT before answering; nginx's
              // dav PUT leaves them in the page cache)
              const dd = await run("dd", [`if=${src}`, `of=${join(ctx.tmp, "dd.bin")}`, "bs=1M", "conv=fdatasync"]);
              durable = Math.min(durable, dd.seconds);
              await rm(join(ctx.tmp, "dd.bin"), { force: true });
            },
          ],
          [
            "atrest",
            async () => {
              const s = startRssSampler(atrest.pid);
              const tls = [...auth, "--cacert", atrest.ca];
              await timed("atrest", "put", atrest.pid, [...tls, "-T", src, `${at}/api/v1/files/put-${n}.bin`]);
              await timed("atrest", "put1", atrest.pid, [
                ...tls,
                "--http1.1",
                "-T",
                src,
                `${at}/api/v1/files/put1-${n}.bin`,
              ]);
              await timed("atrest", "get", atrest.pid, [...tls, `${at}/api/v1/files/get.bin`]);
              atRss = Math.max(atRss, s.stop().peakBytes);
            },
          ],
        ];
        for (const [name, step] of ngxFirst ? steps : steps.reverse()) {
          await step();
          ctx.log(`  run ${n + 1} ${name} done`);
        }
      }
      const line = (w: W) =>
        `${w} atrest ${seconds(figs.atrest[w].s)} (${figs.atrest[w].cpu.toFixed(2)} CPU s) nginx ${seconds(figs.nginx[w].s)} (${figs.nginx[w].cpu.toFixed(2)} CPU s)`;
      ctx.log(`  ${workloads.map(line).join("; ")}; dd conv=fdatasync ${seconds(durable)}`);
      // listing of a 10,000-entry folder: sorted by name (the whole folder per page) and in store order (one page)
      const listing = async (order: "name" | "store", after?: string) => {
        // a later page of the name order: the cursor the server issues after `after` (files.ts encodeCursor)
        const cursor =
          after === undefined ? "" : `&cursor=${Buffer.from(JSON.stringify({ a: after })).toString("base64url")}`;
        const c0 = cpuSeconds(atrest.pid);
        const wrk = await run(
          "wrk",
          [
            "-t1",
            "-c4",
            "-d10s",
            "--timeout",
            "30s",
            "--latency",
            "-H",
            `Authorization: Bearer ${atrest.token}`,
            `${at}/api/v1/fs/list?path=/big&limit=1000&order=${order}${cursor}`,
          ],
          { timeoutMs: 60_000 },
        );
        const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(wrk.stdout)?.[1] ?? 0);
        const p99 = /99%\s+([\d.]+\w+)/.exec(wrk.stdout)?.[1] ?? "?";
        const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(wrk.stdout)?.[1] ?? "0";
        // server CPU per answered request: what a loaded machine does not distort the way it distorts req/s
        const requests = Number(/(\d+) requests in/.exec(wrk.stdout)?.[1] ?? 0);
        const cpuMs = requests > 0 ? ((cpuSeconds(atrest.pid) - c0) * 1000) / requests : 0;
        ctx.log(
          `  listing order=${order}${after ? ` after ${after}` : ""}: ${rps} req/s, p99 ${p99}, ${cpuMs.toFixed(0)} ms server CPU/request, non-2xx ${non2xx}`,
        );
        return { rps, p99, non2xx, cpuMs };
      };
      const byName = await listing("name");
      const byName6 = await listing("name", `entry-${String(ENTRIES / 2 - 1).padStart(5, "0")}`);
      const byStore = await listing("store");
      const rps = byStore.rps;
      const f = (await stat(src)).size;
      const perGiB = (cpu: number) => `${((cpu * GiB) / f).toFixed(2)}`;
      const row = (label: string, w: W, target: boolean) => {
        const a = figs.atrest[w];
        const n = figs.nginx[w];
        return [
          label,
          `${seconds(a.s)} (${mbps(f, a.s)})`,
          `${seconds(n.s)} (${mbps(f, n.s)})`,
          ratio(n.s, a.s),
          `${perGiB(a.cpu)} / ${perGiB(n.cpu)}`,
          target ? `≥ ${TARGET}× ${n.s / a.s >= TARGET ? "met" : "not met"}` : "",
        ];
      };
      const blank = ["", "", "", ""];
      return {
        table: [
          ["workload", "atrest", "nginx", "ratio (nginx s / atrest s)", "server CPU s/GiB atrest / nginx", "target"],
          row(`GET ${size(f)} (HTTP/2)`, "get", true),
          row(`PUT ${size(f)} (HTTP/2)`, "put", true),
          row(`PUT ${size(f)} (HTTP/1.1)`, "put1", false),
          [
            `durable write of the same ${size(f)} on this disk (dd conv=fdatasync)`,
            `${seconds(durable)} (${mbps(f, durable)})`,
            "",
            "",
            "",
            "",
          ],
          ["peak server RSS during the transfers", size(atRss), size(ngxRss), "", "", ""],
          [
            `list ${ENTRIES.toLocaleString("en")} entries (1,000 a page), order=name, wrk -c4`,
            `${byName.rps.toFixed(1)} req/s (p99 ${byName.p99}), ${byName.cpuMs.toFixed(0)} ms server CPU/request`,
            ...blank,
          ],
          [
            `list ${ENTRIES.toLocaleString("en")} entries (1,000 a page), order=name, page ${ENTRIES / 2000 + 1} (cursor), wrk -c4`,
            `${byName6.rps.toFixed(1)} req/s (p99 ${byName6.p99}), ${byName6.cpuMs.toFixed(0)} ms server CPU/request`,
            ...blank,
          ],
          [
            `list ${ENTRIES.toLocaleString("en")} entries (1,000 a page), order=store, wrk -c4`,
            `${byStore.rps.toFixed(1)} req/s (p99 ${byStore.p99}), ${byStore.cpuMs.toFixed(0)} ms server CPU/request`,
            ...blank,
          ],
        ],
        notes: [
          "nginx serves the file as it is on disk (sendfile); atrest decrypts (GET) or encrypts and fsyncs (PUT) every byte. nginx's dav PUT leaves the body in the page cache; atrest answers a PUT once its blob is fsynced, so an atrest PUT takes at least the durable-write row on a disk that is slower than the network.",
          "Server CPU: user + system of the atrest process (all threads: TLS and HTTP on the main thread, sealing on its worker, file writes on the thread pool) and of the nginx worker, for the best run of each workload. On a loaded machine this is the figure to compare: wall times follow the other processes' load. Where the time goes: docs/http-performance.md.",
          ...(
            [
              [byName, "order=name"],
              [byName6, "order=name (page 6)"],
              [byStore, "order=store"],
            ] as const
          ).flatMap(([l, what]) => (l.non2xx !== "0" ? [`listing ${what}: ${l.non2xx} non-2xx answers`] : [])),
          "order=name reads the folder's names digest (count and sum/XOR of the children's name MACs, from the (parent, name MAC) index alone) and, while it is the one its sorted names were made under, reuses them (any node's add, removal or rename changes it); it then reads and decrypts only the page's rows (by id; a child replaced under the same name shows as a missing id and the folder is sorted again). The first request after a change reads, opens (through the bounded cache of opened names) and sorts every name. order=store reads and decrypts one page in name-MAC order.",
        ],
        summary: [
          `http GET ${ratio(figs.nginx.get.s, figs.atrest.get.s)} PUT ${ratio(figs.nginx.put.s, figs.atrest.put.s)} (HTTP/1.1 ${ratio(figs.nginx.put1.s, figs.atrest.put1.s)}) of nginx (target ${TARGET}), PUT CPU ${perGiB(figs.atrest.put.cpu)} vs nginx ${perGiB(figs.nginx.put.cpu)} s/GiB, durable write ${seconds(durable)}, RSS ${size(atRss)}, list ${byName.rps.toFixed(1)} req/s by name, ${rps.toFixed(1)} in store order`,
        ],
      };
    } finally {
      await atrest.stop();
      await nginx.stop();
    }
  },
};
