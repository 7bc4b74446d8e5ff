// Rule management (CLI today, the HTTP API later): parse and validate a rule document, store it, list, show,
// remove, enable/disable. Every change is audited as a configuration change.
import { randomBytes } from "node:crypto";
import type { AuditActor, AuditSink } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { MetaStore } from "../store/types.ts";
import { isWithin, normalize } from "../vfs/paths.ts";
import type { PgpApi } from "./actions/context.ts";
import { localTime, mismatch } from "./conditions.ts";
import type { TriggerEvent } from "./event.ts";
import { validateGlob } from "./glob.ts";
import { keyBaseline } from "./key-watch.ts";
import { validateSchedule } from "./schedule.ts";
import { eventsOf, FILE_EVENTS, type Rule, ruleSchema } from "./schema.ts";
import type { Execution, RuleSecrets, StoredRule, TriggerStore } from "./store.ts";

/** Actions that work on the event's file: they need a file event. */
/** Changes made without a `by` (in-process use by tests and tools); the CLI passes its --as actor. */
const IN_PROCESS_ACTOR: AuditActor = { user: "admin", role: "admin", protocol: "cli" };
const FILE_ACTIONS = new Set(["pgp-encrypt", "pgp-sign", "move", "copy", "rename", "delete"]);

function invalid(message: string): AtrestError {
  return new AtrestError("INVALID_INPUT", message);
}

/** Parses a rule document with a one-line error naming the first bad field. */
export function parseRule(input: unknown): Rule {
  const parsed = ruleSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length > 0 ? issue.path.join(".") : "(rule)";
    throw invalid(`rule ${where}: ${issue.message}`);
  }
  return parsed.data;
}

function checkUrl(url: string, where: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalid(`${where}: bad URL "${url}"`);
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") throw invalid(`${where}: URL must be http(s): "${url}"`);
  if (u.username || u.password) throw invalid(`${where}: put credentials in the secret, not in the URL`);
}

/** Checks what the schema cannot: cross-field rules and references to users, groups and PGP keys. */
export async function validateRule(rule: Rule, meta: MetaStore, pgp?: PgpApi): Promise<void> {
  const events = eventsOf(rule);
  if (events.includes("schedule") !== (rule.schedule !== undefined)) {
    throw invalid(rule.schedule ? "rule schedule: only for event schedule" : "event schedule needs a schedule");
  }
  if (events.includes("schedule") && events.length > 1) throw invalid("rule event: schedule cannot be combined");
  if (rule.schedule) validateSchedule(rule.schedule);
  const fileOnly = events.every((e) => FILE_EVENTS.includes(e));
  const c = rule.conditions;
  if (!fileOnly && (c.paths || c.size)) {
    throw invalid("rule conditions: paths and size apply only to file events (upload download delete rename mkdir)");
  }
  for (const g of c.paths ?? []) validateGlob(g);
  if (c.time?.timeZone) {
    try {
      localTime(new Date(), c.time.timeZone);
    } catch {
      throw invalid(`rule conditions.time.timeZone: unknown time zone "${c.time.timeZone}"`);
    }
  }
  if (!(await meta.getUser(rule.owner))) throw invalid(`rule owner: unknown user "${rule.owner}"`);
  for (const u of c.users ?? []) {
    if (!(await meta.getUser(u))) throw invalid(`rule conditions.users: unknown user "${u}"`);
  }
  for (const g of c.groups ?? []) {
    if (!(await meta.getGroup(g))) throw invalid(`rule conditions.groups: unknown group "${g}" (atrest group add)`);
  }
  for (const [i, a] of rule.actions.entries()) {
    const where = `rule actions.${i} (${a.type})`;
    if (FILE_ACTIONS.has(a.type) && (!fileOnly || events.includes("mkdir"))) {
      throw invalid(`${where}: works on the event's file, so the rule's events must be file events other than mkdir`);
    }
    switch (a.type) {
      case "pgp-encrypt":
      case "pgp-sign":
        if (!pgp) throw new AtrestError("UNSUPPORTED", `${where}: the OpenPGP key store is not available`);
        try {
          if (a.type === "pgp-encrypt") await pgp.checkRecipients(a.recipients, a.requireCertified);
          if (a.type === "pgp-sign" || a.sign) await pgp.checkOrgKey();
        } catch (err) {
          throw invalid(`${where}: ${(err as Error).message}`);
        }
        break;
      case "move":
      case "copy":
        validatePathTemplate(a.to, `${where} to`);
        break;
      case "rename":
        if (a.name.includes("/")) throw invalid(`${where} name: a name, not a path (use move)`);
        break;
      case "webhook":
        checkUrl(a.url, where);
        break;
      case "retention":
        if (a.mode === "archive" && a.archiveTo && isWithin(normalize(a.archiveTo), normalize(a.path))) {
          throw invalid(`${where}: archiveTo must not lie inside path`);
        }
        break;
    }
  }
}

function validatePathTemplate(path: string, where: string): void {
  if (path.split("/").some((p) => p === "..")) throw invalid(`${where}: ".." is not allowed`);
}

