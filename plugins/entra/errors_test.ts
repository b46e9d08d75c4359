/**
 * Graph failures become reason codes and messages an admin can act on. Bodies are Graph's error
 * envelope (https://learn.microsoft.com/graph/errors) with the codes and messages Microsoft
 * documents or Graph has been reported to send. Policy refusals, whose wording Microsoft does not
 * document, carry a neutral message here: the reason comes from the policy read back, never from
 * the words, and Graph's own message and request-id are always shown.
 */
import { assert, assertEquals } from "../../test/assert.ts";
import {
  explainGraphFailure,
  type GraphFailure,
  type GraphOperation,
  parseGraphErrorBody,
} from "./errors.ts";

function failure(
  operation: GraphOperation,
  status: number | undefined,
  code: string,
  message: string,
  extra: Partial<GraphFailure> = {},
): GraphFailure {
  return {
    operation,
    action: operation === "create-tap" ? "create a Temporary Access Pass" : "register a passkey",
    user: "alice@contoso.com",
    endpoint: { method: "POST", path: "/users/4562bcc8/authentication/fido2Methods", version: "v1.0" },
    ...(status === undefined ? {} : { status }),
    envelope: {
      error: {
        code,
        message,
        innerError: {
          date: "2024-12-01T12:43:54",
          "request-id": "e279fa99",
          "client-request-id": "3084846a",
        },
      },
    },
    ...extra,
  };
}

function withoutEnvelope(input: GraphFailure, extra: Partial<GraphFailure>): GraphFailure {
  const { envelope: _envelope, ...rest } = input;
  return { ...rest, ...extra };
}

const cases: [name: string, failure: GraphFailure, reason: string, words: RegExp][] = [
  [
    "a user lookup answered 404 is user-not-found",
    failure(
      "resolve-user",
      404,
      "Request_ResourceNotFound",
      "Resource 'alice@contoso.com' does not exist or one of its queried reference-property objects are not present.",
    ),
    "user-not-found",
    /no user has this object id, user principal name or mail/,
  ],
  [
    "a resolved user unknown to the methods endpoint is user-not-synced",
    failure("create-tap", 404, "Request_ResourceNotFound", "Resource '4562bcc8' does not exist."),
    "user-not-synced",
    /authentication methods service does not know them yet/,
  ],
  [
    "403 Authorization_RequestDenied names the permissions and the role",
    failure(
      "register-passkey",
      403,
      "Authorization_RequestDenied",
      "Insufficient privileges to complete the operation.",
    ),
    "insufficient-privileges",
    /UserAuthMethod-Passkey\.ReadWrite\.All or UserAuthenticationMethod\.ReadWrite\.All.*Authentication Administrator/,
  ],
  [
    "403 accessDenied on a TAP names the TAP permission",
    failure("create-tap", 403, "accessDenied", "Request Authorization failed"),
    "insufficient-privileges",
    /UserAuthMethod-TAP\.ReadWrite\.All/,
  ],
  [
    "a refusal while the policy has self-service setup off is self-service-setup-off",
    failure("creation-options", 400, "badRequest", "Bad request.", {
      policy: { fido2: { state: "enabled", isSelfServiceRegistrationAllowed: false } },
    }),
    "self-service-setup-off",
    /"Allow self-service setup" turned off.*Graph said "Bad request\."/,
  ],
  [
    "a refused registration while attestation is enforced is attestation-enforced",
    failure("register-passkey", 400, "badRequest", "Bad request.", {
      policy: {
        fido2: { state: "enabled", isSelfServiceRegistrationAllowed: true, attestationEnforced: true },
      },
    }),
    "attestation-enforced",
    /attestation enforcement is on/,
  ],
  [
    "a refused registration of a key outside the allowed AAGUIDs is aaguid-not-allowed",
    failure("register-passkey", 400, "badRequest", "Bad request.", {
      policy: {
        fido2: {
          state: "enabled",
          isSelfServiceRegistrationAllowed: true,
          attestationEnforced: true,
          keyRestrictions: {
            isEnforced: true,
            enforcementType: "allow",
            aaGuids: ["cb69481e-8ff7-4039-93ec-0a2729a154a8"],
          },
        },
        keyAaguid: "70726f76-6973-696f-6e69-6e67736b0001",
      },
    }),
    "aaguid-not-allowed",
    /key restrictions do not allow this key's AAGUID 70726f76-6973-696f-6e69-6e67736b0001/,
  ],
  [
    "a refusal while the Passkey (FIDO2) method is disabled is fido2-disabled",
    failure("creation-options", 400, "badRequest", "Bad request.", {
      policy: { fido2: { state: "disabled" } },
    }),
    "fido2-disabled",
    /Passkey \(FIDO2\) method is disabled/,
  ],
  [
    "a refused TAP while the TAP method is disabled is tap-disabled",
    failure("create-tap", 400, "badRequest", "Bad request.", { policy: { tap: { state: "disabled" } } }),
    "tap-disabled",
    /Temporary Access Pass method is disabled/,
  ],
  [
    "a 400 with no policy that explains it keeps Graph's words, whatever they say",
    failure(
      "creation-options",
      400,
      "badRequest",
      "Passkey (FIDO2) provisioning requires 'Allow self-service setup' to be enabled.",
      { policy: { fido2: { state: "enabled", isSelfServiceRegistrationAllowed: true } } },
    ),
    "graph-error",
    /Graph answered "Passkey \(FIDO2\) provisioning requires 'Allow self-service setup' to be enabled\."/,
  ],
  [
    "a 405 (undocumented for this API) is shown as Graph sent it",
    failure("creation-options", 405, "methodNotAllowed", "The method is not supported for this URL."),
    "graph-error",
    /Graph answered "The method is not supported for this URL\." \(POST .*405 methodNotAllowed, request-id e279fa99\)/,
  ],
  [
    "429 after every retry is throttled",
    failure("register-passkey", 429, "TooManyRequests", "Please retry again later.", {
      attempts: 6,
      retryAfterMs: 2128,
      exhausted: true,
    }),
    "throttled",
    /still throttling after 6 attempts \(HTTP 429\); it last asked to wait 2\.1 s/,
  ],
  [
    "the @odata.type body error keeps Graph's words",
    failure(
      "register-passkey",
      400,
      "badRequest",
      "The request is missing a fido2AuthenticationMethod entity with a displayName and publicKeyCredential in the request body. All other properties will be ignored.",
    ),
    "graph-error",
    /Graph answered "The request is missing a fido2AuthenticationMethod entity/,
  ],
  [
    "401 is unauthorized",
    failure(
      "list-passkeys",
      401,
      "InvalidAuthenticationToken",
      "Access token has expired or is not yet valid.",
    ),
    "unauthorized",
    /refused the access token/,
  ],
  [
    "a write without an answer is outcome-unknown",
    withoutEnvelope(failure("register-passkey", undefined, "", ""), { outcomeUnknown: true }),
    "outcome-unknown",
    /may or may not have done it/,
  ],
  [
    "no connection after every retry is graph-unreachable",
    withoutEnvelope(failure("list-passkeys", undefined, "", ""), {
      exhausted: true,
      cause: new TypeError("connection reset"),
    }),
    "graph-unreachable",
    /could not be reached \(connection reset\)/,
  ],
];

