/**
 * The Entra session passes the provider conformance suite against the Entra sandbox (its real
 * Graph shapes, @simplewebauthn/server as the verifier): the suite is proven on a real provider's
 * session, not only on the scripted one it was written with.
 */
import { formatAaguid } from "../core/aaguid.ts";
import { providerConformance } from "./conformance/provider_conformance.ts";
import { newTestKey, scriptedUser } from "./software_key.ts";
import { cliSandbox, sandboxSession } from "./bulk_support.ts";

const pin = "482916";

Deno.test("conformance: the Entra session on the Entra sandbox", async (t) => {
  await using sandbox = await cliSandbox({ users: 4 });
  const dir = await Deno.makeTempDir({ prefix: "entra-conformance-" });
  try {
    const upns = sandbox.tenant.users().map((u) => u.userPrincipalName).filter((u) => /^user\d+@/.test(u));
    const group = sandbox.tenant.groups().find((g) =>
      sandbox.tenant.transitiveMembers(g.id).some((m) => m.kind === "user")
    );
    await providerConformance(t, {
      name: "entra",
      connect: () => sandboxSession(sandbox, dir),
      users: upns,
      unknownUser: `nobody@${upns[0]!.split("@")[1]}`,
      unknownUserCode: "user-not-found",
      async authenticator() {
        const key = await newTestKey({ pin });
        return {
          authenticator: key,
          interaction: scriptedUser([pin]),
          aaguid: formatAaguid((await key.client.getInfo()).aaguid),
          [Symbol.asyncDispose]: () => key[Symbol.asyncDispose](),
        };
      },
      transientOutage() {
        sandbox.faults.configure({ serverErrorRate: 1 });
        return () => sandbox.faults.configure({ serverErrorRate: 0 });
      },
      ...(group
        ? {
          group: {
            reference: group.id,
            members: sandbox.tenant.transitiveMembers(group.id).flatMap((m) =>
              m.kind === "user" ? [m.user.userPrincipalName] : []
            ),
          },
        }
        : {}),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
