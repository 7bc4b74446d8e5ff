// Progress of a key job on the terminal: a bar redrawn in place on a TTY, plain lines (at most one a second, plus
// the last) otherwise, so logs of a cron job stay readable.
import type { JobProgress } from "./jobs.ts";

export function progressPrinter(
  out: NodeJS.WriteStream = process.stderr,
  now: () => number = () => performance.now(),
): (p: JobProgress) => void {
  const tty = out.isTTY === true;
  const start = now();
  let lastLine = Number.NEGATIVE_INFINITY;
  let lastText = "";
  return (p) => {
    const handled = p.done + p.skipped + p.failed;
    const finished = handled >= p.total;
    const t = now();
    const rate = handled / Math.max((t - start) / 1000, 1e-3);
    const pct = p.total > 0 ? Math.min(100, Math.floor((handled / p.total) * 100)) : 100;
    const text =
      `${p.kind} kek:${p.key}: ${handled}/${p.total} files (${pct}%)` +
      `, ${p.done} done, ${p.skipped} skipped, ${p.failed} failed` +
      (p.bytes > 0 ? `, ${(p.bytes / 1e6).toFixed(1)} MB` : "") +
      `, ${Math.round(rate)} files/s${p.resumed ? " (resumed)" : ""}`;
    if (finished && text === lastText) return;
    if (tty) {
      lastText = finished ? text : "";
      const width = 24;
      const filled = Math.round((pct / 100) * width);
      out.write(`\r[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${text}\x1b[K${finished ? "\n" : ""}`);
      return;
    }
    if ((finished && text !== lastText) || t - lastLine >= 1000) {
      out.write(`${text}\n`);
      lastLine = t;
      lastText = text;
    }
  };
}
