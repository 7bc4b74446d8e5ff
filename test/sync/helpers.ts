// Sync test devices: each has its own state directory and synced directory and runs `atrest sync …` either in this
// process (runCli) or as a child process of its own; plus tree hashing and a plaintext scan of a directory.
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { type CliResult, cli, cliProcess } from "../helpers/atrest.ts";

export class Device {
  readonly state: string;
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  id = "";
  fingerprint = "";
  root = "";

  readonly user: string;
  readonly name: string;

  constructor(base: string, user: string, name: string) {
    this.user = user;
    this.name = name;
    this.state = join(base, `${name}-state`);
    this.dir = join(base, `${name}-files`);
    this.env = { ...process.env, ATREST_SYNC_PASSPHRASE: `passphrase of ${name}`, ATREST_SYNC_KDF_MEMORY_KIB: "8192" };
  }

  /** `atrest sync <args> --state <state>` in this process (or a child process with `proc`). */
  run(args: string[], o: { input?: string; proc?: boolean } = {}): Promise<CliResult> {
    const argv = ["sync", ...args, "--state", this.state];
    return o.proc ? cliProcess(argv, o.input, this.env) : cli(argv, o.input, this.env);
  }

  async enroll(server: string, ca: string, password: string, extra: string[] = []): Promise<CliResult> {
    const r = await this.run(
      [
        "device",
        "enroll",
        "--server",
        server,
        "--ca",
        ca,
        "--user",
        this.user,
        "--name",
        this.name,
        "--password-stdin",
        ...extra,
      ],
      {
        input: `${password}\n`,
      },
    );
    this.id = /device ([0-9a-f]{32})/.exec(r.stdout)?.[1] ?? "";
    this.fingerprint = /device fingerprint ([0-9a-f ]+)/.exec(r.stdout)?.[1]?.trim() ?? "";
    this.root = /root fingerprint ([0-9a-f ]+)/.exec(r.stdout)?.[1]?.trim() ?? "";
    await mkdir(this.dir, { recursive: true });
    return r;
  }

  sync(region: string, o: { proc?: boolean; extra?: string[] } = {}): Promise<CliResult> {
    return this.run(["run", this.dir, "--region", region, "--once", ...(o.extra ?? [])], o);
  }
}

/** Relative path → SHA-256 of every file under `dir` (directories as "dir"). */
export async function treeOf(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string) => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true }).catch(() => [])) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out[p] = "dir";
        await walk(p);
      } else
        out[p] = createHash("sha256")
          .update(await readFile(join(dir, p)))
          .digest("hex");
    }
  };
  await walk("");
  return out;
}

/** Files under `dir` whose bytes contain any of `needles` (raw, hex, base64). */
export async function plaintextHits(dir: string, needles: string[]): Promise<string[]> {
  const forms = needles.flatMap((n) => [
    Buffer.from(n),
    Buffer.from(Buffer.from(n).toString("hex")),
    Buffer.from(Buffer.from(n).toString("base64")),
  ]);
  const hits: string[] = [];
  const walk = async (p: string) => {
    for (const e of await readdir(p, { withFileTypes: true })) {
      const f = join(p, e.name);
      if (e.isDirectory()) await walk(f);
      else if (e.isFile() && (await stat(f)).size < 256 << 20) {
        const b = await readFile(f);
        for (const n of forms) if (b.includes(n)) hits.push(`${f}: ${n.toString().slice(0, 40)}`);
      }
    }
  };
  await walk(dir);
  return hits;
}
