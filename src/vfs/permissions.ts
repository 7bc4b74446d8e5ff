import { PermissionDeniedError } from "../errors.ts";
import { isWithin, normalize } from "./paths.ts";
import type { Permission } from "./types.ts";

/** Per-path permissions: the longest configured prefix containing the path decides; nothing configured = nothing. */
export class Permissions {
  readonly #rules: [string, Set<Permission>][];

  constructor(rules: Record<string, Permission[]>) {
    this.#rules = Object.entries(rules)
      .map(([prefix, perms]) => [normalize(prefix), new Set(perms)] as [string, Set<Permission>])
      .sort((a, b) => b[0].length - a[0].length);
  }

  has(path: string, permission: Permission): boolean {
    for (const [prefix, perms] of this.#rules) {
      if (isWithin(path, prefix)) return perms.has(permission);
    }
    return false;
  }

  require(path: string, permission: Permission): void {
    if (!this.has(path, permission)) throw new PermissionDeniedError(permission, path);
  }
}
