// oidc-provider ships no types; the OIDC test uses a handful of its calls (typed there where it matters).
declare module "oidc-provider" {
  const Provider: new (
    issuer: string,
    configuration: unknown,
  ) => {
    callback(): (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => void;
    interactionDetails(req: unknown, res: unknown): Promise<unknown>;
    interactionFinished(req: unknown, res: unknown, result: unknown, options?: unknown): Promise<void>;
    Grant: new (o: {
      accountId?: string;
      clientId: string;
    }) => {
      addOIDCScope(scope: string): void;
      addOIDCClaims(claims: string[]): void;
      save(): Promise<string>;
    };
  };
  export default Provider;
}
