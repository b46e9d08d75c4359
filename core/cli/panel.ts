/**
 * `provisioning panel`: runs the panel (its web UI and JSON API, docs/panel.md) on this machine
 * until Ctrl+C or SIGTERM, through {@linkcode servePanel}. The flags map one to one onto its
 * options; admins sign in through the first-run bootstrap link and the sign-in links owners
 * issue (sign-in with the provider is not offered on the command line yet).
 *
 * Exit code 0 when stopped with Ctrl+C or SIGTERM, like the other serving commands (`sandbox`,
 * `key serve`): stopping a server is its normal end.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { dirname } from "node:path";
import { z } from "zod";
import { UsageError } from "../errors.ts";
import { servePanel } from "../panel/server/serve.ts";
import { defaultPanelDatabasePath } from "../panel/store/mod.ts";
import type { CliContext } from "./context.ts";

/** `panel`: serves the panel on 127.0.0.1 (or `--host`) until Ctrl+C. */
export function panelCommand(context: CliContext): CommandUnknownOpts {
  return new Command("panel")
    .description("serve the panel's web UI and API on 127.0.0.1 until Ctrl+C")
    .option(
      "--database <path|url>",
      `the panel's SQLite file, or a postgres:// URL (default: ${defaultPanelDatabasePath})`,
    )
    .option("--host <address>", "the address to listen on (default: 127.0.0.1)")
    .option("--port <n>", "the port to listen on, 0 for any free one (default: 8080, 8443 with TLS)")
    .option("--cert <file>", "PEM certificate chain; with --key, the panel serves HTTPS")
    .option("--key <file>", "PEM private key of --cert")
    .action(async (parsed) => {
      const flags = parsePanelFlags(parsed);
      // The default file's folder is the data folder, made like the journals' (0700); a named one must exist.
      if (flags.database === undefined) {
        await Deno.mkdir(dirname(defaultPanelDatabasePath), { recursive: true, mode: 0o700 });
      }
      const stop = new AbortController();
      // Ctrl+C arrives as the context's signal; SIGTERM (a service manager) stops it the same way.
      const onAbort = () => stop.abort(context.signal.reason);
      const onTerm = () => stop.abort(new Error("SIGTERM"));
      if (context.signal.aborted) stop.abort(context.signal.reason);
      context.signal.addEventListener("abort", onAbort, { once: true });
      const terminates = Deno.build.os !== "windows";
      if (terminates) Deno.addSignalListener("SIGTERM", onTerm);
      try {
        await servePanel({
          ...flags,
          signal: stop.signal,
          print: (line) => context.stdout.write(`${line}\n`),
        });
      } finally {
        context.signal.removeEventListener("abort", onAbort);
        if (terminates) Deno.removeSignalListener("SIGTERM", onTerm);
      }
    });
}

/** The flags of `provisioning panel`, checked. */
export interface PanelFlags {
  readonly database?: string;
  readonly hostname?: string;
  readonly port?: number;
  readonly certFile?: string;
  readonly keyFile?: string;
}

const rawFlags = z.object({
  database: z.string().min(1).optional(),
  host: z.string().min(1).optional(),
  port: z.string().regex(/^\d{1,5}$/).transform(Number).refine((n) => n <= 65535).optional(),
  cert: z.string().min(1).optional(),
  key: z.string().min(1).optional(),
});

/**
 * Checks the parsed flags of `panel` and names them as {@linkcode servePanel} does.
 *
 * @throws {UsageError} a flag's value is empty or `--port` is no port number
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parsePanelFlags } from "./panel.ts";
 * assert.deepEqual(parsePanelFlags({ port: "0", host: "127.0.0.1" }), { hostname: "127.0.0.1", port: 0 });
 * ```
 */
export function parsePanelFlags(parsed: Record<string, unknown>): PanelFlags {
  const result = rawFlags.safeParse(parsed);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const flag = `--${String(issue.path[0] ?? "")}`;
    // Only the port's value is repeated: a database URL may carry a password.
    const shown = flag === "--port" ? ` ${JSON.stringify(parsed["port"])}` : "";
    throw new UsageError(`Cannot serve the panel: ${flag}${shown} is not valid`, {
      hint: flag === "--port"
        ? "Give a port number from 0 to 65535 (0: any free port)"
        : `Give a value to ${flag}`,
    });
  }
  const { database, host, port, cert, key } = result.data;
  return {
    ...(database === undefined ? {} : { database }),
    ...(host === undefined ? {} : { hostname: host }),
    ...(port === undefined ? {} : { port }),
    ...(cert === undefined ? {} : { certFile: cert }),
    ...(key === undefined ? {} : { keyFile: key }),
  };
}
