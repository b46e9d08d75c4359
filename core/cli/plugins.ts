/**
 * `provisioning plugins`: what plugins this program has and what each needs from the outside
 * world (hosts, files, environment variables, programs) — the same manifest that becomes a
 * third-party plugin's Deno permissions, so an admin can review it before a run.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import type { Plugin, PluginOption } from "../plugin.ts";
import type { CliContext } from "./context.ts";

/** One plugin as `plugins --json` prints it: the manifest with every list present. */
export interface PluginDescription {
  readonly kind: Plugin["kind"];
  readonly id: string;
  readonly summary: string;
  readonly hosts: readonly string[];
  readonly files: readonly string[];
  readonly env: readonly string[];
  readonly run: readonly string[];
  readonly options: readonly PluginOption[];
}

/** The manifest of `plugin` with absent lists as empty ones, so JSON readers need no defaults. */
export function describePlugin(plugin: Plugin): PluginDescription {
  const { manifest } = plugin;
  return {
    kind: plugin.kind,
    id: manifest.id,
    summary: manifest.summary,
    hosts: manifest.hosts,
    files: manifest.files ?? [],
    env: manifest.env ?? [],
    run: manifest.run ?? [],
    options: manifest.options ?? [],
  };
}

/**
 * Renders the plugins as text: one heading line per plugin (kind, id, summary), then its needs.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatPlugins } from "./plugins.ts";
 * const text = formatPlugins([{
 *   kind: "provider", id: "entra", summary: "Microsoft Entra ID", hosts: ["graph.microsoft.com"],
 *   files: [], env: [], run: [], options: [],
 * }]);
 * assert.match(text, /hosts {4}graph\.microsoft\.com/);
 * ```
 */
export function formatPlugins(plugins: readonly PluginDescription[]): string {
  if (plugins.length === 0) return "No plugins registered.\n";
  const kindWidth = Math.max(...plugins.map((p) => p.kind.length));
  const idWidth = Math.max(...plugins.map((p) => p.id.length));
  const list = (items: readonly string[]) => items.length === 0 ? "none" : items.join(", ");
  const blocks = plugins.map((plugin) => {
    const lines = [
      `${plugin.kind.padEnd(kindWidth)}  ${plugin.id.padEnd(idWidth)}  ${plugin.summary}`,
      `  hosts    ${list(plugin.hosts)}`,
      `  files    ${list(plugin.files)}`,
      `  env      ${list(plugin.env)}`,
      `  run      ${list(plugin.run)}`,
    ];
    if (plugin.options.length === 0) {
      lines.push("  options  none");
    } else {
      lines.push("  options");
      const flagsWidth = Math.max(...plugin.options.map((option) => option.flags.length));
      for (const option of plugin.options) {
        const extras = [
          option.env === undefined ? undefined : `env ${option.env}`,
          option.default === undefined ? undefined : `default ${JSON.stringify(option.default)}`,
        ].filter((extra) => extra !== undefined);
        const suffix = extras.length === 0 ? "" : ` (${extras.join(", ")})`;
        lines.push(`    ${option.flags.padEnd(flagsWidth)}  ${option.description}${suffix}`);
      }
    }
    return lines.join("\n");
  });
  return `${blocks.join("\n\n")}\n`;
}

/** The `plugins` command: lists the registered plugins and their manifests. */
export function pluginsCommand(context: CliContext) {
  return new Command("plugins")
    .description("list the plugins this program has and what each needs (hosts, files, env, programs)")
    .option("--json", "print the manifests as JSON")
    .action((options) => {
      const plugins = context.registry.list().map(describePlugin);
      context.stdout.write(
        options.json ? `${JSON.stringify({ plugins }, null, 2)}\n` : formatPlugins(plugins),
      );
    });
}
