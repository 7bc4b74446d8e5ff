// File actions on the event's file, as the rule owner. Each is safe to run again after a crash mid-step: a move or
// rename whose source is gone but whose target exists counts as done, a delete of a missing file too.
import { AtrestError } from "../../errors.ts";
import { expand } from "../template.ts";
import {
  type ActionContext,
  type ActionResult,
  baseName,
  dirName,
  joinPath,
  requireCurrent,
  templateFields,
} from "./context.ts";

async function moveTo(ctx: ActionContext, from: string, to: string, overwrite: boolean): Promise<ActionResult> {
  if (from === to) return { detail: `already at ${to}`, current: to };
  if ((await ctx.fs.kind(from)) === undefined && (await ctx.fs.kind(to)) === "file") {
    return { detail: `already at ${to}`, current: to };
  }
  await ctx.fs.ensureDir(dirName(to));
  await ctx.fs.rename(from, to, overwrite);
  return { detail: `to ${to}`, current: to };
}

export async function move(ctx: ActionContext): Promise<ActionResult> {
  if (ctx.action.type !== "move") throw new Error("not a move");
  const from = requireCurrent(ctx);
  const dir = expand(ctx.action.to, templateFields(ctx));
  return moveTo(ctx, from, joinPath(dir, baseName(from)), ctx.action.overwrite);
}

export async function rename(ctx: ActionContext): Promise<ActionResult> {
  if (ctx.action.type !== "rename") throw new Error("not a rename");
  const from = requireCurrent(ctx);
  const name = expand(ctx.action.name, templateFields(ctx));
  if (name.includes("/") || name === "." || name === "..") {
    throw new AtrestError("INVALID_INPUT", `rename: "${name}" is not a file name`);
  }
  return moveTo(ctx, from, joinPath(dirName(from), name), ctx.action.overwrite);
}

/** Copies the file (streamed through the owner's session: decrypted and re-encrypted under a new data key). */
export async function copy(ctx: ActionContext): Promise<ActionResult> {
  if (ctx.action.type !== "copy") throw new Error("not a copy");
  const from = requireCurrent(ctx);
  const dir = expand(ctx.action.to, templateFields(ctx));
  const to = joinPath(dir, baseName(from));
  if (to === from) throw new AtrestError("INVALID_INPUT", `copy: ${from} onto itself`);
  await ctx.fs.ensureDir(dir);
  // A retried copy overwrites its own earlier result; a first attempt respects `overwrite`.
  const size = await ctx.fs.writeStream(to, ctx.fs.readStream(from), ctx.action.overwrite || ctx.attempt > 1);
  return { detail: `copied to ${to} (${size} bytes)` };
}

export async function remove(ctx: ActionContext): Promise<ActionResult> {
  const path = requireCurrent(ctx);
  if ((await ctx.fs.kind(path)) === undefined) return { detail: `${path} already gone`, current: null };
  await ctx.fs.remove(path);
  return { detail: `deleted ${path}`, current: null };
}
