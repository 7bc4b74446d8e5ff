// Reads one secret line (an unseal share) from stdin: a hidden prompt on a terminal, else the first non-empty line
// of piped input. Secrets never come from argv (visible in `ps` and shell history).
import { AtrestError } from "../errors.ts";

/**
 * A hidden prompt for a secret that has another way in (an environment variable, a flag): on a terminal only. Piped
 * or closed-off stdin is not read, as it is no answer to a prompt: a service manager or a CI job keeps it open without
 * writing, and the command would wait for an end of input that never comes. `otherwise` says how to give it.
 */
export async function promptSecret(prompt: string, what: string, otherwise: string): Promise<string> {
  if (!process.stdin.isTTY) {
    throw new AtrestError("INVALID_INPUT", `${what} is needed and standard input is not a terminal: ${otherwise}`);
  }
  return readSecretLine(prompt);
}

export async function readSecretLine(prompt: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    let text = "";
    for await (const chunk of stdin) text += chunk.toString("utf8");
    return (
      text
        .split(/\r?\n/)
        .find((l) => l.trim() !== "")
        ?.trim() ?? ""
    );
  }
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let line = "";
      const onData = (chunk: Buffer) => {
        for (const ch of chunk.toString("utf8")) {
          if (ch === "\r" || ch === "\n") {
            stdin.off("data", onData);
            process.stderr.write("\n");
            resolve(line.trim());
            return;
          }
          if (ch === "\u0003") {
            stdin.off("data", onData);
            process.stderr.write("\n");
            reject(new Error("interrupted"));
            return;
          }
          if (ch === "\u007f" || ch === "\b") line = line.slice(0, -1);
          else line += ch;
        }
      };
      stdin.on("data", onData);
    });
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
  }
}

/** `count` secret lines: all non-empty lines of piped input, or `count` hidden prompts on a terminal. */
export async function readSecretLines(count: number, prompt: (i: number) => string): Promise<string[]> {
  if (!process.stdin.isTTY) {
    let text = "";
    for await (const chunk of process.stdin) text += chunk.toString("utf8");
    return text
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== "");
  }
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(await readSecretLine(prompt(i)));
  return out;
}
