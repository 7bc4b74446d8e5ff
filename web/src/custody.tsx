export type CustodyTab = string;
export function Custody(props: { tab: CustodyTab }) {
  return <p>{props.tab}: coming.</p>;
}
