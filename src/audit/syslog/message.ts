// One syslog message per audit record, in the destination's format, and its framing on the wire.
//
// rfc5424: the RFC 5424 encoder's message as is (SD-PARAM seq). cef / leef / ecs: the payload is the MSG of an
// RFC 5424 header without structured data (`<PRI>1 TIMESTAMP HOST atrest PROCID ACTION - CEF:0|…`), the way
// ArcSight, QRadar and Elastic expect CEF / LEEF / JSON carried over syslog. Every format carries the record's
// sequence number in the hash-chained log (CEF externalId, LEEF seq, ECS event.sequence, SD seq) so a SIEM can
// de-duplicate the rare resend (docs/audit.md "Delivery").
//
// Framing: TCP and TLS use octet counting (RFC 6587 §3.4.1, which RFC 5425 §4.3 mandates for TLS):
// `MSG-LEN SP SYSLOG-MSG`, MSG-LEN in octets; UDP sends one message per datagram (RFC 5426), unframed.
import { encodeCef } from "../encoders/cef.ts";
import type { EncoderOptions } from "../encoders/common.ts";
import { encodeEcsJson } from "../encoders/ecs-json.ts";
import { encodeLeef } from "../encoders/leef.ts";
import { encodeRfc5424, headerField, syslogSeverity } from "../encoders/rfc5424.ts";
import { type AuditRecord, severityOf } from "../types.ts";

export type Format = "cef" | "leef" | "rfc5424" | "ecs";
export const FORMATS: readonly Format[] = ["cef", "leef", "rfc5424", "ecs"];

export interface MessageOptions extends EncoderOptions {
  format: Format;
  hostname: string;
  appName?: string;
  procId?: number;
  /** Syslog facility 0–23, default 13 (log audit). */
  facility?: number;
  /** LEEF attribute delimiter (one character, default tab). */
  leefDelimiter?: string;
}

/** The syslog message for one record (no framing). */
export function syslogMessage(r: AuditRecord, seq: number, o: MessageOptions): string {
  const meta = { seq };
  if (o.format === "rfc5424") {
    return encodeRfc5424(
      r,
      { hostname: o.hostname, appName: o.appName ?? "atrest", procId: o.procId, facility: o.facility },
      meta,
    );
  }
  const payload =
    o.format === "cef"
      ? encodeCef(r, o, meta)
      : o.format === "leef"
        ? encodeLeef(r, { ...o, delimiter: o.leefDelimiter }, meta)
        : encodeEcsJson(r, meta);
  const pri = (o.facility ?? 13) * 8 + syslogSeverity(severityOf(r));
  return `<${pri}>1 ${headerField(r.time, 64)} ${headerField(o.hostname, 255)} ${headerField(o.appName ?? "atrest", 48)} ${headerField(o.procId, 128)} ${headerField(r.action, 32)} - ${payload}`;
}

/** RFC 6587 octet-counted frame (`MSG-LEN SP SYSLOG-MSG`, MSG-LEN in UTF-8 octets), as a string to batch. */
export function octetFrame(message: string): string {
  return `${Buffer.byteLength(message, "utf8")} ${message}`;
}
