export type AuditTab = string;
export function Audit(props: { tab: AuditTab }) {
  return <p>{props.tab}: coming.</p>;
}
