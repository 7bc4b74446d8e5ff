import type { Command } from "commander";
import { registerKmsKeys } from "./kms-keys.ts";

export function registerKms(program: Command): void {
  const kms = program.command("kms").description("key manager (embedded, in the data directory)");
  registerKmsKeys(kms);
}
