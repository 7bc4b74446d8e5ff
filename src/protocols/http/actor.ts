import type { Actor } from "../../service/actor.ts";
import type { Principal } from "./routes.ts";

/** The service's Actor for an HTTPS caller: the user, their current role, protocol http, address and session. */
export function actorOf(p: Principal): Actor {
  return { user: p.user, role: p.role, protocol: "http", sourceIp: p.sourceIp, sessionId: p.sessionId };
}
