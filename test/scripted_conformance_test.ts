/**
 * The scripted provider (test/conformance/scripted_provider.ts) passes the provider conformance
 * suite, so the engine's tests that drive it (test/engine_states_test.ts) rest on a provider that
 * behaves like a real one: real WebAuthn verification by @simplewebauthn/server, real reason codes.
 */
import { formatAaguid } from "../core/aaguid.ts";
import { providerConformance } from "./conformance/provider_conformance.ts";
import { scriptedCodes, ScriptedProvider } from "./conformance/scripted_provider.ts";
import { newTestKey, scriptedUser } from "./software_key.ts";

const pin = "482916";
const users = ["ada@scripted.test", "grace@scripted.test", "linus@scripted.test"];

Deno.test("conformance: the scripted provider", async (t) => {
  const provider = new ScriptedProvider({ users, groups: { Engineers: [users[0]!, users[2]!] } });
  let outage = false;
  await providerConformance(t, {
    name: "scripted",
    connect: () => provider.connect(),
    users: users.slice(0, 2),
    unknownUser: "nobody@scripted.test",
    unknownUserCode: scriptedCodes.userNotFound,
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
      outage = true;
      provider.script(users[0]!, { kind: "transient", times: Infinity, call: "listPasskeys" });
      return () => {
        outage = false;
        provider.script(users[0]!, { kind: "succeed" });
      };
    },
    group: { reference: "Engineers", members: [users[0]!, users[2]!] },
  });
  if (outage) throw new Error("the outage was not ended");
});
