// The one SQLite connection and what every aggregate file shares: the statement cache and the column decoders.
import type { DatabaseSync, SQLInputValue, StatementSync } from "node:sqlite";

export type Row = Record<string, SQLInputValue>;

/** Statements on the store's connection. Each aggregate file builds its operations over one of these. */
export interface Sql {
  get(sql: string, ...params: SQLInputValue[]): Row | undefined;
  all(sql: string, ...params: SQLInputValue[]): Row[];
  /** Returns the number of changed rows. */
  run(sql: string, ...params: SQLInputValue[]): number;
}

/** Compiling a statement costs more than running these small queries; the set of SQL strings is fixed. */
export function statementCache(db: DatabaseSync): Sql {
  const statements = new Map<string, StatementSync>();
  const prepare = (sql: string): StatementSync => {
    let statement = statements.get(sql);
    if (!statement) {
      statement = db.prepare(sql);
      statements.set(sql, statement);
    }
    return statement;
  };
  return {
    get: (sql, ...params) => prepare(sql).get(...params) as Row | undefined,
    all: (sql, ...params) => prepare(sql).all(...params) as Row[],
    run: (sql, ...params) => Number(prepare(sql).run(...params).changes),
  };
}

export function buf(v: unknown): Buffer {
  return Buffer.from(v as Uint8Array);
}
