// Durable state of the trigger engine, kept by the metadata store (its trigger aggregate): rules, the execution queue, per-rule history and
// dead letters (executions in state `dead`). Rule specs are configuration and stay readable; their secrets (webhook
// keys, SMTP passwords) and everything an execution carries (event paths, users, errors) are sealed under the events
// key, itself wrapped by the key manager, so the database alone reveals no file name (DESIGN §7).
import { randomUUID } from "node:crypto";
import { AtrestError } from "../errors.ts";
import type { ExecutionRow, ExecutionState, MetaStore, TriggerRuleRow } from "../store/types.ts";
import type { EventsCrypto } from "./crypto.ts";
import type { TriggerEvent } from "./event.ts";
import type { Rule } from "./schema.ts";

export type { ExecutionState };

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

/** The domain side of the trigger tables: sealing, existence rules, decoding. The queries are the store's. */
export class TriggerStore {
  readonly #store: MetaStore;
  readonly #crypto: EventsCrypto;
  readonly #now: () => number;

  constructor(store: MetaStore, crypto: EventsCrypto, now: () => number = Date.now) {
    this.#store = store;
    this.#crypto = crypto;
    this.#now = now;
  }

  // ---- rules

  async putRule(rule: Rule, secrets: RuleSecrets, replace: boolean): Promise<void> {
    const sealed =
      Object.keys(secrets).length > 0 ? await this.#crypto.seal(secrets, `rule-secrets:${rule.name}`) : null;
    const now = new Date().toISOString();
    await this.#store.transaction(async (tx) => {
      const existing = await tx.getTriggerRule(rule.name);
      if (existing && !replace) throw new AtrestError("EXISTS", `trigger rule ${rule.name} already exists`);
      await tx.putTriggerRule({
        name: rule.name,
        spec: JSON.stringify(rule),
        secrets: sealed,
        enabled: rule.enabled,
        createdAt: now,
        updatedAt: now,
      });
    });
  }

  async getRule(name: string): Promise<StoredRule | undefined> {
    const r = await this.#store.getTriggerRule(name);
    return r ? toRule(r) : undefined;
  }

  async listRules(): Promise<StoredRule[]> {
    return (await this.#store.listTriggerRules()).map(toRule);
  }

  async ruleSecrets(name: string): Promise<RuleSecrets> {
    const r = await this.#store.getTriggerRule(name);
    if (!r?.secrets) return {};
    return this.#crypto.open<RuleSecrets>(r.secrets, `rule-secrets:${name}`);
  }

  async deleteRule(name: string): Promise<boolean> {
    return this.#store.transaction((tx) => tx.deleteTriggerRule(name));
  }

  async setEnabled(name: string, enabled: boolean): Promise<boolean> {
    return this.#store.transaction((tx) => tx.setTriggerRuleEnabled(name, enabled, new Date().toISOString()));
  }

  /**
   * Records a schedule firing and queues its execution (unless conditions held it back) in one transaction, so a
   * firing happens once even across restarts; and not at all when the rule's last firing is no longer `seen` (what
   * the scheduler decided on): another node on the same store fired this slot meanwhile. Returns whether it fired.
   */
  async fire(rule: string, at: number, event: TriggerEvent | undefined, seen?: number | null): Promise<boolean> {
    const data = event ? await this.#seal(event, randomUUID()) : undefined;
    return this.#store.transaction(async (tx) => {
      if (seen !== undefined && ((await tx.getTriggerRule(rule))?.lastFiredAt ?? null) !== seen) return false;
      await tx.setTriggerRuleFired(rule, at);
      if (data) await tx.insertExecution({ id: data.id, rule, data: data.sealed, createdAt: at });
      return true;
    });
  }

  // ---- executions

  async #seal(event: TriggerEvent, id: string): Promise<{ id: string; sealed: Buffer }> {
    const data: ExecutionData = { event, current: event.targetPath ?? event.path, log: [] };
    return { id, sealed: await this.#crypto.seal(data, `execution:${id}`) };
  }

  /** Queues one execution per rule for `event`. */
  async enqueue(rules: string[], event: TriggerEvent, now = this.#now()): Promise<string[]> {
    const sealed = await Promise.all(rules.map(() => this.#seal(event, randomUUID())));
    await this.#store.transaction(async (tx) => {
      for (const [i, rule] of rules.entries()) {
        const s = sealed[i] as (typeof sealed)[number];
        await tx.insertExecution({ id: s.id, rule, data: s.sealed, createdAt: now });
      }
    });
    return sealed.map((s) => s.id);
  }

  /** Marks up to `limit` due pending executions as running and returns them, oldest first. */
  async claimDue(now: number, limit: number): Promise<Execution[]> {
    const rows = await this.#store.transaction((tx) => tx.claimExecutions(now, limit));
    return Promise.all(rows.map((r) => this.#toExecution(r)));
  }

  /** Executions left running by a process that died: back to pending, resuming at their recorded step. */
  async resetRunning(): Promise<number> {
    return this.#store.transaction((tx) => tx.resetRunningExecutions());
  }

  async save(e: Execution): Promise<void> {
    const sealed = await this.#crypto.seal(e.data, `execution:${e.id}`);
    await this.#store.transaction((tx) =>
      tx.updateExecution({
        id: e.id,
        state: e.state,
        step: e.step,
        attempts: e.attempts,
        dueAt: e.dueAt,
        errorCode: e.errorCode,
        data: sealed,
        updatedAt: this.#now(),
      }),
    );
  }

  async get(id: string): Promise<Execution | undefined> {
    const r = await this.#store.getExecution(id);
    return r ? this.#toExecution(r) : undefined;
  }

  async history(rule: string, limit = 50): Promise<Execution[]> {
    return Promise.all((await this.#store.executionHistory(rule, limit)).map((r) => this.#toExecution(r)));
  }

  async deadLetters(limit = 100): Promise<Execution[]> {
    return Promise.all((await this.#store.deadExecutions(limit)).map((r) => this.#toExecution(r)));
  }

  /** Puts a dead letter back in the queue, due now, with a fresh attempt budget; it resumes at its failed step. */
  async retry(id: string, now = this.#now()): Promise<void> {
    const changed = await this.#store.transaction((tx) => tx.retryDeadExecution(id, now));
    if (!changed) {
      const e = await this.#store.getExecution(id);
      if (!e) throw new AtrestError("NOT_FOUND", `no trigger execution ${id}`);
      throw new AtrestError("INVALID_INPUT", `execution ${id} is ${e.state}, not a dead letter`);
    }
  }

  /** Forgets completed executions last touched before `before` (ms); dead letters stay until retried. */
  async prune(before: number): Promise<number> {
    return this.#store.transaction((tx) => tx.pruneExecutions(before));
  }

  counts(): Promise<Record<ExecutionState, number>> {
    return this.#store.executionCounts();
  }

  async #toExecution(r: ExecutionRow): Promise<Execution> {
    const { data, ...rest } = r;
    return { ...rest, data: await this.#crypto.open<ExecutionData>(data, `execution:${r.id}`) };
  }
}

function toRule(r: TriggerRuleRow): StoredRule {
  return {
    rule: JSON.parse(r.spec),
    enabled: r.enabled,
    lastFiredAt: r.lastFiredAt,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  };
}
