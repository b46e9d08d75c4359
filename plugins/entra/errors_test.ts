/**
 * Graph failures become reason codes and messages an admin can act on. Bodies are Graph's error
 * envelope (https://learn.microsoft.com/graph/errors) with the codes and messages Microsoft
 * documents or Graph has been reported to send; policy refusals, whose wording Microsoft does not
 * document, use the words the sandbox sends.
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
    "the self-service known issue is self-service-setup-off",
    failure(
      "creation-options",
      400,
      "badRequest",
      "Passkey (FIDO2) provisioning requires 'Allow self-service setup' (isSelfServiceRegistrationAllowed) to be enabled in the FIDO2 authentication method policy.",
    ),
    "self-service-setup-off",
    /"Allow self-service setup" turned off/,
  ],
  [
    "attestation enforcement rejecting a key is attestation-enforced",
    failure(
      "register-passkey",
      400,
      "badRequest",
      "Attestation is enforced by the FIDO2 authentication method policy and the security key's attestation could not be verified (self attestation).",
    ),
    "attestation-enforced",
    /attestation enforcement is on/,
  ],
  [
    "an AAGUID outside the allowed list is aaguid-not-allowed",
    failure(
      "register-passkey",
      400,
      "badRequest",
      "The security key's AAGUID '70726f76-6973-696f-6e69-6e67736b0001' is not in the allowed list of the FIDO2 authentication method policy's key restrictions.",
    ),
    "aaguid-not-allowed",
    /key restrictions do not allow this key's AAGUID/,
  ],
  [
    "a Passkey (FIDO2) method not enabled for the user is fido2-disabled",
    failure(
      "creation-options",
      400,
      "badRequest",
      "User 'alice@contoso.com' is not enabled for the Passkey (FIDO2) authentication method by policy.",
    ),
    "fido2-disabled",
    /disabled, or not enabled for this user/,
  ],
  [
    "a disabled TAP method is tap-disabled",
    failure(
      "create-tap",
      400,
      "badRequest",
      "The Temporary Access Pass authentication method is disabled in the authentication methods policy.",
    ),
    "tap-disabled",
    /Temporary Access Pass policy does not allow/,
  ],
  [
    "405 on one's own account is self-provisioning",
    failure("creation-options", 405, "methodNotAllowed", "The method is not supported for this URL."),
    "self-provisioning",
    /own account \(405 Method Not Allowed\)/,
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
    "a display name Graph refuses is display-name-invalid",
    failure(
      "register-passkey",
      400,
      "badRequest",
      "The displayName must be between 1 and 30 characters long; it is 31.",
    ),
    "display-name-invalid",
    /display name/,
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

Deno.test("every reason of issue 3 has a distinct code", () => {
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
      "self-provisioning",
      "throttled",
      "display-name-invalid",
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
