// The atrest CLI as a function: `runCli(argv, io)` builds the command tree, runs one command and returns its exit
// code. Nothing runs at import; the process entry (main.ts) is a thin caller, and tests run commands in-process.
import { AsyncLocalStorage } from "node:async_hooks";
import { Readable } from "node:stream";
import { Command, CommanderError, Option } from "commander";
import { AtrestError } from "../errors.ts";
import { registerAudit } from "./audit.ts";
import { registerBackup } from "./backup.ts";
import { dataOption, initCommand } from "./common.ts";
import { registerDefender } from "./defender.ts";
import { registerFolders } from "./folders.ts";
import { registerKeys } from "./keys.ts";
import { registerKms } from "./kms.ts";
import { registerPgp } from "./pgp.ts";
import { registerServer } from "./server.ts";
import { registerSync } from "./sync.ts";
import { registerTriggers } from "./triggers.ts";
import { registerUsers } from "./users.ts";

export interface CliWriter {
  write(chunk: string | Uint8Array): unknown;
}

/** Where a command's output goes and what it reads: the process's own streams, or a caller's (tests). */
export interface CliIo {
  stdout: CliWriter;
  stderr: CliWriter;
  /** read by --password-stdin, --file -, unseal shares; `isTTY` selects hidden prompts */
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  /** read by options with an environment variable (ATREST_DATA, ATREST_KMS, …) and by the commands */
  env: NodeJS.ProcessEnv;
}

/** The process's own streams and environment: what main.ts passes. */
export function processIo(): CliIo {
  return { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env };
}

/** Piped input (or none) for an in-process run; an ended stream when there is nothing to read. */
export function stdinOf(input?: string | Uint8Array): CliIo["stdin"] {
  return Readable.from(input === undefined ? [] : [Buffer.from(input)]);
}

export function buildProgram(): Command {
  const program = new Command("atrest")
    .description("File transfer server with every file encrypted at rest under keys held by a key manager")
    // errors and --help throw a CommanderError (mapped to the exit code below) instead of calling process.exit;
    // set before the subcommands are added, which inherit it
    .exitOverride()
    .showHelpAfterError()
    .addOption(new Option("--config <file>", "JSON config file").env("ATREST_CONFIG"));

  program
    .command("init")
    .description(
      "create the data directory bound to its key manager: a separate one (--kms, --kms-cert; recorded, so later " +
        "commands need no flags) or else a dev-mode embedded one (key file beside the data)",
    )
    .addOption(dataOption())
    .addOption(new Option("--kms <url>", "remote key manager https://host:port (atrest kms serve)"))
    .addOption(new Option("--kms-cert <dir>", "client certificate directory from `atrest kms client issue`"))
    .action(async (opts: { data: string; kms?: string; kmsCert?: string }) =>
      initCommand(opts.data, { url: opts.kms, certDir: opts.kmsCert }),
    );

  registerServer(program);
  registerUsers(program);
  registerFolders(program);
  registerKms(program);
  registerKeys(program);
  registerBackup(program);
  registerAudit(program);
  registerTriggers(program);
  registerPgp(program);
  registerDefender(program);
  registerSync(program);
  return program;
}

/**
 * Runs `atrest <argv…>` (argv without node and script) and returns the exit code. Errors become one line on stderr,
 * as from the process. With the process's own io this is what main.ts does; with another io, the command's reads
 * and writes of process.stdout/stderr/stdin/env and its exit code are redirected for the run and restored after it.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const own = io.stdout === process.stdout && io.stderr === process.stderr && io.stdin === process.stdin;
  if (own && io.env === process.env) return run(argv, io);
  // Process-wide state (env, umask, exit code) can only hold one run's values at a time: in-process runs queue.
  const previous = queue;
  let release = () => {};
  queue = new Promise<void>((resolve) => {
    release = resolve;
  });
  await previous;
  try {
    return await redirected(io, () => run(argv, io));
  } finally {
    release();
  }
}

let queue: Promise<void> = Promise.resolve();

async function run(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    await buildProgram().parseAsync([...argv], { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : Number(process.exitCode ?? 0);
  } catch (err) {
    // commander has already printed its own message (usage errors) or the help text
    if (err instanceof CommanderError) return err.exitCode;
    // One line on stderr, no stack: the message is written for operators and never contains secrets.
    const message = err instanceof AtrestError || err instanceof Error ? err.message : String(err);
    io.stderr.write(`atrest: ${message}\n`);
    return err instanceof AtrestError && err.code === "INVALID_INPUT" ? 2 : 1;
  }
}

const current = new AsyncLocalStorage<CliIo>();

/** Runs `fn` with this run's io in place of the process's streams and environment; everything is restored after. */
async function redirected<T>(io: CliIo, fn: () => Promise<T>): Promise<T> {
  const { stdout, stderr, env } = process;
  const writeOut = stdout.write;
  const writeErr = stderr.write;
  const stdinDescriptor = Object.getOwnPropertyDescriptor(process, "stdin");
  const exitCode = process.exitCode;
  // Writes from code outside this run (a test runner reporting, another test's timer) still reach the process.
  stdout.write = route(writeOut, stdout, (c) => c.stdout);
  stderr.write = route(writeErr, stderr, (c) => c.stderr);
  Object.defineProperty(process, "stdin", { configurable: true, enumerable: true, get: () => io.stdin });
  process.env = io.env;
  process.exitCode = undefined;
  // Everything atrest writes (keys, metadata, blobs, logs) is private to the service account, as in main.ts.
  const umask = process.umask(0o077);
  try {
    return await current.run(io, fn);
  } finally {
    process.umask(umask);
    process.exitCode = exitCode;
    process.env = env;
    if (stdinDescriptor) Object.defineProperty(process, "stdin", stdinDescriptor);
    stdout.write = writeOut;
    stderr.write = writeErr;
  }
}

function route(
  original: NodeJS.WriteStream["write"],
  stream: NodeJS.WriteStream,
  pick: (io: CliIo) => CliWriter,
): NodeJS.WriteStream["write"] {
  return ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const io = current.getStore();
    if (!io) return (original as (...a: unknown[]) => boolean).call(stream, chunk, ...rest);
    pick(io).write(chunk);
    const done = rest.find((r) => typeof r === "function") as (() => void) | undefined;
    if (done) queueMicrotask(done);
    return true;
  }) as NodeJS.WriteStream["write"];
}
