// The shape of one KMS API route (routes.ts and app-routes.ts hold the tables; server.ts matches and runs them).

import type * as z from "zod";
import type { KmsCaller } from "../api/caller.ts";
import type { KmsService } from "../service.ts";

export type Method = "GET" | "POST" | "PUT" | "DELETE";

export interface SealControl {
  status(): unknown;
  unseal(caller: KmsCaller, share: string): Promise<unknown>;
  resetUnseal(caller: KmsCaller): unknown;
  seal(caller: KmsCaller): unknown;
}

export interface RouteContext {
  caller: KmsCaller;
  params: Readonly<Record<string, string>>;
  query: URLSearchParams;
  body: unknown;
  /** The unsealed service; throws SealedError (503) while sealed. */
  service(): KmsService;
  seal: SealControl;
}

export interface Route {
  method: Method;
  path: string;
  /** Label for metrics and logs. */
  op: string;
  /** One line for the OpenAPI document (docs/api/kms-openapi.json, made by openapi.ts). */
  summary?: string;
  /** The request body's schema, for the OpenAPI document (the handler parses with it). */
  body?: z.ZodType;
  /** The success body's shape, for the OpenAPI document. */
  response?: z.ZodType;
  handler(ctx: RouteContext): unknown;
}
