/**
 * The provider conformance suite: what any {@link ProviderSession} (core/plugin.ts) must do for
 * core to drive it, checked with the real WebAuthn client (core/webauthn/create.ts) on a real
 * software key. A provider's test calls {@link providerConformance} with a way to connect to its
 * sandbox; the suite registers one step per rule, so a failing rule is named in the test output.
 *
 * Run today against the Entra sandbox (test/entra_conformance_test.ts) and the scripted provider
 * (test/scripted_conformance_test.ts); Okta's session is the next to be run through it.
 *
 * @module
 */
import { assert, assertEquals, deepStrictEqual } from "../assert.ts";
import { formatAaguid, parseAaguid } from "../../core/aaguid.ts";
import { ProvisioningError } from "../../core/errors.ts";
import type { CtapDevice } from "../../core/ctap/device.ts";
import type { Authenticator, DirectoryUser, ProviderSession, UserInteraction } from "../../core/plugin.ts";
import { create } from "../../core/webauthn/create.ts";
import type { RegistrationResponseJSON } from "../../core/webauthn/json.ts";
import { fromBase64Any, toBase64Url } from "../../core/bytes.ts";

/** An authenticator for the suite and the interaction that answers its prompts. */
export interface ConformanceKey {
  readonly authenticator: Authenticator;
  readonly interaction: UserInteraction;
  /** The key's AAGUID (UUID): the listed passkey must carry it. */
  readonly aaguid: string;
}

/** What a provider hands the suite. */
export interface ConformanceSubject {
  /** For step names, e.g. `entra sandbox`. */
  readonly name: string;
  /** A signed-in session on the provider's sandbox; disposed by the suite. */
  connect(): Promise<ProviderSession>;
  /** Sign-in names of users who exist and hold no passkey yet; the suite uses the first two. */
  readonly users: readonly string[];
  /** A reference no user has. */
  readonly unknownUser: string;
  /** The reason code an unknown user is refused with (e.g. `user-not-found`). */
  readonly unknownUserCode: string;
  /** Makes a fresh authenticator (a software key with a PIN). */
  authenticator(): Promise<ConformanceKey & AsyncDisposable>;
  /**
   * Makes every provider call fail transiently until the returned function is called (a 5xx
   * from the sandbox): the error must carry `retryable: true`. Absent when it cannot be forced.
   */
  transientOutage?(): () => void;
  /** A group and the sign-in names of its members, when the provider lists groups. */
  readonly group?: { readonly reference: string; readonly members: readonly string[] };
}

/** A kebab-case reason code, as failures.csv carries them. */
const reasonCode = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

/** Calls `run` and returns the ProvisioningError it must throw; anything else fails the step. */
async function refusal(run: () => Promise<unknown>, what: string): Promise<ProvisioningError> {
  try {
    await run();
  } catch (error) {
    assert.ok(
      error instanceof ProvisioningError,
      `${what}: expected a ProvisioningError, got ${String(error)}`,
    );
    assert.match(error.code, reasonCode, `${what}: the code "${error.code}" is not a reason code`);
    assert.ok(error.message.length > 0, `${what}: the error says nothing`);
    return error;
  }
  throw new assert.AssertionError({ message: `${what}: expected a refusal, but the call succeeded` });
}

/** Wraps a device to count what reaches it: a refusal "before the key is touched" sends nothing. */
function countingDevice(device: CtapDevice): CtapDevice & { readonly sent: number } {
  let sent = 0;
  return {
    get sent() {
      return sent;
    },
    transceive(request, options) {
      sent++;
      return device.transceive(request, options);
    },
  };
}

/**
 * Registers the conformance steps on `t` for `subject`. Each step connects on its own, so one
 * failing rule does not hide the others.
 */
