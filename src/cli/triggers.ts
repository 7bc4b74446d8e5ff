import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { AtrestError } from "../errors.ts";
import { EVENT_KINDS, type EventKind, eventsOf } from "../events/schema.ts";
import type { Execution } from "../events/store.ts";
import { actorFields, cliActor } from "../service/actor.ts";
import { asOption } from "./as.ts";
import { dataOption, say, withApp } from "./common.ts";

async function readRuleFile(file: string): Promise<unknown> {
  let text: string;
  try {
    if (file === "-") {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      text = Buffer.concat(chunks).toString("utf8");
    } else {
      text = await readFile(file, "utf8");
    }
  } catch (err) {
    throw new AtrestError("INVALID_INPUT", `cannot read rule file ${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new AtrestError("INVALID_INPUT", `rule file ${file} is not JSON: ${(err as Error).message}`);
  }
}

function when(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");
}

/** One line: id, state, time, progress, attempts, and the last step's outcome. */
function executionLine(e: Execution, steps?: number): string {
  const last = e.data.log.at(-1);
  const progress = steps !== undefined ? `${e.step}/${steps}` : `step ${e.step}`;
  const due = e.state === "pending" && e.attempts > 0 ? ` retry at ${when(e.dueAt)}` : "";
  const outcome = last ? ` ${last.type}: ${last.ok ? "ok" : "FAILED"} ${last.detail}` : "";
  return `${e.id}\t${e.state}\t${when(e.createdAt)}\t${progress}\tattempts ${e.attempts}${due}\t${e.rule}${outcome}`;
}

function json(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function registerTriggers(program: Command): void {
  const trigger = program
    .command("trigger")
    .description("event triggers: rules (event x conditions x actions), history, dead letters (docs/triggers.md)");

  trigger
    .command("add")
    .description("add a rule from a JSON document (validated; webhook secrets not given are generated)")
    .addOption(dataOption())
    .requiredOption("--file <file>", "rule JSON file, - for standard input")
    .option("--replace", "replace an existing rule of the same name")
    .addOption(asOption())
    .action(async (opts) => {
      const by = actorFields(cliActor(opts.as));
      const input = await readRuleFile(opts.file);
      await withApp(opts.data, async (app) => {
        const { rule, generated } = await app.triggers.rules.add(input, { replace: opts.replace, by });
        say(`${opts.replace ? "saved" : "added"} trigger rule ${rule.name} (${rule.actions.length} action(s))`);
        for (const g of generated) {
          say(`webhook secret of action ${g.action} (shown once, configure the receiver with it): ${g.secret}`);
        }
      });
    });

  trigger
    .command("list")
    .description("list rules")
    .addOption(dataOption())
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const rules = await app.triggers.rules.list();
        if (opts.json) return json(rules);
        for (const r of rules) {
          const actions = r.rule.actions.map((a) => a.type).join(",");
          const state = r.enabled ? "enabled" : "disabled";
          process.stdout.write(
            `${r.rule.name}\t${state}\t${eventsOf(r.rule).join(",")}\towner ${r.rule.owner}\t${actions}\n`,
          );
        }
      });
    });

  trigger
    .command("show <name>")
    .description("print a rule (secrets are never shown) and its queue counts")
    .addOption(dataOption())
    .action(async (name: string, opts) => {
      await withApp(opts.data, async (app) => {
        const r = await app.triggers.rules.get(name);
        json({
          ...r.rule,
          enabled: r.enabled,
          createdAt: r.createdAt,
          updatedAt: r.updatedAt,
          lastFiredAt: r.lastFiredAt === null ? null : when(r.lastFiredAt),
        });
      });
    });

  trigger
    .command("rm <name>")
    .description("remove a rule (its history stays; queued executions of it go to the dead letters)")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (name: string, opts) => {
      const by = actorFields(cliActor(opts.as));
      await withApp(opts.data, async (app) => {
        await app.triggers.rules.remove(name, by);
        say(`removed trigger rule ${name}`);
      });
    });

  for (const [cmd, enabled] of [
    ["enable", true],
    ["disable", false],
  ] as const) {
    trigger
      .command(`${cmd} <name>`)
      .description(`${cmd} a rule (queued executions still run)`)
      .addOption(dataOption())
      .addOption(asOption())
      .action(async (name: string, opts) => {
        const by = actorFields(cliActor(opts.as));
        await withApp(opts.data, async (app) => {
          await app.triggers.rules.setEnabled(name, enabled, by);
          say(`${cmd}d trigger rule ${name}`);
        });
      });
  }

  trigger
    .command("test <name>")
    .description("dry run: would this event fire the rule? (prints why not; nothing runs)")
    .addOption(dataOption())
    .requiredOption("--event <kind>", `event: ${EVENT_KINDS.join(" ")}`)
    .requiredOption("--user <name>", "the user who acted")
    .option("--path <path>", "global path (the server's tree, e.g. /exchange/in/a.csv)")
    .option("--target <path>", "global rename target")
    .option("--size <bytes>", "file size")
    .option("--protocol <p>", "protocol", "sftp")
    .option("--time <iso>", "event time (default now)")
    .action(async (name: string, opts) => {
      if (!(EVENT_KINDS as readonly string[]).includes(opts.event)) {
        throw new AtrestError("INVALID_INPUT", `unknown event ${opts.event}: use one of ${EVENT_KINDS.join(" ")}`);
      }
      const time = opts.time ? new Date(opts.time) : new Date();
      if (Number.isNaN(time.getTime())) throw new AtrestError("INVALID_INPUT", `not a time: ${opts.time}`);
      const size = opts.size === undefined ? undefined : Number(opts.size);
      if (size !== undefined && !Number.isSafeInteger(size)) throw new AtrestError("INVALID_INPUT", "bad --size");
      await withApp(opts.data, async (app) => {
        const why = await app.triggers.rules.explain(name, {
          kind: opts.event as EventKind,
          time: time.toISOString(),
          user: opts.user,
          effectiveUser: opts.user,
          protocol: opts.protocol,
          path: opts.path,
          targetPath: opts.target,
          size,
        });
        if (why) {
          process.stdout.write(`no match: ${why}\n`);
          process.exitCode = 1;
        } else {
          process.stdout.write(
            `match: ${name} would run ${(await app.triggers.rules.get(name)).rule.actions.length} action(s)\n`,
          );
        }
      });
    });

  trigger
    .command("history <name>")
    .description("latest executions of a rule, newest first")
    .addOption(dataOption())
    .option("-n <count>", "how many", "20")
    .option("--json", "machine-readable output, with every step")
    .action(async (name: string, opts) => {
      await withApp(opts.data, async (app) => {
        const list = await app.triggers.rules.history(name, Number(opts.n) || 20);
        const steps = (await app.triggers.store.getRule(name))?.rule.actions.length;
        if (opts.json) return json(list);
        for (const e of list) process.stdout.write(`${executionLine(e, steps)}\n`);
      });
    });

  trigger
    .command("dead-letters")
    .description("executions that failed permanently or ran out of attempts (retry them with `trigger retry <id>`)")
    .addOption(dataOption())
    .option("--json", "machine-readable output, with every step")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const list = await app.triggers.rules.deadLetters();
        if (opts.json) return json(list);
        for (const e of list) process.stdout.write(`${executionLine(e)}\n`);
      });
    });

  trigger
    .command("retry <id>")
    .description("queue a dead letter again: it resumes at the step that failed, with a fresh attempt budget")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (id: string, opts) => {
      const by = actorFields(cliActor(opts.as));
      await withApp(opts.data, async (app) => {
        await app.triggers.rules.retry(id, by);
        say(`queued execution ${id} again (the server runs it within a second)`);
      });
    });
}
