import { render } from "preact";
import { App } from "./app.tsx";
import { SharePage } from "./share-page.tsx";
import "./style.css";

const root = document.getElementById("app");
// /s/<link>: a share link's page, for someone without an account; everything else is the app (hash-routed)
const share = /^\/s\/([^/]+)$/.exec(location.pathname);
if (root) render(share ? <SharePage link={decodeURIComponent(share[1])} /> : <App />, root);
