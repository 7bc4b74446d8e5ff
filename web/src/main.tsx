import { render } from "preact";
import { App } from "./app.tsx";
import { SharePage } from "./share-page.tsx";
import { SyncLinkPage } from "./sync-link-page.tsx";
import "./style.css";

const root = document.getElementById("app");
// /s/<link>: a share link's page, for someone without an account; /e/<id>#<key>: an E2EE sync region's share link,
// decrypted in the page; everything else is the app (hash-routed)
const share = /^\/s\/([^/]+)$/.exec(location.pathname);
const e2ee = /^\/e\/([0-9a-f]{32})$/.exec(location.pathname);
if (root)
  render(
    share ? <SharePage link={decodeURIComponent(share[1])} /> : e2ee ? <SyncLinkPage id={e2ee[1]} /> : <App />,
    root,
  );
