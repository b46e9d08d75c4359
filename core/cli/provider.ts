/**
 * The commands that talk to an identity provider, whichever it is: `login`,
 * `logout`, `whoami`, `doctor` and `sandbox`. Each works on the provider plugin chosen with
 * `--provider` (default `entra`) and takes the options its manifest declares; a provider that
 * lacks a capability says so instead of pretending.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { formatAaguid } from "../aaguid.ts";
import { Ctap2Client } from "../ctap/client.ts";
import { ProvisioningError, UsageError } from "../errors.ts";
import type {
  AccountSummary,
  ConnectHints,
  PluginContext,
  ProviderPlugin,
  ProviderSession,
  RequestPacer,
} from "../plugin.ts";
import type { CliContext } from "./context.ts";
import { optionsFor, withPluginOptions } from "./plugin_options.ts";

type Parsed = Record<string, unknown> & { provider?: string; authenticator?: string };

/** The passkey's name in the directory when `--display-name` is not given. */
export const defaultDisplayName = "Security key";

/** `login`: signs the admin in and caches the tokens. */
export function loginCommand(context: CliContext): CommandUnknownOpts {
  return withProvider(new Command("login").description("sign in as an admin and cache the tokens"), context)
    .action(async (parsed) => {
      const options = parsed as Parsed;
      const provider = providerOf(context, options);
      const login = capability(provider, "login", provider.login);
      printSummary(
        context,
        await login.call(provider, pluginContext(context), optionsFor(context, "provider", options) as never),
      );
    });
}

/** `logout`: removes the cached tokens. */
export function logoutCommand(context: CliContext): CommandUnknownOpts {
  return withProvider(new Command("logout").description("remove the cached tokens"), context)
    .action(async (parsed) => {
      const options = parsed as Parsed;
      const provider = providerOf(context, options);
      const logout = capability(provider, "logout", provider.logout);
      await logout.call(provider, pluginContext(context), optionsFor(context, "provider", options) as never);
      context.stdout.write(`Signed out of ${provider.manifest.id}: cached tokens removed\n`);
    });
}

/** `whoami`: the signed-in account and what it is missing. */
export function whoamiCommand(context: CliContext): CommandUnknownOpts {
  return withProvider(
    new Command("whoami").description(
      "show the tenant, account and granted permissions, and what is missing",
    ),
    context,
  ).action(async (parsed) => {
    const options = parsed as Parsed;
    const provider = providerOf(context, options);
    const whoami = capability(provider, "whoami", provider.whoami);
    printSummary(
      context,
      await whoami.call(provider, pluginContext(context), optionsFor(context, "provider", options) as never),
    );
  });
}

/** `doctor`: the provider's preflight for the chosen authenticator. Exit 1 when something will fail. */
export function doctorCommand(context: CliContext): CommandUnknownOpts {
  return withBoth(
    new Command("doctor").description(
      "say, before anything is created, what a run would hit: policies, permissions",
    ),
    context,
  ).action(async (parsed) => {
    const options = parsed as Parsed;
    const provider = providerOf(context, options);
    const preflight = capability(provider, "doctor", provider.preflight);
    await using authenticator = await context.registry.authenticator(options.authenticator ?? "software")
      .open(context, { ...optionsFor(context, "authenticator", options), create: false } as never);
    const info = await new Ctap2Client(authenticator.device).getInfo();
    const findings = await preflight.call(
      provider,
      pluginContext(context),
      optionsFor(context, "provider", options) as never,
      {
        aaguid: formatAaguid(info.aaguid),
        attestation: authenticator.attestationFormat,
        label: authenticator.label,
      },
    );
    if (findings.length === 0) {
      context.stdout.write("ok       nothing in the policies or permissions stands in the way\n");
    }
    for (const finding of findings) {
      const mark = finding.severity.padEnd(7);
      context.stdout.write(
        `${mark}  ${finding.message}${finding.hint ? `\n         ${finding.hint}` : ""}\n`,
      );
    }
    const errors = findings.filter((f) => f.severity === "error").length;
    if (errors > 0) {
      throw new ProvisioningError(
        "preflight-failed",
        `${errors} problem${errors === 1 ? "" : "s"} would make a run fail`,
      );
    }
  });
}

/** `sandbox`: starts the provider's local sandbox server until Ctrl+C. */
export function sandboxCommand(context: CliContext): CommandUnknownOpts {
  return withProvider(
    new Command("sandbox").description(
      "start the provider's sandbox server on 127.0.0.1 to try the tool against",
    ),
    context,
  ).action(async (parsed) => {
    const options = parsed as Parsed;
    const provider = providerOf(context, options);
    const start = capability(provider, "sandbox", provider.startSandbox);
    await using sandbox = await start.call(
      provider,
      context,
      optionsFor(context, "provider", options) as never,
    );
    context.stdout.write(`${sandbox.instructions}\n`);
    await new Promise<void>((resolve) => {
      if (context.signal.aborted) resolve();
      context.signal.addEventListener("abort", () => resolve(), { once: true });
    });
  });
}

/**
 * The context plugins get: the CLI's, with sign-in messages going to stderr and the fetch that
 * carries the run's TLS settings (`main.ts` adds it to the context it runs the program with).
 */
export function pluginContext(context: CliContext & { readonly fetch?: typeof fetch }): PluginContext {
  return {
    ...context,
    notify: (text) => context.stderr.write(`${text}\n`),
    ...(context.fetch ? { fetch: context.fetch } : {}),
  };
}

/**
 * Signs in for a long command. The session's calls get a signal of their own, linked to Ctrl+C
 * only while signing in: afterwards the first Ctrl+C lets calls in flight finish (the command
 * stops taking work), and the returned `calls` controller is what cancels them.
 */
export async function connectForCalls(
  context: CliContext,
  provider: ProviderPlugin<never>,
  providerOptions: Record<string, unknown>,
  hints: ConnectHints,
  pacer: RequestPacer,
): Promise<{ session: ProviderSession; calls: AbortController }> {
  const calls = new AbortController();
  const cancelSignIn = () => calls.abort(context.signal.reason);
  context.signal.addEventListener("abort", cancelSignIn, { once: true });
  try {
    const session = await provider.connect(
      { ...pluginContext(context), signal: calls.signal, pacer },
      providerOptions as never,
      hints,
    );
    return { session, calls };
  } finally {
    context.signal.removeEventListener("abort", cancelSignIn);
  }
}

/** Adds `--provider` with its plugins' options. */
export function withProvider<C extends CommandUnknownOpts>(command: C, context: CliContext): C {
  return withPluginOptions(command, context, "provider", "entra");
}

/** Adds `--provider` and `--authenticator` with their plugins' options. */
export function withBoth<C extends CommandUnknownOpts>(command: C, context: CliContext): C {
  return withPluginOptions(withProvider(command, context), context, "authenticator", "software");
}

function providerOf(context: CliContext, options: Parsed): ProviderPlugin<never> {
  return context.registry.provider(options.provider ?? "entra");
}

function capability<F>(provider: ProviderPlugin<never>, command: string, method: F | undefined): F {
  if (method === undefined) {
    throw new UsageError(`Cannot run "${command}": the ${provider.manifest.id} provider does not offer it`);
  }
  return method;
}

function printSummary(context: CliContext, summary: AccountSummary): void {
  const width = Math.max(0, ...summary.rows.map(([label]) => label.length));
  for (const [label, value] of summary.rows) context.stdout.write(`${label.padEnd(width)}  ${value}\n`);
  for (const warning of summary.warnings) context.stderr.write(`warning: ${warning}\n`);
}
