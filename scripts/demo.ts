/**
 * `deno task demo`: the main job end to end against the embedded Entra sandbox. The sandbox
 * tenant starts on 127.0.0.1; a fresh software key (a real encrypted vault in a temporary folder)
 * gets a PIN; the `entra` plugin signs in with the sandbox's app registration (client
 * credentials) and provisions the tenant's sample users through Graph's passkey API; the
 * sandbox verifies every registration with @simplewebauthn/server, and its inspection endpoint
 * shows one verified passkey per user. Nothing leaves this machine.
 *
 * @module
 */
import { openSoftwareKey } from "../authenticators/software/plugin.ts";
import { toBase64Url } from "../core/bytes.ts";
import { Ctap2Client } from "../core/ctap/client.ts";
import { describeError } from "../core/errors.ts";
import { provisionUser } from "../core/jobs/provision_user.ts";
import type { PluginContext } from "../core/plugin.ts";
import { entraProvider } from "../plugins/entra/plugin.ts";

const sampleUsers = 5;
const say = (text: string) => console.log(text);

async function demo(): Promise<boolean> {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-demo-" });
  const home = Deno.cwd();
  // The admin's working folder: provisioning.json, the token cache and the vault live here.
  Deno.chdir(dir);
  try {
    const quiet: PluginContext = {
      interaction: {
        requestPin: () => Promise.reject(new Error("no PIN yet")),
        promptUserPresence: () => {},
      },
      env: () => undefined,
      readSecret: () => Promise.reject(new Error("no secret yet")),
    };
    await using sandbox = await entraProvider.startSandbox!(quiet, { port: 0, users: sampleUsers });
    say(`1. Sandbox tenant on ${sandbox.url} (Graph, OAuth, passkey verification, all on loopback)`);

    const settings = Object.fromEntries(
      [...sandbox.instructions.matchAll(/export (\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]),
    );
    const pin = String(100000 + crypto.getRandomValues(new Uint32Array(1))[0]! % 900000);
    const passphrase = toBase64Url(crypto.getRandomValues(new Uint8Array(18)));
    const context: PluginContext = {
      interaction: { requestPin: () => Promise.resolve(pin), promptUserPresence: () => {} },
      env: (name) => settings[name],
      readSecret: () => Promise.resolve(passphrase),
      notify: (text) => say(`   ${text}`),
    };

    await using key = await openSoftwareKey(context, {
      vault: `${dir}/demo-key.vault`,
      kdfIterations: 100_000,
    });
    await new Ctap2Client(key.device).setPin(pin);
    say(`2. Software FIDO2 key ${key.label}: vault encrypted at rest, PIN set`);

    await using session = await entraProvider.connect(context, {});
    say("3. Signed in to the tenant with its app registration (client credentials)");

    const inspection = await (await fetch(`${sandbox.url}/_sandbox/inspect`)).json() as Inspection;
    const upns = inspection.users.map((u) => u.userPrincipalName).filter((upn) => /^user\d+@/.test(upn));
    say(`4. Provisioning ${upns.length} sample users through Graph's passkey API`);
    const rows: string[][] = [];
    for (const upn of upns) {
      const started = performance.now();
      try {
        const result = await provisionUser({
          session,
          user: upn,
          authenticator: key,
          interaction: context.interaction,
          displayName: "Provisioning demo key",
        });
        rows.push([upn, "provisioned", result.methodId, `${Math.round(performance.now() - started)} ms`]);
      } catch (error) {
        rows.push([upn, "failed", describeError(error), ""]);
      }
    }
    say(table(["USER", "STATUS", "METHOD ID", "TIME"], rows));

    const after = await (await fetch(`${sandbox.url}/_sandbox/inspect`)).json() as Inspection;
    const verified = after.users.filter((u) => upns.includes(u.userPrincipalName))
      .filter((u) => u.passkeys.length === 1 && u.passkeys[0]!.verified);
    say(
      `5. The sandbox's inspection: ${verified.length} of ${upns.length} users hold exactly one verified passkey`,
    );
    return verified.length === upns.length;
  } finally {
    Deno.chdir(home);
    await Deno.remove(dir, { recursive: true });
  }
}

interface Inspection {
  users: { userPrincipalName: string; passkeys: { verified: boolean }[] }[];
}

function table(headings: string[], rows: string[][]): string {
  const widths = headings.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => "   " + cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(headings), ...rows.map(line)].join("\n");
}

try {
  if (!await demo()) {
    console.error("Demo failed: not every sample user ended with one verified passkey");
    Deno.exit(1);
  }
  say("Done.");
} catch (error) {
  console.error(`Demo failed: ${describeError(error)}`);
  Deno.exit(1);
}
