// Charts as plain SVG (no chart library): stacked bars over time buckets and a horizontal bar list. Each chart has a
// title and a text summary for screen readers, and the numbers are also in a table beside it.

export interface Series {
  label: string;
  class: string;
  values: number[];
}

export function BarChart(props: { title: string; buckets: string[]; series: Series[]; height?: number }) {
  const { buckets, series } = props;
  const W = 420;
  const H = props.height ?? 180;
  const left = 34;
  const bottom = 22;
  const totals = buckets.map((_, i) => series.reduce((a, s) => a + (s.values[i] ?? 0), 0));
  const max = Math.max(1, ...totals);
  const bw = (W - left - 4) / Math.max(1, buckets.length);
  const y = (v: number) => ((H - bottom - 6) * v) / max;
  const every = Math.ceil(buckets.length / 6);
  const summary = series.map((s) => `${s.label}: ${s.values.reduce((a, b) => a + b, 0)}`).join(", ");
  const id = props.title.replace(/\W+/g, "-").toLowerCase();
  return (
    <figure class="card">
      <figcaption id={`${id}-t`}>
        <strong>{props.title}</strong> <span class="muted">({summary})</span>
      </figcaption>
      <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-labelledby={`${id}-t`}>
        <title>{`${props.title} (${summary})`}</title>
        <line class="axis" x1={left} y1={H - bottom} x2={W} y2={H - bottom} />
        <line class="axis" x1={left} y1={4} x2={left} y2={H - bottom} />
        <text x={left - 4} y={12} text-anchor="end">
          {max}
        </text>
        <text x={left - 4} y={H - bottom} text-anchor="end">
          0
        </text>
        {buckets.map((b, i) => {
          let base = H - bottom;
          return (
            <g key={b}>
              {series.map((s) => {
                const h = y(s.values[i] ?? 0);
                base -= h;
                return h > 0 ? (
                  <rect
                    key={s.label}
                    class={s.class}
                    x={left + i * bw + 1}
                    y={base}
                    width={Math.max(1, bw - 2)}
                    height={h}
                  >
                    <title>
                      {b} {s.label}: {s.values[i]}
                    </title>
                  </rect>
                ) : null;
              })}
              {i % every === 0 && (
                <text x={left + i * bw + bw / 2} y={H - 4} text-anchor="middle">
                  {b}
                </text>
              )}
            </g>
          );
        })}
      </svg>
      <p class="legend">
        {series.map((s) => (
          <span key={s.label} class="legend-item">
            <svg width="12" height="12" aria-hidden="true">
              <rect class={s.class} width="12" height="12" />
            </svg>{" "}
            {s.label}
          </span>
        ))}
      </p>
    </figure>
  );
}

export function HBars(props: {
  title: string;
  rows: { label: string; value: number; class?: string }[];
  unit?: string;
}) {
  const max = Math.max(1, ...props.rows.map((r) => r.value));
  const W = 420;
  const rowH = 24;
  const labelW = 150;
  const H = Math.max(rowH, props.rows.length * rowH);
  const id = props.title.replace(/\W+/g, "-").toLowerCase();
  return (
    <figure class="card">
      <figcaption id={`${id}-t`}>
        <strong>{props.title}</strong>
      </figcaption>
      {props.rows.length === 0 ? (
        <p class="muted">None.</p>
      ) : (
        <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-labelledby={`${id}-t`}>
          <title>{`${props.title}: ${props.rows.map((r) => `${r.label} ${r.value}`).join(", ")}`}</title>
          {props.rows.map((r, i) => (
            <g key={r.label}>
              <text x={labelW - 6} y={i * rowH + 17} text-anchor="end">
                {r.label.length > 22 ? `${r.label.slice(0, 21)}…` : r.label}
              </text>
              <rect
                class={r.class ?? "bar-ok"}
                x={labelW}
                y={i * rowH + 3}
                height={rowH - 6}
                width={Math.max(1, ((W - labelW - 40) * r.value) / max)}
              >
                <title>
                  {r.label}: {r.value}
                </title>
              </rect>
              <text x={labelW + ((W - labelW - 40) * r.value) / max + 6} y={i * rowH + 17}>
                {r.value}
                {props.unit ?? ""}
              </text>
            </g>
          ))}
        </svg>
      )}
    </figure>
  );
}
