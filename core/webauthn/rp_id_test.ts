import assert from "node:assert/strict";
import { ProvisioningError } from "../errors.ts";
import { WebAuthnError } from "./errors.ts";
import {
  checkRpId,
  effectiveRpId,
  normalizeOrigin,
  normalizeRpId,
  RpIdNotAllowedError,
  type RpIdRefusal,
} from "./rp_id.ts";

const entra = ["login.microsoft.com", "login.microsoftonline.com", "microsoft.com"];

/** Runs checkRpId and returns the refusal, failing when there is none. */
function refusal(
  rpId: string,
  origin: string,
  allowedRpIds: readonly string[] = [rpId],
): RpIdNotAllowedError {
  try {
    checkRpId({ rpId, origin, allowedRpIds });
  } catch (error) {
    assert.ok(error instanceof RpIdNotAllowedError, `expected RpIdNotAllowedError, got ${String(error)}`);
    return error;
  }
  assert.fail(`rp "${rpId}" from origin "${origin}" was accepted`);
}

const accepted: [string, string, string, readonly string[]][] = [
  ["the origin's own host", "login.microsoft.com", "https://login.microsoft.com", entra],
  ["a registrable parent domain", "microsoft.com", "https://login.microsoft.com", entra],
  ["a parent two labels up", "contoso.co.uk", "https://a.b.contoso.co.uk", ["contoso.co.uk"]],
  ["the host on a non-default port", "login.microsoft.com", "https://login.microsoft.com:8443", entra],
  ["uppercase rp id and allow-list entries", "LOGIN.Microsoft.COM", "https://login.microsoft.com", [
    "Login.Microsoft.Com",
  ]],
  ["an IDN rp id against its punycode origin", "bücher.example", "https://xn--bcher-kva.example", [
    "xn--bcher-kva.example",
  ]],
  [
    "a punycode rp id against an IDN allow-list entry",
    "xn--bcher-kva.example",
    "https://shop.xn--bcher-kva.example",
    ["BÜCHER.example"],
  ],
  ["a github.io site's own host", "alice.github.io", "https://alice.github.io", ["alice.github.io"]],
  ["an IP address equal to the origin's", "127.0.0.1", "https://127.0.0.1:8443", ["127.0.0.1"]],
  ["localhost over http", "localhost", "http://localhost:3000", ["localhost"]],
  ["a loopback address over http", "127.0.0.1", "http://127.0.0.1:8080", ["127.0.0.1"]],
  ["IPv6 loopback over http", "[::1]", "http://[::1]:8080", ["[::1]"]],
  ["a .localhost host over http", "sandbox.localhost", "http://sandbox.localhost:9000", [
    "sandbox.localhost",
  ]],
];

for (const [name, rpId, origin, allowedRpIds] of accepted) {
  Deno.test(`accepts ${name}`, () => {
    checkRpId({ rpId, origin, allowedRpIds });
  });
}

