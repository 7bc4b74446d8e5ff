// "Not on this node, not now": the node cannot serve the call (its path to the shared store is gone, or another node
// rotated the master key under it), though another node may. Answered 503, like sealed, so clients move on
// (api/client.ts) instead of taking it as an answer about the key.
import { KeyUnavailableError } from "../errors.ts";

export class NodeUnavailableError extends KeyUnavailableError {}
