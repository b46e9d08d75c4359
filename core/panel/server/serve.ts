/**
 * The whole `provisioning panel` run, for the CLI to call: open the store (migrations applied),
 * read the TLS certificate and key files when given, start the server, print where it listens
 * (and the first-run link of a panel without an owner), serve until the signal aborts (the CLI
 * aborts it on Ctrl+C or SIGTERM), then stop accepting, finish the requests in flight and close
 * the database. Flags map one to one onto {@linkcode ServePanelOptions}.
 *
 * @module
 */
import { UsageError } from "../../errors.ts";
import { defaultPanelDatabasePath, openPanelStore } from "../store/mod.ts";
import type { ProviderSignIn } from "./provider_sign_in.ts";
import { startPanel } from "./server.ts";

/** Options of {@linkcode servePanel}; each is a flag of `provisioning panel`. */
export interface ServePanelOptions {
  /** `--database`: a file path or a `postgres://` URL. @default defaultPanelDatabasePath */
  database?: string;
  /** `--host`. @default "127.0.0.1" */
  hostname?: string;
  /** `--port`. @default 8080, or 8443 with TLS */
  port?: number;
  /** `--cert`: PEM file of the certificate chain; with `keyFile`, the panel serves HTTPS. */
  certFile?: string;
  /** `--key`: PEM file of the certificate's private key. */
  keyFile?: string;
  /** `--provider-issuer`, `--provider-client-id`, `--provider-client-secret`: admins sign in with the provider. */
  providerSignIn?: ProviderSignIn;
  /** Aborted to stop the panel. */
  signal: AbortSignal;
  /** Where the lines for the admin go. @default console.log */
  print?: (line: string) => void;
}

/** Runs the panel until `signal` aborts; see the module documentation. */
export async function servePanel(options: ServePanelOptions): Promise<void> {
  const print = options.print ?? console.log;
  if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
    throw new UsageError("Cannot serve the panel over TLS with only one of --cert and --key", {
      hint: "Give both the certificate file and its private key file",
    });
  }
  const tls = options.certFile !== undefined && options.keyFile !== undefined
    ? { cert: await readPem(options.certFile, "--cert"), key: await readPem(options.keyFile, "--key") }
    : undefined;
  await using store = await openPanelStore({ database: options.database ?? defaultPanelDatabasePath });
  const panel = await startPanel({
    store,
    listen: {
      ...(options.hostname === undefined ? {} : { hostname: options.hostname }),
      ...(options.port === undefined ? {} : { port: options.port }),
      ...(tls === undefined ? {} : { tls }),
    },
    print,
    ...(options.providerSignIn === undefined ? {} : { providerSignIn: options.providerSignIn }),
  });
  try {
    print(`Panel at ${panel.url} (database ${store.location}, schema version ${store.migrations.version})`);
    if (!options.signal.aborted) {
      await new Promise<void>((resolve) =>
        options.signal.addEventListener("abort", () => resolve(), { once: true })
      );
    }
  } finally {
    await panel.close();
  }
}

async function readPem(path: string, flag: string): Promise<string> {
  try {
    const text = await Deno.readTextFile(path);
    if (!text.includes("-----BEGIN ")) throw new Error("it holds no PEM block");
    return text;
  } catch (cause) {
    throw new UsageError(
      `Cannot read ${flag} "${path}": ${cause instanceof Error ? cause.message : String(cause)}`,
      {
        cause,
        hint: "Give a PEM file readable by this user",
      },
    );
  }
}