const refused: [string, string, string, RpIdRefusal, string][] = [
  [
    "an unrelated domain",
    "evil.example",
    "https://login.microsoft.com",
    "not-registrable-suffix",
    'Cannot create a credential for rp "evil.example": it is not a registrable suffix of origin "https://login.microsoft.com"',
  ],
  [
    "a sibling domain",
    "login.microsoftonline.com",
    "https://login.microsoft.com",
    "not-registrable-suffix",
    'Cannot create a credential for rp "login.microsoftonline.com": it is not a registrable suffix of origin "https://login.microsoft.com"',
  ],
  [
    "a sibling subdomain",
    "account.microsoft.com",
    "https://login.microsoft.com",
    "not-registrable-suffix",
    'Cannot create a credential for rp "account.microsoft.com": it is not a registrable suffix of origin "https://login.microsoft.com"',
  ],
  [
    "a subdomain of the origin",
    "deeper.login.microsoft.com",
    "https://login.microsoft.com",
    "not-registrable-suffix",
    'Cannot create a credential for rp "deeper.login.microsoft.com": it is not a registrable suffix of origin "https://login.microsoft.com"',
  ],
  [
    "a look-alike that only ends with the same letters",
    "crosoft.com",
    "https://login.microsoft.com",
    "not-registrable-suffix",
    'Cannot create a credential for rp "crosoft.com": it is not a registrable suffix of origin "https://login.microsoft.com"',
  ],
  [
    'the public suffix "com"',
    "com",
    "https://login.microsoft.com",
    "not-registrable-suffix",
    'Cannot create a credential for rp "com": it is a public suffix (like "com", "co.uk" or "github.io"), which no origin may claim; the origin is "https://login.microsoft.com"',
  ],
  [
    'the public suffix "co.uk"',
    "co.uk",
    "https://www.contoso.co.uk",
    "not-registrable-suffix",
    'Cannot create a credential for rp "co.uk": it is a public suffix (like "com", "co.uk" or "github.io"), which no origin may claim; the origin is "https://www.contoso.co.uk"',
  ],
  [
    'the private public suffix "github.io"',
    "github.io",
    "https://alice.github.io",
    "not-registrable-suffix",
    'Cannot create a credential for rp "github.io": it is a public suffix (like "com", "co.uk" or "github.io"), which no origin may claim; the origin is "https://alice.github.io"',
  ],
  [
    "a domain inside the host's public suffix",
    "amazonaws.com",
    "https://bucket.s3.amazonaws.com",
    "not-registrable-suffix",
    'Cannot create a credential for rp "amazonaws.com": it is a public suffix (like "com", "co.uk" or "github.io"), which no origin may claim; the origin is "https://bucket.s3.amazonaws.com"',
  ],
  [
    "a different IP address",
    "10.0.0.2",
    "https://10.0.0.1",
    "not-registrable-suffix",
    'Cannot create a credential for rp "10.0.0.2": origin "https://10.0.0.1" is on an IP address, and an IP-address rp id must be exactly that address',
  ],
  [
    "a suffix of an IP address",
    "0.0.1",
    "https://10.0.0.1",
    "invalid-rp-id",
    'Cannot create a credential for rp "0.0.1": an rp id is a bare domain (or IP address), without scheme, port, path, spaces or trailing dot',
  ],
  [
    "a domain for an IP-address origin",
    "localhost",
    "http://127.0.0.1:8080",
    "not-registrable-suffix",
    'Cannot create a credential for rp "localhost": origin "http://127.0.0.1:8080" is on an IP address, and an IP-address rp id must be exactly that address',
  ],
  [
    "an http origin that is not loopback",
    "login.microsoft.com",
    "http://login.microsoft.com",
    "invalid-origin",
    'Cannot create a credential for rp "login.microsoft.com": origin "http://login.microsoft.com" is plain http on a host other than localhost or a loopback address',
  ],
  [
    "an http origin on a private address",
    "10.0.0.1",
    "http://10.0.0.1",
    "invalid-origin",
    'Cannot create a credential for rp "10.0.0.1": origin "http://10.0.0.1" is plain http on a host other than localhost or a loopback address',
  ],
  [
    "a non-web origin",
    "login.microsoft.com",
    "ftp://login.microsoft.com",
    "invalid-origin",
    'Cannot create a credential for rp "login.microsoft.com": origin "ftp://login.microsoft.com" is not an https origin',
  ],
  [
    "an origin that is not a URL",
    "login.microsoft.com",
    "login.microsoft.com",
    "invalid-origin",
    'Cannot create a credential for rp "login.microsoft.com": origin "login.microsoft.com" is not a URL',
  ],
  [
    "an origin with a path",
    "login.microsoft.com",
    "https://login.microsoft.com/common/login",
    "invalid-origin",
    'Cannot create a credential for rp "login.microsoft.com": origin "https://login.microsoft.com/common/login" is not in serialized form; use "https://login.microsoft.com" (an origin has no path, query, fragment or credentials)',
  ],
  [
    "an origin with a trailing slash",
    "login.microsoft.com",
    "https://login.microsoft.com/",
    "invalid-origin",
    'Cannot create a credential for rp "login.microsoft.com": origin "https://login.microsoft.com/" is not in serialized form; use "https://login.microsoft.com"',
  ],
  [
    "an origin with a trailing dot",
    "login.microsoft.com",
    "https://login.microsoft.com.",
    "invalid-origin",
    'Cannot create a credential for rp "login.microsoft.com": origin "https://login.microsoft.com." has no usable host',
  ],
];

for (const [name, rpId, origin, reason, message] of refused) {
  Deno.test(`refuses ${name}`, () => {
    const error = refusal(rpId, origin);
    assert.equal(error.reason, reason);
    assert.equal(error.message, message);
    assert.equal(error.code, "rp-id-not-allowed");
    assert.equal(error.origin, origin);
    assert.ok(error.hint && error.hint.length > 20, "a refusal says what to do");
  });
}

const malformedRpIds = [
  "https://login.microsoft.com",
  "login.microsoft.com:443",
  "login.microsoft.com/path",
  "login.microsoft.com.",
  "user@login.microsoft.com",
  "login.microsoft.com?x",
  "login.microsoft.com#x",
  "log%69n.microsoft.com",
  "login .microsoft.com",
  "login\t.microsoft.com",
  "login\n.microsoft.com",
  "login..microsoft.com",
  ".microsoft.com",
  "",
  "127.1",
  "0x7f.0.0.1",
  "[0:0::1]",
  `${"a".repeat(64)}.com`,
  "a.".repeat(130) + "com",
];

Deno.test("refuses rp ids with a scheme, port, path, userinfo, escape, whitespace, empty label or trailing dot", () => {
  for (const rpId of malformedRpIds) {
    assert.equal(normalizeRpId(rpId), undefined, JSON.stringify(rpId));
    const error = refusal(rpId, "https://login.microsoft.com", ["login.microsoft.com"]);
    assert.equal(error.reason, "invalid-rp-id", JSON.stringify(rpId));
    assert.ok(error.message.includes(JSON.stringify(rpId.length > 80 ? `${rpId.slice(0, 80)}…` : rpId)));
  }
});

