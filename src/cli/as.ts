import { Option } from "commander";

/** `--as <name>`: who is acting, for the audit; one option for every command that changes or reads admin state. */
export function asOption(): Option {
  return new Option("--as <name>", "who is acting, for the audit (default: the OS user)").env("ATREST_AS");
}
