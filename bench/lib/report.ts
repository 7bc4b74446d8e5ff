// Formatting and docs/benchmarks.md assembly.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, release } from "node:os";
import { run } from "./proc.ts";

export const MB = 1e6;
export const MiB = 2 ** 20;
export const GiB = 2 ** 30;

export function seconds(s: number | undefined): string {
  return s === undefined ? "–" : s.toFixed(2);
}

export function mbps(bytes: number, s: number | undefined): string {
  if (s === undefined) return "–";
  const v = bytes / MB / s;
  return v < 10 ? v.toFixed(1) : v.toFixed(0);
}

/** "1.23×", or "–" if either side is missing. */
export function ratio(numerator: number | undefined, denominator: number | undefined): string {
  if (numerator === undefined || denominator === undefined || denominator === 0) return "–";
  return `${(numerator / denominator).toFixed(2)}×`;
}

export function size(bytes: number): string {
  if (bytes >= GiB && bytes % GiB === 0) return `${bytes / GiB} GiB`;
  if (bytes >= MiB) return `${+(bytes / MiB).toFixed(1)} MiB`;
  return `${+(bytes / 1024).toFixed(1)} KiB`;
}

export function markdownTable(rows: string[][]): string {
  const [head, ...body] = rows;
  const line = (r: string[]) => `| ${r.map((c) => c.replaceAll("|", "\\|")).join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...body.map(line)].join("\n");
}

export interface Machine {
  date: string;
  cores: number;
  cpu: string;
  kernel: string;
  node: string;
  openssh: string;
  openssl: string;
  /** 1-minute load average when the run started (others' work on the machine skews figures). */
  load: number;
}

export async function machineFacts(): Promise<Machine> {
  let cpu = "unknown";
  try {
    cpu =
      readFileSync("/proc/cpuinfo", "utf8")
        .match(/^model name\s*:\s*(.+)$/m)?.[1]
        ?.trim() ?? cpu;
  } catch {
    // not Linux
  }
  let cores = availableParallelism();
  try {
    cores = Number((await run("nproc", [])).stdout.trim()) || cores;
  } catch {
    // keep availableParallelism
  }
  const version = async (cmd: string, args: string[]) => {
    try {
      const r = await run(cmd, args, { check: false });
      return (r.stdout + r.stderr).trim().split("\n")[0] ?? "?";
    } catch {
      return "not installed";
    }
  };
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    cores,
    cpu,
    kernel: release(),
    load: loadavg()[0],
    node: process.version,
    openssh: (await version("ssh", ["-V"])).split(",")[0],
    openssl: (await version("openssl", ["version"])).split(" (")[0],
  };
}

export function machineLine(m: Machine): string {
  return `${m.date} · ${m.cores} cores (nproc) · ${m.cpu} · Linux ${m.kernel} · Node ${m.node} · ${m.openssh} · ${m.openssl} · load ${m.load.toFixed(1)}`;
}

const START = (name: string) => `<!-- bench:${name}:start -->`;
const END = (name: string) => `<!-- bench:${name}:end -->`;

/** The previously written section of a module, if any (so running one module keeps the others' figures). */
export function previousSection(path: string, name: string): string | undefined {
  if (!existsSync(path)) return undefined;
  const text = readFileSync(path, "utf8");
  const from = text.indexOf(START(name));
  const to = text.indexOf(END(name));
  if (from < 0 || to < from) return undefined;
  return text.slice(from + START(name).length, to).trim();
}

/**
 * What was written by hand under a module's generated figures (between its end marker and the next heading): notes
 * on where the time goes, kept when the figures are rewritten.
 */
export function sectionNotes(text: string, name: string): string {
  const at = text.indexOf(END(name));
  if (at < 0) return "";
  const rest = text.slice(at + END(name).length);
  const next = rest.search(/^## /m);
  return (next < 0 ? "" : rest.slice(0, next)).trim();
}

export function writeDoc(
  path: string,
  intro: string,
  sections: { name: string; title: string; body: string | undefined }[],
  method: string,
): void {
  const old = existsSync(path) ? readFileSync(path, "utf8") : "";
  const parts = [intro];
  for (const s of sections) {
    const notes = sectionNotes(old, s.name);
    parts.push(
      `## ${s.title}\n\n${START(s.name)}\n${s.body ?? `_Not run yet: \`npm run bench -- ${s.name}\`._`}\n${END(s.name)}` +
        (notes ? `\n\n${notes}` : ""),
    );
  }
  parts.push(method);
  writeFileSync(path, `${parts.join("\n\n")}\n`);
}
