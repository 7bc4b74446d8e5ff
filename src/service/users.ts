import { randomUUID } from "node:crypto";
import { AtrestError } from "../errors.ts";
import { assertKeyName } from "../kms/api/key-ref.ts";
import { type MetaStore, ROLES, type Role, type UserRow } from "../store/types.ts";
import type { Permission } from "../vfs/types.ts";
import { hashPassword } from "./passwords.ts";
import { parseAuthorizedKeys } from "./public-keys.ts";

export const ALL_PERMISSIONS: Permission[] = ["list", "download", "upload", "overwrite", "delete", "rename", "mkdir"];

const NAME = /^[a-z_][a-z0-9._-]{0,31}$/;

export interface NewUser {
  name: string;
  password?: string;
  publicKeys?: string[];
  home?: string;
  groups?: string[];
  permissions?: Record<string, Permission[]>;
  quotaBytes?: number;
  quotaFiles?: number;
  role?: Role;
  /** KEK name for this user's files (DESIGN §3 mapping). */
  kek?: string;
  /** Logs in through an identity provider (OIDC): no password or key needed. */
  external?: boolean;
  /** Password logins need a TOTP code. */
  requireTotp?: boolean;
}

/** Group names follow the user-name rule (they appear in paths of policies and in audit records). */
export function validateGroupName(name: string): void {
  if (!NAME.test(name)) {
    throw new AtrestError(
      "INVALID_INPUT",
      `invalid group name "${name}": use 1-32 of a-z 0-9 . _ - starting with a letter or _`,
    );
  }
}

export function validateRole(role: string): asserts role is Role {
  if (!ROLES.includes(role as Role)) {
    throw new AtrestError("INVALID_INPUT", `unknown role "${role}": use one of ${ROLES.join(", ")}`);
  }
}

export function validateUserName(name: string): void {
  if (!NAME.test(name)) {
    throw new AtrestError(
      "INVALID_INPUT",
      `invalid user name "${name}": use 1-32 of a-z 0-9 . _ - starting with a letter or _`,
    );
  }
}

export function validatePermissions(perms: Record<string, Permission[]>): void {
  for (const [prefix, list] of Object.entries(perms)) {
    if (!prefix.startsWith("/")) throw new AtrestError("INVALID_INPUT", `permission path must be absolute: ${prefix}`);
    for (const p of list) {
      if (!ALL_PERMISSIONS.includes(p)) throw new AtrestError("INVALID_INPUT", `unknown permission "${p}"`);
    }
  }
}

export function validateHome(home: string): void {
  if (!home.startsWith("/") || home.includes("\0")) throw new AtrestError("INVALID_INPUT", `invalid home ${home}`);
}

export function validateQuotas(...quotas: (number | undefined)[]): void {
  for (const q of quotas) {
    if (q !== undefined && (!Number.isSafeInteger(q) || q < 0)) {
      throw new AtrestError("INVALID_INPUT", "quotas must be non-negative integers (0 = unlimited)");
    }
  }
}

export async function buildUser(input: NewUser): Promise<UserRow> {
  validateUserName(input.name);
  const publicKeys = input.publicKeys ?? [];
  parseAuthorizedKeys(publicKeys.join("\n"));
  if (!input.password && publicKeys.length === 0 && !input.external) {
    throw new AtrestError("INVALID_INPUT", "a user needs a password or at least one public key");
  }
  for (const g of input.groups ?? []) validateGroupName(g);
  if (input.role !== undefined) validateRole(input.role);
  if (input.kek !== undefined) assertKeyName(input.kek);
  const permissions = input.permissions ?? { "/": ALL_PERMISSIONS };
  validatePermissions(permissions);
  const home = input.home ?? `/${input.name}`;
  validateHome(home);
  validateQuotas(input.quotaBytes, input.quotaFiles);
  return {
    id: randomUUID(),
    name: input.name,
    passwordHash: input.password ? await hashPassword(input.password) : null,
    publicKeys,
    home,
    permissions,
    groups: input.groups ?? [],
    role: input.role ?? "user",
    kek: input.kek ?? null,
    ...(input.requireTotp ? { requireTotp: true } : {}),
    quotaBytes: input.quotaBytes ?? 0,
    quotaFiles: input.quotaFiles ?? 0,
    usedBytes: 0,
    usedFiles: 0,
    createdAt: new Date().toISOString(),
  };
}

export async function requireUser(store: MetaStore, name: string): Promise<UserRow> {
  const user = await store.getUser(name);
  if (!user) throw new AtrestError("NOT_FOUND", `no such user: ${name}`);
  return user;
}
