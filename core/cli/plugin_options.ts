/**
 * Plugin options on the command line: each command that uses a kind of plugin offers the options
 * every plugin of that kind declares in its manifest (`--vault` for the software key, `--tenant`
 * for Entra), and hands the parsed values to the plugin chosen by `--authenticator`/`--provider`,
 * which parses them with its own schema. Core knows no plugin's options.
 *
 * @module
 */
import { type CommandUnknownOpts, Option } from "@commander-js/extra-typings";
import type { Plugin } from "../plugin.ts";
import type { CliContext } from "./context.ts";

/** Adds `--<kind> <id>` and the manifest options of every plugin of `kind` to `command`. */
export function withPluginOptions<C extends CommandUnknownOpts>(
  command: C,
  context: CliContext,
  kind: Plugin["kind"],
  defaultId: string,
): C {
  command.addOption(new Option(`--${kind} <id>`, `which ${kind} plugin`).default(defaultId));
  const seen = new Set(command.options.map((option) => option.long));
  for (const plugin of context.registry.list()) {
    if (plugin.kind !== kind) continue;
    for (const declared of plugin.manifest.options ?? []) {
      // An option described as "sandbox: …" is the sandbox server's, and only the sandbox command's;
      // the sandbox command takes no other (it signs in to nothing).
      if (declared.description.startsWith("sandbox:") !== (command.name() === "sandbox")) continue;
      const option = new Option(declared.flags, `${declared.description} [${plugin.manifest.id}]`);
      if (seen.has(option.long)) continue;
      seen.add(option.long);
      if (declared.env) option.env(declared.env);
      command.addOption(option);
    }
  }
  return command;
}

/**
 * The values of the manifest options of plugins of `kind` only: what that plugin's `open` or
 * `connect` receives (the command's own options and the other kind's stay out).
 */
export function optionsFor(
  context: CliContext,
  kind: Plugin["kind"],
  parsed: Record<string, unknown>,
): Record<string, unknown> {
  const names = new Set<string>();
  for (const plugin of context.registry.list()) {
    if (plugin.kind !== kind) continue;
    for (const declared of plugin.manifest.options ?? []) {
      names.add(new Option(declared.flags, "").attributeName());
    }
  }
  return Object.fromEntries(Object.entries(parsed).filter(([name]) => names.has(name)));
}
