// Durable state of the trigger engine in the metadata database: rules, the execution queue, per-rule history and
// dead letters (executions in state `dead`). Rule specs are configuration and stay readable; their secrets (webhook
// keys, SMTP passwords) and everything an execution carries (event paths, users, errors) are sealed under the events
// key, itself wrapped by the key manager, so the database alone reveals no file name (DESIGN §7).
import { randomUUID } from "node:crypto";
import type { SQLInputValue } from "node:sqlite";
import { AtrestError } from "../errors.ts";
import type { SqlAccess, SqliteStore } from "../store/sqlite/index.ts";
import type { EventsCrypto } from "./crypto.ts";
import type { TriggerEvent } from "./event.ts";
import type { Rule } from "./schema.ts";

export type ExecutionState = "pending" | "running" | "done" | "dead";

/** Secrets of a rule by action index: stripped from the stored spec, sealed separately. */
export type RuleSecrets = Record<number, { secret?: string; password?: string }>;

export interface StoredRule {
  rule: Rule;
  enabled: boolean;
  lastFiredAt: number | null;
  createdAt: string;
  updatedAt: string;
}

export interface StepLog {
  step: number;
  type: string;
  at: string;
  ok: boolean;
  /** Short result ("moved to /out/a.csv", "HTTP 200") or error message. */
  detail: string;
  attempt: number;
}

/** What an execution carries, sealed. */
export interface ExecutionData {
  event: TriggerEvent;
  /** Global path of the file the next action works on (a producing action, e.g. pgp-encrypt, changes it). */
  current?: string;
  log: StepLog[];
}

export interface Execution {
  seq: number;
  id: string;
  rule: string;
  state: ExecutionState;
  /** Index of the next action to run; earlier ones completed. */
  step: number;
  attempts: number;
  dueAt: number;
  errorCode: string | null;
  createdAt: number;
  updatedAt: number;
  data: ExecutionData;
}

type Row = Record<string, SQLInputValue>;

export class TriggerStore {
  readonly #store: SqliteStore;
  readonly #sql: SqlAccess;
  readonly #crypto: EventsCrypto;
  readonly #now: () => number;

  constructor(store: SqliteStore, crypto: EventsCrypto, now: () => number = Date.now) {
    this.#store = store;
    this.#sql = store.sql();
    this.#crypto = crypto;
    this.#now = now;
  }

  transaction<T>(fn: () => Promise<T>): Promise<T> {
    return this.#store.transaction(fn);
  }

  // ---- rules

