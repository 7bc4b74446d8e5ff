// Share links: placeholder until the server's share routes land.
import type { Entry } from "./files.tsx";
import { Dialog } from "./ui.tsx";

export function ShareDialog(props: { entry: Entry; onClose: () => void }) {
  return (
    <Dialog title={`Share ${props.entry.name}`} onClose={props.onClose}>
      <p>Share links are not available on this server yet.</p>
      <button type="button" onClick={props.onClose}>
        Close
      </button>
    </Dialog>
  );
}
