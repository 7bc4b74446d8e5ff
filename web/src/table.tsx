// A plain data table: a caption for screen readers, column headers, and an empty-state row.
import type { ComponentChildren } from "preact";

export interface Column<T> {
  label: string;
  cell: (row: T) => ComponentChildren;
  class?: string;
}

export function DataTable<T>(props: {
  caption: string;
  columns: Column<T>[];
  rows: T[] | undefined;
  rowKey: (row: T) => string;
  empty?: string;
  rowClass?: (row: T) => string | undefined;
}) {
  const { columns, rows } = props;
  return (
    <div class="table-wrap">
      <table>
        <caption class="sr-only">{props.caption}</caption>
        <thead>
          <tr>
            {columns.map((c) => (
              <th key={c.label} scope="col" class={c.class}>
                {c.label}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {(rows ?? []).map((r) => (
            <tr key={props.rowKey(r)} class={props.rowClass?.(r)} data-key={props.rowKey(r)}>
              {columns.map((c) => (
                <td key={c.label} class={c.class}>
                  {c.cell(r)}
                </td>
              ))}
            </tr>
          ))}
          {rows && rows.length === 0 && (
            <tr>
              <td colSpan={columns.length} class="empty">
                {props.empty ?? "Nothing yet."}
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </div>
  );
}
