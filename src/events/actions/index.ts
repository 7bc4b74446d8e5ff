import type { Action } from "../schema.ts";
import { command } from "./command.ts";
import type { ActionRunner } from "./context.ts";
import { email } from "./email.ts";
import { copy, move, remove, rename } from "./files.ts";
import { pgpEncrypt, pgpSign } from "./pgp.ts";
import { retention } from "./retention.ts";
import { webhook } from "./webhook.ts";

export const RUNNERS: Record<Action["type"], ActionRunner> = {
  "pgp-encrypt": pgpEncrypt,
  "pgp-sign": pgpSign,
  move,
  copy,
  rename,
  delete: remove,
  webhook,
  email,
  retention,
  command,
};
