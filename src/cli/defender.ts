// `atrest defender list|unban`: the brute-force defender's bans, read from and lifted in the metadata store, so they
// work beside a running server (which checks the store at every login).
import type { Command } from "commander";
import { AtrestError } from "../errors.ts";
import { cliActor } from "../service/actor.ts";
import { asOption } from "./as.ts";
import { dataOption, say, withApp } from "./common.ts";

export function registerDefender(program: Command): void {
  const defender = program.command("defender").description("brute-force defender: login bans by IP and by user");

  defender
    .command("list")
    .description("bans in force (and, with --all, ended ones still remembered for the next ban's length)")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--all", "include ended bans")
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const now = Date.now();
        const rows = (await app.admin.listBans(cliActor(opts.as)))
          .filter((b) => opts.all || b.until > now)
          .map((b) => ({
            kind: b.kind,
            subject: b.subject,
            since: new Date(b.since).toISOString(),
            until: new Date(b.until).toISOString(),
            count: b.count,
            active: b.until > now,
          }));
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        if (rows.length === 0) say("no bans");
        for (const r of rows) {
          process.stdout.write(
            `${r.kind}\t${r.subject}\tuntil ${r.until}\tban ${r.count}${r.active ? "" : "\tended"}\n`,
          );
        }
      });
    });

  defender
    .command("unban <subject>")
    .description("lift the bans on an IP address or a user name (audited)")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (subject: string, opts) => {
      const actor = cliActor(opts.as);
      await withApp(opts.data, async (app) => {
        const lifted = await app.admin.unban(actor, subject);
        if (lifted.length === 0) throw new AtrestError("NOT_FOUND", `no ban on ${subject}`);
        for (const b of lifted) say(`lifted the ${b.kind} ban on ${b.subject}`);
      });
    });
}