Deno.test("refuses an rp id the origin may use but the allow-list does not name, listing the allow-list", () => {
  const error = refusal("microsoft.com", "https://login.microsoft.com", [
    "login.microsoft.com",
    "login.microsoftonline.com",
  ]);
  assert.equal(error.reason, "not-allowed");
  assert.equal(
    error.message,
    'Cannot create a credential for rp "microsoft.com": it is not on the allowed rp ids ("login.microsoft.com", "login.microsoftonline.com"); origin "https://login.microsoft.com"',
  );
  assert.match(error.hint ?? "", /add it to the provider's allowed rp ids/);
  assert.deepStrictEqual(error.allowedRpIds, ["login.microsoft.com", "login.microsoftonline.com"]);
  assert.equal(error.rpId, "microsoft.com");
  assert.ok(error instanceof WebAuthnError && error instanceof ProvisioningError);
  assert.equal(error.name, "RpIdNotAllowedError");

  const empty = refusal("login.microsoft.com", "https://login.microsoft.com", []);
  assert.match(empty.message, /the list of allowed rp ids is empty/);
});

Deno.test("an allow-list entry is matched exactly, not as a suffix", () => {
  assert.equal(
    refusal("login.microsoft.com", "https://login.microsoft.com", ["microsoft.com"]).reason,
    "not-allowed",
  );
  assert.equal(
    refusal("microsoft.com", "https://login.microsoft.com", ["login.microsoft.com"]).reason,
    "not-allowed",
  );
});

Deno.test("a malformed allow-list entry is a programming error (TypeError)", () => {
  assert.throws(
    () =>
      checkRpId({
        rpId: "login.microsoft.com",
        origin: "https://login.microsoft.com",
        allowedRpIds: ["https://login.microsoft.com"],
      }),
    (error: unknown) =>
      error instanceof TypeError && /allowed rp id "https:\/\/login.microsoft.com"/.test(error.message),
  );
});

Deno.test("words the refusal for a sign-in when asked to", () => {
  try {
    checkRpId({
      rpId: "evil.example",
      origin: "https://login.microsoft.com",
      allowedRpIds: entra,
      ceremony: "get",
    });
    assert.fail("accepted");
  } catch (error) {
    assert.ok(error instanceof RpIdNotAllowedError);
    assert.match(error.message, /^Cannot sign in for rp "evil.example": /);
  }
});

Deno.test("effectiveRpId defaults to the origin's host and normalises a given rp id", () => {
  assert.equal(effectiveRpId(undefined, "https://login.microsoft.com"), "login.microsoft.com");
  assert.equal(effectiveRpId(undefined, "https://login.microsoft.com:8443"), "login.microsoft.com");
  assert.equal(effectiveRpId(undefined, "http://localhost:3000"), "localhost");
  assert.equal(effectiveRpId("Microsoft.COM", "https://login.microsoft.com"), "microsoft.com");
  assert.equal(effectiveRpId("bücher.example", "https://bücher.example"), "xn--bcher-kva.example");
  // A malformed rp id comes back as given, for checkRpId to refuse with the whole story.
  assert.equal(effectiveRpId("evil.example:443", "https://login.microsoft.com"), "evil.example:443");
  assert.equal(
    refusal(effectiveRpId("evil.example:443", "https://login.microsoft.com"), "https://login.microsoft.com")
      .reason,
    "invalid-rp-id",
  );
  assert.throws(
    () => effectiveRpId(undefined, "http://login.microsoft.com"),
    (error: unknown) =>
      error instanceof RpIdNotAllowedError && error.reason === "invalid-origin" &&
      error.message ===
        'Cannot choose an rp id from origin "http://login.microsoft.com": origin "http://login.microsoft.com" is plain http on a host other than localhost or a loopback address',
  );
});

Deno.test("normalizeOrigin serializes what an admin typed and refuses what is no origin", () => {
  assert.equal(normalizeOrigin("https://Login.Microsoft.com/"), "https://login.microsoft.com");
  assert.equal(normalizeOrigin("https://login.microsoft.com:443"), "https://login.microsoft.com");
  assert.equal(normalizeOrigin("https://bücher.example"), "https://xn--bcher-kva.example");
  assert.equal(normalizeOrigin("http://localhost:8080/"), "http://localhost:8080");
  for (
    const origin of [
      "http://login.microsoft.com",
      "https://login.microsoft.com/path",
      "https://u:p@login.microsoft.com",
      "null",
      "file:///etc/passwd",
      "https://a.com.",
    ]
  ) {
    assert.throws(
      () => normalizeOrigin(origin),
      (error: unknown) => error instanceof RpIdNotAllowedError && error.reason === "invalid-origin",
      origin,
    );
  }
});