/** Takes secrets out of the rule (they are sealed apart); generates webhook keys that were not given. */
function extractSecrets(rule: Rule): { stored: Rule; secrets: RuleSecrets; generated: GeneratedSecret[] } {
  const secrets: RuleSecrets = {};
  const generated: GeneratedSecret[] = [];
  const actions = rule.actions.map((a, i) => {
    if (a.type === "webhook") {
      let secret = a.secret;
      if (secret === undefined) {
        secret = randomBytes(32).toString("base64url");
        generated.push({ action: i, secret });
      }
      secrets[i] = { secret };
      const { secret: _s, ...rest } = a;
      return rest;
    }
    if (a.type === "email" && a.smtp.password !== undefined) {
      secrets[i] = { password: a.smtp.password };
      const { password: _p, ...smtp } = a.smtp;
      return { ...a, smtp };
    }
    return a;
  });
  return { stored: { ...rule, actions }, secrets, generated };
}

export interface GeneratedSecret {
  /** Index of the webhook action. */
  action: number;
  /** Shown once; give it to the receiver to check signatures. */
  secret: string;
}

export class TriggerRules {
  readonly #store: TriggerStore;
  readonly #meta: MetaStore;
  readonly #audit: AuditSink;
  readonly #pgp: () => PgpApi | undefined;
  readonly #keys: KeyProvider;
  readonly #now: () => number;

  constructor(
    store: TriggerStore,
    meta: MetaStore,
    audit: AuditSink,
    pgp: () => PgpApi | undefined,
    keys: KeyProvider,
    now: () => number = Date.now,
  ) {
    this.#store = store;
    this.#meta = meta;
    this.#audit = audit;
    this.#pgp = pgp;
    this.#keys = keys;
    this.#now = now;
  }

  /** A key-rotated rule starts watching from now, unless another enabled one already keeps the watch going. */
  async #startKeyWatch(rule: Rule, enabled: boolean): Promise<void> {
    if (!enabled || !eventsOf(rule).includes("key-rotated")) return;
    const watching = (await this.#store.listRules()).some(
      (s) => s.enabled && s.rule.name !== rule.name && eventsOf(s.rule).includes("key-rotated"),
    );
    if (watching) return;
    try {
      await keyBaseline(this.#keys, this.#meta, this.#now());
    } catch {
      // key manager unreachable now: the server's first look becomes the baseline instead
    }
  }

  /** Validates and stores a rule; `replace` updates an existing one. Returns secrets generated for webhooks. */
  async add(
    input: unknown,
    opts: { replace?: boolean; by?: AuditActor } = {},
  ): Promise<{
    rule: Rule;
    generated: GeneratedSecret[];
  }> {
    const rule = parseRule(input);
    await validateRule(rule, this.#meta, this.#pgp());
    const { stored, secrets, generated } = extractSecrets(rule);
    await this.#startKeyWatch(rule, rule.enabled);
    await this.#store.putRule(stored, secrets, opts.replace ?? false);
    this.#record(rule.name, opts.replace ? "trigger rule replaced" : "trigger rule added", opts.by);
    return { rule: stored, generated };
  }

  list(): Promise<StoredRule[]> {
    return this.#store.listRules();
  }

  /** The rule as stored: secrets are not part of it. */
  async get(name: string): Promise<StoredRule> {
    const r = await this.#store.getRule(name);
    if (!r) throw new AtrestError("NOT_FOUND", `no trigger rule ${name}`);
    return r;
  }

  async remove(name: string, by?: AuditActor): Promise<void> {
    if (!(await this.#store.deleteRule(name))) throw new AtrestError("NOT_FOUND", `no trigger rule ${name}`);
    this.#record(name, "trigger rule removed", by);
  }

  async setEnabled(name: string, enabled: boolean, by?: AuditActor): Promise<void> {
    const current = await this.#store.getRule(name);
    if (current && !current.enabled) await this.#startKeyWatch(current.rule, enabled);
    if (!(await this.#store.setEnabled(name, enabled))) throw new AtrestError("NOT_FOUND", `no trigger rule ${name}`);
    this.#record(name, enabled ? "trigger rule enabled" : "trigger rule disabled", by);
  }

  /**
   * Dry run: would `event` fire the rule? Returns undefined when it would, else why not. Paths are global; the
   * user's groups come from the database. Nothing is queued.
   */
  async explain(name: string, event: TriggerEvent): Promise<string | undefined> {
    const { rule, enabled } = await this.get(name);
    if (!eventsOf(rule).includes(event.kind))
      return `the rule reacts to ${eventsOf(rule).join(", ")}, not ${event.kind}`;
    const user = await this.#meta.getUser(event.effectiveUser);
    const why = mismatch(rule.conditions, event, { groups: user?.groups ?? [] });
    if (why) return why;
    return enabled ? undefined : "the conditions hold, but the rule is disabled";
  }

  /** Latest executions of a rule, newest first (NOT_FOUND when the rule never existed and has no history). */
  async history(name: string, limit = 20): Promise<Execution[]> {
    const list = await this.#store.history(name, limit);
    if (list.length === 0 && !(await this.#store.getRule(name)))
      throw new AtrestError("NOT_FOUND", `no trigger rule ${name}`);
    return list;
  }

  deadLetters(limit = 100): Promise<Execution[]> {
    return this.#store.deadLetters(limit);
  }

  /** Queues a dead letter again (audited: an operator decided to re-run it). */
  async retry(id: string, by?: AuditActor): Promise<Execution> {
    await this.#store.retry(id);
    const e = await this.#store.get(id);
    if (!e) throw new AtrestError("NOT_FOUND", `no trigger execution ${id}`);
    this.#record(e.rule, `dead letter ${id} queued again`, by);
    return e;
  }

  #record(name: string, detail: string, by: AuditActor = IN_PROCESS_ACTOR): void {
    this.#audit.record({ action: "config.change", outcome: "success", ...by, target: `trigger:${name}`, detail });
  }
}