for (const [name, input, reason, words] of cases) {
  Deno.test(name, () => {
    const error = explainGraphFailure(input);
    assertEquals(error.code, reason);
    assert.match(error.message, words);
    const subject = input.operation === "resolve-user" ? '"alice@contoso.com"' : "for alice@contoso.com";
    assert.ok(
      error.message.startsWith(`Cannot ${input.action} ${subject}: `),
      `message names action and user: ${error.message}`,
    );
    assert.match(error.message, /\(POST \/v1\.0\/users\/4562bcc8\/authentication\/fido2Methods/);
    if (input.envelope) assertEquals(error.requestId, "e279fa99");
    if (reason !== "graph-error" && reason !== "outcome-unknown") assert.ok(error.hint, "has a hint");
  });
}

Deno.test("every reason Graph's answers and the policy decide has a distinct code", () => {
  const reasons = new Set(cases.map(([, input]) => explainGraphFailure(input).code));
  for (
    const expected of [
      "user-not-found",
      "user-not-synced",
      "insufficient-privileges",
      "self-service-setup-off",
      "attestation-enforced",
      "aaguid-not-allowed",
      "tap-disabled",
      "fido2-disabled",
      "throttled",
    ]
  ) assert.ok(reasons.has(expected), expected);
});

Deno.test("error bodies that are not Graph's envelope are not parsed", () => {
  assertEquals(parseGraphErrorBody("<html><body>Bad gateway</body></html>"), undefined);
  assertEquals(parseGraphErrorBody(""), undefined);
  assertEquals(parseGraphErrorBody('{"message":"no envelope"}'), undefined);
  // The throttling page's sample (https://learn.microsoft.com/graph/throttling#sample-response).
  const throttled = parseGraphErrorBody(JSON.stringify({
    error: {
      code: "TooManyRequests",
      innerError: {
        code: "429",
        date: "2020-08-18T12:51:51",
        message: "Please retry after",
        "request-id": "94fb3b52-452a-4535-a601-69e0a90e3aa2",
        status: "429",
      },
      message: "Please retry again later.",
    },
  }));
  assertEquals(throttled?.error.innerError?.["request-id"], "94fb3b52-452a-4535-a601-69e0a90e3aa2");
});
