// What every aggregate file shares, whichever driver runs it: the statement interface and the column decoders. The
// SQL is written once, in the subset SQLite and PostgreSQL both speak (`?` placeholders, which the PostgreSQL driver
// numbers); the few places the dialects differ branch on `sql.dialect`.

export type Dialect = "sqlite" | "postgres";

/** A parameter: text, a number, a blob, or NULL. */
export type Value = string | number | bigint | null | Uint8Array;

export type Row = Record<string, unknown>;

/** Statements on one connection (or the pool, for reads outside a transaction). */
export interface Sql {
  readonly dialect: Dialect;
  get(sql: string, ...params: Value[]): Promise<Row | undefined>;
  all(sql: string, ...params: Value[]): Promise<Row[]>;
  /** Resolves to the number of changed rows. */
  run(sql: string, ...params: Value[]): Promise<number>;
}

export function buf(v: unknown): Buffer {
  return Buffer.isBuffer(v) ? v : Buffer.from(v as Uint8Array);
}

/** `sql` for one transaction: refuses use after the transaction ended (its writes would land outside any). */
export function bound(sql: Sql, isOpen: () => boolean): Sql {
  const open = (): Sql => {
    if (!isOpen()) throw new Error("store transaction handle used after its transaction ended");
    return sql;
  };
  return {
    dialect: sql.dialect,
    get: async (q, ...p) => open().get(q, ...p),
    all: async (q, ...p) => open().all(q, ...p),
    run: async (q, ...p) => open().run(q, ...p),
  };
}
