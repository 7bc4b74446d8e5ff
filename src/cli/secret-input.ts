// Reads one secret line (an unseal share) from stdin: a hidden prompt on a terminal, else the first non-empty line
// of piped input. Secrets never come from argv (visible in `ps` and shell history).

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
