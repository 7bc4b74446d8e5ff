// @peculiar/x509 resolves its algorithm providers through tsyringe, which refuses to load unless a Reflect metadata
// API exists (normally the `reflect-metadata` package, not installed here). x509 only stores and reads plain
// metadata, so this minimal implementation of the three functions tsyringe calls is enough. Import it before
// @peculiar/x509. It only defines what is missing.

type Target = object;
type Store = Map<string | symbol | undefined, Map<unknown, unknown>>;

const stores = new WeakMap<Target, Store>();

function table(
  target: Target,
  property: string | symbol | undefined,
  create: boolean,
): Map<unknown, unknown> | undefined {
  let store = stores.get(target);
  if (!store) {
    if (!create) return undefined;
    store = new Map();
    stores.set(target, store);
  }
  let t = store.get(property);
  if (!t && create) {
    t = new Map();
    store.set(property, t);
  }
  return t;
}

const api = {
  defineMetadata(key: unknown, value: unknown, target: Target, property?: string | symbol): void {
    table(target, property, true)?.set(key, value);
  },
  getOwnMetadata(key: unknown, target: Target, property?: string | symbol): unknown {
    return table(target, property, false)?.get(key);
  },
  getMetadata(key: unknown, target: Target, property?: string | symbol): unknown {
    for (let t: Target | null = target; t; t = Object.getPrototypeOf(t)) {
      const m = table(t, property, false);
      if (m?.has(key)) return m.get(key);
    }
    return undefined;
  },
};

const R = Reflect as unknown as Record<string, unknown>;
for (const [name, fn] of Object.entries(api)) {
  if (typeof R[name] !== "function") R[name] = fn;
}