  async putRule(rule: Rule, secrets: RuleSecrets, replace: boolean): Promise<void> {
    const sealed =
      Object.keys(secrets).length > 0 ? await this.#crypto.seal(secrets, `rule-secrets:${rule.name}`) : null;
    const now = new Date().toISOString();
    await this.transaction(async () => {
      const existing = this.#sql.get("SELECT created_at FROM trigger_rules WHERE name = ?", rule.name);
      if (existing && !replace) throw new AtrestError("EXISTS", `trigger rule ${rule.name} already exists`);
      this.#sql.run(
        `INSERT INTO trigger_rules (name, spec, secrets, enabled, last_fired_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, NULL, ?, ?)
         ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, secrets = excluded.secrets,
           enabled = excluded.enabled, last_fired_at = NULL, updated_at = excluded.updated_at`,
        rule.name,
        JSON.stringify(rule),
        sealed,
        rule.enabled ? 1 : 0,
        now,
        now,
      );
    });
  }

  getRule(name: string): StoredRule | undefined {
    const r = this.#sql.get("SELECT * FROM trigger_rules WHERE name = ?", name);
    return r ? toRule(r) : undefined;
  }

  listRules(): StoredRule[] {
    return this.#sql.all("SELECT * FROM trigger_rules ORDER BY name").map(toRule);
  }

  async ruleSecrets(name: string): Promise<RuleSecrets> {
    const r = this.#sql.get("SELECT secrets FROM trigger_rules WHERE name = ?", name);
    if (!r?.secrets) return {};
    return this.#crypto.open<RuleSecrets>(Buffer.from(r.secrets as Uint8Array), `rule-secrets:${name}`);
  }

  async deleteRule(name: string): Promise<boolean> {
    return this.transaction(async () => this.#sql.run("DELETE FROM trigger_rules WHERE name = ?", name) > 0);
  }

  async setEnabled(name: string, enabled: boolean): Promise<boolean> {
    return this.transaction(
      async () =>
        this.#sql.run(
          "UPDATE trigger_rules SET enabled = ?, updated_at = ? WHERE name = ?",
          enabled ? 1 : 0,
          new Date().toISOString(),
          name,
        ) > 0,
    );
  }

  /**
   * Records a schedule firing and queues its execution (unless conditions held it back) in one transaction, so a
   * firing happens once even across restarts.
   */
  async fire(rule: string, at: number, event: TriggerEvent | undefined): Promise<void> {
    const data = event ? await this.#seal(event, randomUUID()) : undefined;
    await this.transaction(async () => {
      this.#sql.run("UPDATE trigger_rules SET last_fired_at = ? WHERE name = ?", at, rule);
      if (data) this.#insert(rule, data, at);
    });
  }

  // ---- executions

  async #seal(event: TriggerEvent, id: string): Promise<{ id: string; sealed: Buffer }> {
    const data: ExecutionData = { event, current: event.targetPath ?? event.path, log: [] };
    return { id, sealed: await this.#crypto.seal(data, `execution:${id}`) };
  }

  #insert(rule: string, data: { id: string; sealed: Buffer }, now: number): void {
    this.#sql.run(
      `INSERT INTO trigger_executions (id, rule, state, step, attempts, due_at, error_code, data, created_at,
         updated_at) VALUES (?, ?, 'pending', 0, 0, ?, NULL, ?, ?, ?)`,
      data.id,
      rule,
      now,
      data.sealed,
      now,
      now,
    );
  }

  /** Queues one execution per rule for `event`. */
  async enqueue(rules: string[], event: TriggerEvent, now = this.#now()): Promise<string[]> {
    const sealed = await Promise.all(rules.map(() => this.#seal(event, randomUUID())));
    await this.transaction(async () => {
      rules.forEach((rule, i) => {
        this.#insert(rule, sealed[i], now);
      });
    });
    return sealed.map((s) => s.id);
  }

  /** Marks up to `limit` due pending executions as running and returns them, oldest first. */
  async claimDue(now: number, limit: number): Promise<Execution[]> {
    const rows = await this.transaction(async () => {
      const due = this.#sql.all(
        "SELECT * FROM trigger_executions WHERE state = 'pending' AND due_at <= ? ORDER BY seq LIMIT ?",
        now,
        limit,
      );
      for (const r of due) {
        this.#sql.run("UPDATE trigger_executions SET state = 'running', updated_at = ? WHERE seq = ?", now, r.seq);
      }
      return due;
    });
    return Promise.all(rows.map((r) => this.#toExecution({ ...r, state: "running" })));
  }

  /** Executions left running by a process that died: back to pending, resuming at their recorded step. */
  async resetRunning(): Promise<number> {
    return this.transaction(async () =>
      this.#sql.run("UPDATE trigger_executions SET state = 'pending' WHERE state = 'running'"),
    );
  }

  async save(e: Execution): Promise<void> {
    const sealed = await this.#crypto.seal(e.data, `execution:${e.id}`);
    await this.transaction(async () => {
      this.#sql.run(
        `UPDATE trigger_executions SET state = ?, step = ?, attempts = ?, due_at = ?, error_code = ?, data = ?,
           updated_at = ? WHERE id = ?`,
        e.state,
        e.step,
        e.attempts,
        e.dueAt,
        e.errorCode,
        sealed,
        this.#now(),
        e.id,
      );
    });
  }

  async get(id: string): Promise<Execution | undefined> {
    const r = this.#sql.get("SELECT * FROM trigger_executions WHERE id = ?", id);
    return r ? this.#toExecution(r) : undefined;
  }

  async history(rule: string, limit = 50): Promise<Execution[]> {
    const rows = this.#sql.all(
      "SELECT * FROM trigger_executions WHERE rule = ? ORDER BY seq DESC LIMIT ?",
      rule,
      limit,
    );
    return Promise.all(rows.map((r) => this.#toExecution(r)));
  }

  async deadLetters(limit = 100): Promise<Execution[]> {
    const rows = this.#sql.all(
      "SELECT * FROM trigger_executions WHERE state = 'dead' ORDER BY seq DESC LIMIT ?",
      limit,
    );
    return Promise.all(rows.map((r) => this.#toExecution(r)));
  }

  /** Puts a dead letter back in the queue, due now, with a fresh attempt budget; it resumes at its failed step. */
  async retry(id: string, now = this.#now()): Promise<void> {
    const changed = await this.transaction(async () =>
      this.#sql.run(
        `UPDATE trigger_executions SET state = 'pending', attempts = 0, due_at = ?, updated_at = ?
         WHERE id = ? AND state = 'dead'`,
        now,
        now,
        id,
      ),
    );
    if (changed === 0) {
      const e = this.#sql.get("SELECT state FROM trigger_executions WHERE id = ?", id);
      if (!e) throw new AtrestError("NOT_FOUND", `no trigger execution ${id}`);
      throw new AtrestError("INVALID_INPUT", `execution ${id} is ${e.state}, not a dead letter`);
    }
  }

  /** Forgets completed executions last touched before `before` (ms); dead letters stay until retried. */
  async prune(before: number): Promise<number> {
    return this.transaction(async () =>
      this.#sql.run("DELETE FROM trigger_executions WHERE state = 'done' AND updated_at < ?", before),
    );
  }

  counts(): Record<ExecutionState, number> {
    const out: Record<ExecutionState, number> = { pending: 0, running: 0, done: 0, dead: 0 };
    for (const r of this.#sql.all("SELECT state, COUNT(*) AS n FROM trigger_executions GROUP BY state")) {
      out[r.state as ExecutionState] = Number(r.n);
    }
    return out;
  }

  async #toExecution(r: Row): Promise<Execution> {
    const id = r.id as string;
    return {
      seq: Number(r.seq),
      id,
      rule: r.rule as string,
      state: r.state as ExecutionState,
      step: Number(r.step),
      attempts: Number(r.attempts),
      dueAt: Number(r.due_at),
      errorCode: (r.error_code as string | null) ?? null,
      createdAt: Number(r.created_at),
      updatedAt: Number(r.updated_at),
      data: await this.#crypto.open<ExecutionData>(Buffer.from(r.data as Uint8Array), `execution:${id}`),
    };
  }
}

function toRule(r: Row): StoredRule {
  return {
    rule: JSON.parse(r.spec as string),
    enabled: Number(r.enabled) === 1,
    lastFiredAt: r.last_fired_at === null ? null : Number(r.last_fired_at),
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
  };
}
