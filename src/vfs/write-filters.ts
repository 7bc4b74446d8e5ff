// Folder write filters: behaviour a higher layer attaches to writes under certain folders (PGP folders encrypt or
// check uploads as they stream in). The vfs knows only this interface; the wiring (app.ts) registers the filters, so
// the vfs never imports what they do.
import type { AuditEvent, AuditSink } from "../audit/types.ts";
import type { FolderRow } from "../store/types.ts";
import type { WriteHandle } from "./types.ts";

export interface WriteFilterContext {
  /** The folder whose options made the filter apply. */
  folder: FolderRow;
  /** The file's name. */
  name: string;
  /** The client asked to append to an existing file. */
  resume: boolean;
  audit: AuditSink;
  event: Omit<AuditEvent, "action" | "outcome">;
}

export interface WriteFilter {
  /** Whether writes under this folder go through the filter. */
  applies(folder: FolderRow): boolean;
  /**
   * Opens a filtered write. The filter may refuse before anything is stored, and calls `openInner` for the container
   * write that receives what it produces.
   */
  openWrite(ctx: WriteFilterContext, openInner: () => Promise<WriteHandle>): Promise<WriteHandle>;
  /** Throws if a file may not be moved from `from` into `to` (the target is a folder the filter applies to). */
  checkMove(from: FolderRow | undefined, to: FolderRow): void;
}

export class WriteFilters {
  readonly #filters: WriteFilter[] = [];

  register(filter: WriteFilter): void {
    this.#filters.push(filter);
  }

  #for(folder: FolderRow | undefined): WriteFilter | undefined {
    return folder ? this.#filters.find((f) => f.applies(folder)) : undefined;
  }

  /** Whether a write into `folder` goes through a filter (then it must stream through it: no staged pieces). */
  applies(folder: FolderRow | undefined): boolean {
    return this.#for(folder) !== undefined;
  }

  /** The write through the folder's filter, or the plain one when none applies. */
  open(
    folder: FolderRow | undefined,
    ctx: Omit<WriteFilterContext, "folder">,
    openInner: () => Promise<WriteHandle>,
  ): Promise<WriteHandle> {
    const filter = this.#for(folder);
    return filter && folder ? filter.openWrite({ ...ctx, folder }, openInner) : openInner();
  }

  checkMove(from: FolderRow | undefined, to: FolderRow | undefined): void {
    const filter = this.#for(to);
    if (filter && to) filter.checkMove(from, to);
  }
}
