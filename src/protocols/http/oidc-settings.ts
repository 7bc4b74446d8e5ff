// What the HTTPS door needs of the `oidc` config section (src/config/config.ts).
export interface OidcSettings {
  issuer: string;
  clientId: string;
  clientSecret?: string;
  redirectUri: string;
  scopes: string[];
  usernameClaim: string;
  groupClaim: string;
  groupMap: Record<string, string>;
  provision: "auto" | "existing";
  label: string;
}
