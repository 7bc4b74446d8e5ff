import assert from "node:assert/strict";
import { test } from "node:test";
import { PROMETHEUS_CONTENT_TYPE, Registry } from "../../src/metrics/registry.ts";
import { startMetricsServer } from "../../src/metrics/server.ts";

test("counters, gauges and label escaping in text format 0.0.4", () => {
  const r = new Registry();
  const c = r.counter("atrest_events_total", "Events sent.\nSecond line \\ here", ["dest"]);
  const g = r.gauge("atrest_up", "Up.");
  c.inc({ dest: 'a"b\\c\nd' });
  c.inc({ dest: 'a"b\\c\nd' }, 2.5);
  c.inc({ dest: "plain" });
  g.set(undefined, Number.POSITIVE_INFINITY);
  assert.equal(
    r.render(),
    [
      "# HELP atrest_events_total Events sent.\\nSecond line \\\\ here",
      "# TYPE atrest_events_total counter",
      'atrest_events_total{dest="a\\"b\\\\c\\nd"} 3.5',
      'atrest_events_total{dest="plain"} 1',
      "# HELP atrest_up Up.",
      "# TYPE atrest_up gauge",
      "atrest_up +Inf",
      "",
    ].join("\n"),
  );
  assert.equal(c.get({ dest: "plain" }), 1);
  g.dec(undefined, Number.POSITIVE_INFINITY);
  assert.match(r.render(), /^atrest_up NaN$/m);
});

test("histograms are cumulative with +Inf, _sum and _count", () => {
  const r = new Registry();
  const h = r.histogram("op_seconds", "Latency.", { labelNames: ["op"], buckets: [0.1, 1] });
  for (const v of [0.05, 0.1, 0.5, 3]) h.observe({ op: "unwrap" }, v);
  assert.equal(
    r.render(),
    [
      "# HELP op_seconds Latency.",
      "# TYPE op_seconds histogram",
      'op_seconds_bucket{op="unwrap",le="0.1"} 2',
      'op_seconds_bucket{op="unwrap",le="1"} 3',
      'op_seconds_bucket{op="unwrap",le="+Inf"} 4',
      'op_seconds_sum{op="unwrap"} 3.65',
      'op_seconds_count{op="unwrap"} 4',
      "",
    ].join("\n"),
  );
  const plain = r.histogram("plain_seconds", "No labels.", { buckets: [1] });
  plain.observe(undefined, 2);
  assert.match(
    r.render(),
    /^plain_seconds_bucket\{le="1"\} 0\nplain_seconds_bucket\{le="\+Inf"\} 1\nplain_seconds_sum 2$/m,
  );
});

test("bad names, labels and values are refused", () => {
  const r = new Registry();
  assert.throws(() => r.counter("1bad", "x"), /invalid metric name/);
  assert.throws(() => r.counter("ok", "x", ["__reserved"]), /invalid label name/);
  assert.throws(() => r.histogram("h", "x", { labelNames: ["le"] }), /invalid label name/);
  assert.throws(() => r.histogram("h2", "x", { buckets: [1, 1] }), /strictly increasing/);
  const c = r.counter("c", "x", ["a"]);
  assert.throws(() => c.inc({ b: "1" }), /takes labels \{a\}/);
  assert.throws(() => c.inc({ a: "1" }, -1), /can only go up/);
  assert.throws(() => r.gauge("c", "again"), /already registered/);
});

test("collectors refresh gauges before each render; served over HTTP", async () => {
  const r = new Registry();
  const g = r.gauge("backlog", "Backlog.", ["dest"]);
  let n = 0;
  r.onCollect(() => g.set({ dest: "siem" }, ++n));
  const server = await startMetricsServer(r, "127.0.0.1", 0);
  try {
    const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), PROMETHEUS_CONTENT_TYPE);
    assert.match(await res.text(), /^backlog\{dest="siem"\} 1$/m);
    assert.match(r.render(), /^backlog\{dest="siem"\} 2$/m);
    assert.equal((await fetch(`http://127.0.0.1:${server.port}/other`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${server.port}/metrics`, { method: "POST" })).status, 405);
  } finally {
    await server.close();
  }
});
