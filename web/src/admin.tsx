export type AdminTab = string;
export function Admin(props: { tab: AdminTab }) {
  return <p>{props.tab}: coming.</p>;
}
