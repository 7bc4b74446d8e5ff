import type { RowSealer } from "../sealing.ts";
import type { ExecutionRow, ExecutionState, TriggerReads, TriggerRuleRow, TriggerWrites } from "../types.ts";
import { buf, type Row, type Sql } from "./sql.ts";

// A rule's spec (paths, users, URLs it names) is sealed under the row key, AAD = the rule's name (migration 16).
function toRule(s: RowSealer, r: Row): TriggerRuleRow {
  const name = r.name as string;
  return {
    name,
    spec: s.open("rule", name, buf(r.spec)).toString("utf8"),
    secrets: r.secrets === null ? null : buf(r.secrets),
    enabled: Number(r.enabled) === 1,
    lastFiredAt: r.last_fired_at === null ? null : Number(r.last_fired_at),
    createdAt: r.created_at as string,
    updatedAt: r.updated_at as string,
  };
}

function toExecution(r: Row): ExecutionRow {
  return {
    seq: Number(r.seq),
    id: r.id as string,
    rule: r.rule as string,
    state: r.state as ExecutionState,
    step: Number(r.step),
    attempts: Number(r.attempts),
    dueAt: Number(r.due_at),
    errorCode: (r.error_code as string | null) ?? null,
    data: buf(r.data),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

/**
 * Several nodes on one store (PostgreSQL): a claimed execution is leased to `owner`; one whose owner stopped
 * heartbeating (cluster_nodes.seen_at before `liveAfter()`, ms) goes back to pending for any node to claim.
 */
export interface ExecutionLease {
  owner: string;
  liveAfter(): number;
}

const ORPHANED = `state = 'running' AND (lease_owner IS NULL
  OR lease_owner NOT IN (SELECT id FROM cluster_nodes WHERE seen_at >= ?))`;

export function triggers(sql: Sql, sealer: () => RowSealer, lease?: ExecutionLease): TriggerReads & TriggerWrites {
  const toRuleRow = (r: Row): TriggerRuleRow => toRule(sealer(), r);
  return {
    async getTriggerRule(name) {
      const r = await sql.get("SELECT * FROM trigger_rules WHERE name = ?", name);
      return r ? toRuleRow(r) : undefined;
    },
    async listTriggerRules() {
      return (await sql.all("SELECT * FROM trigger_rules ORDER BY name")).map(toRuleRow);
    },
    async getExecution(id) {
      const r = await sql.get("SELECT * FROM trigger_executions WHERE id = ?", id);
      return r ? toExecution(r) : undefined;
    },
    async executionHistory(rule, limit) {
      return (
        await sql.all("SELECT * FROM trigger_executions WHERE rule = ? ORDER BY seq DESC LIMIT ?", rule, limit)
      ).map(toExecution);
    },
    async deadExecutions(limit) {
      return (
        await sql.all("SELECT * FROM trigger_executions WHERE state = 'dead' ORDER BY seq DESC LIMIT ?", limit)
      ).map(toExecution);
    },
    async executionCounts() {
      const out: Record<ExecutionState, number> = { pending: 0, running: 0, done: 0, dead: 0 };
      for (const r of await sql.all("SELECT state, COUNT(*) AS n FROM trigger_executions GROUP BY state")) {
        out[r.state as ExecutionState] = Number(r.n);
      }
      return out;
    },

    async putTriggerRule(rule) {
      await sql.run(
        `INSERT INTO trigger_rules (name, spec, secrets, enabled, last_fired_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, NULL, ?, ?)
         ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, secrets = excluded.secrets,
           enabled = excluded.enabled, last_fired_at = NULL, updated_at = excluded.updated_at`,
        rule.name,
        sealer().seal("rule", rule.name, Buffer.from(rule.spec, "utf8")),
        rule.secrets,
        rule.enabled ? 1 : 0,
        rule.createdAt,
        rule.updatedAt,
      );
    },
    async deleteTriggerRule(name) {
      return (await sql.run("DELETE FROM trigger_rules WHERE name = ?", name)) > 0;
    },
    async setTriggerRuleEnabled(name, enabled, updatedAt) {
      return (
        (await sql.run(
          "UPDATE trigger_rules SET enabled = ?, updated_at = ? WHERE name = ?",
          enabled ? 1 : 0,
          updatedAt,
          name,
        )) > 0
      );
    },
    async setTriggerRuleFired(name, at) {
      await sql.run("UPDATE trigger_rules SET last_fired_at = ? WHERE name = ?", at, name);
    },
    async insertExecution(e) {
      await sql.run(
        `INSERT INTO trigger_executions (id, rule, state, step, attempts, due_at, error_code, data, created_at,
           updated_at) VALUES (?, ?, 'pending', 0, 0, ?, NULL, ?, ?, ?)`,
        e.id,
        e.rule,
        e.createdAt,
        e.data,
        e.createdAt,
        e.createdAt,
      );
    },
    async claimExecutions(now, limit) {
      if (lease) {
        await sql.run(
          `UPDATE trigger_executions SET state = 'pending', lease_owner = NULL WHERE ${ORPHANED}`,
          lease.liveAfter(),
        );
        const claimed = await sql.all(
          `UPDATE trigger_executions SET state = 'running', updated_at = ?, lease_owner = ?
             WHERE seq IN (SELECT seq FROM trigger_executions WHERE state = 'pending' AND due_at <= ?
               ORDER BY seq LIMIT ?)
             RETURNING *`,
          now,
          lease.owner,
          now,
          limit,
        );
        return claimed.map(toExecution).sort((a, b) => a.seq - b.seq);
      }
      const due = await sql.all(
        "SELECT * FROM trigger_executions WHERE state = 'pending' AND due_at <= ? ORDER BY seq LIMIT ?",
        now,
        limit,
      );
      for (const r of due) {
        await sql.run(
          "UPDATE trigger_executions SET state = 'running', updated_at = ? WHERE seq = ?",
          now,
          r.seq as number,
        );
      }
      return due.map((r) => ({ ...toExecution(r), state: "running", updatedAt: now }));
    },
    async resetRunningExecutions() {
      if (lease) {
        return await sql.run(
          `UPDATE trigger_executions SET state = 'pending', lease_owner = NULL WHERE lease_owner = ? AND state = 'running'
             OR ${ORPHANED}`,
          lease.owner,
          lease.liveAfter(),
        );
      }
      return await sql.run("UPDATE trigger_executions SET state = 'pending' WHERE state = 'running'");
    },
    async updateExecution(e) {
      await sql.run(
        `UPDATE trigger_executions SET state = ?, step = ?, attempts = ?, due_at = ?, error_code = ?, data = ?,
           updated_at = ? WHERE id = ?`,
        e.state,
        e.step,
        e.attempts,
        e.dueAt,
        e.errorCode,
        e.data,
        e.updatedAt,
        e.id,
      );
    },
    async retryDeadExecution(id, now) {
      return (
        (await sql.run(
          `UPDATE trigger_executions SET state = 'pending', attempts = 0, due_at = ?, updated_at = ?
           WHERE id = ? AND state = 'dead'`,
          now,
          now,
          id,
        )) > 0
      );
    },
    async pruneExecutions(before) {
      return await sql.run("DELETE FROM trigger_executions WHERE state = 'done' AND updated_at < ?", before);
    },
  };
}
