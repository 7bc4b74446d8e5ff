// Liveness, readiness (the metadata store and the key manager answer) and Prometheus metrics.
import { z } from "zod";
import { PROMETHEUS_CONTENT_TYPE, type Registry } from "../../metrics/registry.ts";
import { errors, type Route, route } from "./routes.ts";

export interface HealthCheck {
  name: string;
  /** Resolves when the dependency answers; the message of a rejection is not shown (only the check's name). */
  check(): Promise<void>;
}

const CheckResult = z.object({ name: z.string(), ok: z.boolean(), ms: z.number() });
const Ready = z
  .object({ status: z.enum(["ready", "unavailable"]), checks: z.array(CheckResult) })
  .meta({ id: "Ready" });

export function healthRoutes(o: { checks?: HealthCheck[]; registry?: Registry }): Route[] {
  return [
    route(
      {
        method: "GET",
        url: "/healthz",
        operationId: "healthz",
        summary: "Liveness: the process serves requests",
        tags: ["meta"],
        auth: "public",
        responses: { 200: { description: "alive", schema: z.object({ status: z.literal("ok") }) } },
      },
      async () => ({ status: "ok" }),
    ),
    route(
      {
        method: "GET",
        url: "/readyz",
        operationId: "readyz",
        summary: "Readiness: the metadata store and the key manager answer",
        tags: ["meta"],
        auth: "public",
        responses: {
          200: { description: "ready", schema: Ready },
          503: { description: "a dependency does not answer", schema: Ready },
        },
      },
      async ({ reply }) => {
        const checks = await Promise.all(
          (o.checks ?? []).map(async (c) => {
            const t = performance.now();
            const ok = await c.check().then(
              () => true,
              () => false,
            );
            return { name: c.name, ok, ms: Math.round(performance.now() - t) };
          }),
        );
        const ready = checks.every((c) => c.ok);
        reply.code(ready ? 200 : 503);
        return { status: ready ? "ready" : "unavailable", checks };
      },
    ),
    route(
      {
        method: "GET",
        url: "/metrics",
        operationId: "metrics",
        summary: "Prometheus metrics (audit shipping, defender, transfers)",
        tags: ["meta"],
        auth: { roles: ["admin", "auditor"], scope: "metrics" },
        responses: {
          200: { description: "Prometheus text format", contentType: PROMETHEUS_CONTENT_TYPE },
          ...errors(401, 403),
        },
      },
      async ({ reply }) => {
        reply.type(PROMETHEUS_CONTENT_TYPE);
        return o.registry?.render() ?? "";
      },
    ),
  ];
}