export async function providerConformance(t: Deno.TestContext, subject: ConformanceSubject): Promise<void> {
  const [first, second] = subject.users;
  assert.ok(first && second, "the conformance suite needs two users without passkeys");

  await t.step(`${subject.name}: resolveUser finds a known user by sign-in name and by id`, async () => {
    await using session = await subject.connect();
    const user = await session.resolveUser(first);
    assertEquals(user.userPrincipalName.toLowerCase(), first.toLowerCase());
    assert.ok(user.id.length > 0, "a resolved user has an id");
    const again = await session.resolveUser(user.id);
    assertEquals(again.id, user.id);
  });

  await t.step(`${subject.name}: resolveUser refuses an unknown user with a reason code`, async () => {
    await using session = await subject.connect();
    const error = await refusal(() => session.resolveUser(subject.unknownUser), "an unknown user");
    assertEquals(error.code, subject.unknownUserCode);
    assertEquals(error.retryable, false, "an unknown user stays unknown");
  });

  await t.step(
    `${subject.name}: creation options → WebAuthn create on a software key → register → listed with the AAGUID → deleted → gone`,
    async () => {
      await using session = await subject.connect();
      await using key = await subject.authenticator();
      const user = await session.resolveUser(first);
      deepStrictEqual(await session.listPasskeys(user), [], "the suite's users start without passkeys");
      const challenge = await session.creationOptions(user);
      assert.ok(/^https:\/\//.test(challenge.origin), `the origin "${challenge.origin}" is https`);
      const credential = await create({
        options: challenge.options,
        origin: challenge.origin,
        allowedRpIds: session.allowedRpIds,
        authenticator: key.authenticator,
        interaction: key.interaction,
      });
      const displayName = session.checkDisplayName?.("Conformance key", user) ?? "Conformance key";
      const method = await session.registerPasskey(user, { credential, displayName });
      assert.ok(method.id.length > 0, "the registered passkey has the provider's id");
      const listed = await session.listPasskeys(user);
      const found = listed.find((m) => m.id === method.id);
      assert.ok(found, `the new passkey ${method.id} is listed`);
      assertEquals(found.displayName, displayName);
      assertEquals(found.aaguid && formatAaguid(parseAaguid(found.aaguid)), key.aaguid);
      await session.deletePasskey(user, method.id);
      assertEquals((await session.listPasskeys(user)).some((m) => m.id === method.id), false, "deleted");
    },
  );

  await t.step(`${subject.name}: a registration whose challenge was already used is refused`, async () => {
    await using session = await subject.connect();
    await using key = await subject.authenticator();
    const user = await session.resolveUser(second);
    const challenge = await session.creationOptions(user);
    const credential = await create({
      options: challenge.options,
      origin: challenge.origin,
      allowedRpIds: session.allowedRpIds,
      authenticator: key.authenticator,
      interaction: key.interaction,
    });
    const method = await session.registerPasskey(user, { credential, displayName: "Conformance key" });
    const error = await refusal(
      () => session.registerPasskey(user, { credential, displayName: "Conformance key" }),
      "a replayed registration",
    );
    assertEquals(error.retryable, false, "a replay never succeeds on retry");
    await session.deletePasskey(user, method.id);
  });

  await t.step(
    `${subject.name}: the provider verifies registrations: another user's credential and altered client data are refused`,
    async () => {
      await using session = await subject.connect();
      await using key = await subject.authenticator();
      const [userA, userB] = [await session.resolveUser(first), await session.resolveUser(second)];
      const make = async (user: DirectoryUser) => {
        const challenge = await session.creationOptions(user);
        return await create({
          options: challenge.options,
          origin: challenge.origin,
          allowedRpIds: session.allowedRpIds,
          authenticator: key.authenticator,
          interaction: key.interaction,
        });
      };
      const forB = await make(userB);
      const crossed = await refusal(
        () => session.registerPasskey(userA, { credential: forB, displayName: "Conformance key" }),
        "a credential made on another user's challenge",
      );
      assertEquals(crossed.retryable, false);
      const forA = await make(userA);
      const altered = await refusal(
        () =>
          session.registerPasskey(userA, {
            credential: withClientData(forA, (data) => ({ ...data, origin: "https://attacker.example" })),
            displayName: "Conformance key",
          }),
        "a registration whose signed client data was altered",
      );
      assertEquals(altered.retryable, false);
      deepStrictEqual(
        await session.listPasskeys(userA),
        [],
        "nothing was stored for the refused registrations",
      );
      deepStrictEqual(await session.listPasskeys(userB), [], "nor for the user the credential was made for");
    },
  );

  // A retried DELETE whose first answer was lost, or a revoke run again, must not fail on a passkey
  // already gone: the Entra session treats Graph's 404 so (plugins/entra/session.ts deletePasskey).
  await t.step(`${subject.name}: deleting a passkey that is already gone is not an error`, async () => {
    await using session = await subject.connect();
    await using key = await subject.authenticator();
    const user = await session.resolveUser(first);
    const challenge = await session.creationOptions(user);
    const credential = await create({
      options: challenge.options,
      origin: challenge.origin,
      allowedRpIds: session.allowedRpIds,
      authenticator: key.authenticator,
      interaction: key.interaction,
    });
    const method = await session.registerPasskey(user, { credential, displayName: "Conformance key" });
    await session.deletePasskey(user, method.id);
    await session.deletePasskey(user, method.id);
    deepStrictEqual(await session.listPasskeys(user), []);
  });

  await t.step(
    `${subject.name}: an rp id outside allowedRpIds is refused before the key is touched`,
    async () => {
      await using session = await subject.connect();
      await using key = await subject.authenticator();
      assert.ok(session.allowedRpIds.length > 0, "a session names the rp ids its options may carry");
      const user = await session.resolveUser(second);
      const challenge = await session.creationOptions(user);
      const device = countingDevice(key.authenticator.device);
      const foreign = withRpId(challenge.options, "attacker.example");
      const error = await refusal(
        () =>
          create({
            options: foreign,
            origin: "https://attacker.example",
            allowedRpIds: session.allowedRpIds,
            authenticator: { ...key.authenticator, device },
            interaction: key.interaction,
          }),
        "a foreign rp id",
      );
      assertEquals(error.code, "rp-id-not-allowed");
      assertEquals(device.sent, 0, "nothing was sent to the key");
      deepStrictEqual(await session.listPasskeys(user), []);
    },
  );

  if (subject.transientOutage) {
    await t.step(`${subject.name}: a transient outage is a retryable ProvisioningError`, async () => {
      await using session = await subject.connect();
      const user = await session.resolveUser(first);
      const restore = subject.transientOutage!();
      try {
        const error = await refusal(() => session.listPasskeys(user), "a call during an outage");
        assertEquals(error.retryable, true, `"${error.code}" during an outage is retryable`);
      } finally {
        restore();
      }
      deepStrictEqual(
        await session.listPasskeys(user),
        [],
        "the provider answers again once the outage ends",
      );
    });
  }

  if (subject.group) {
    const group = subject.group;
    await t.step(`${subject.name}: listGroupMembers lists the group's users`, async () => {
      await using session = await subject.connect();
      assert.ok(session.listGroupMembers, "the subject names a group, so the session lists groups");
      const members: DirectoryUser[] = [];
      for await (const user of session.listGroupMembers(group.reference)) members.push(user);
      deepStrictEqual(
        members.map((m) => m.userPrincipalName.toLowerCase()).sort(),
        group.members.map((m) => m.toLowerCase()).sort(),
      );
      await refusal(async () => {
        for await (const _ of session.listGroupMembers!("no group is called this")) { /* drain */ }
      }, "an unknown group");
    });
  }
}

/** The same creation options for another rp id (the `{ publicKey }` wrapper kept if present). */
function withRpId(options: unknown, rpId: string): unknown {
  const record = options as Record<string, unknown>;
  if (record["publicKey"] && typeof record["publicKey"] === "object") {
    return { ...record, publicKey: withRpId(record["publicKey"], rpId) };
  }
  const rp = (record["rp"] ?? {}) as Record<string, unknown>;
  return { ...record, rp: { ...rp, id: rpId } };
}

/** The registration with its clientDataJSON rewritten by `change` (the signature no longer covers it). */
function withClientData(
  credential: RegistrationResponseJSON,
  change: (data: Record<string, unknown>) => Record<string, unknown>,
): RegistrationResponseJSON {
  const data = JSON.parse(new TextDecoder().decode(fromBase64Any(credential.response.clientDataJSON)));
  const clientDataJSON = toBase64Url(new TextEncoder().encode(JSON.stringify(change(data))));
  return { ...credential, response: { ...credential.response, clientDataJSON } };
}
