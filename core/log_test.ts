import fc from "fast-check";
import { getConfig } from "@logtape/logtape";
import { assert, assertEquals, deepStrictEqual } from "../test/assert.ts";
import { memoryWriter } from "./cli/context.ts";
import { ProvisioningError } from "./errors.ts";
import {
  configureLogging,
  formatLogLine,
  getLog,
  isSecretName,
  type LogFormat,
  REDACTED,
  redactFields,
  redactText,
  redactValue,
} from "./log.ts";

const formats: LogFormat[] = ["text", "json"];

/** Runs `fn` with logging configured to a fresh buffer and returns what was written. */
function captured(format: LogFormat, fn: () => void, verbose = false): string {
  const writer = memoryWriter();
  using _logging = configureLogging({ format, verbose, writer });
  fn();
  return writer.text();
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text.split("\n").filter((line) => line.length > 0).map((line) => JSON.parse(line));
}

/** Every way a caller can hand a secret to a logger. */
function logEverywhere(secret: string): void {
  const log = getLog("test");
  log.info(`TAP is ${secret}`);
  log.info("TAP is {value}", { value: secret });
  log.info("Issued", { detail: secret });
  log.info("Issued", { user: { methods: [{ note: `x ${secret} y` }] } });
  log.info({ body: new Map([["note", secret]]) });
  log.info`Template ${secret}`;
  log.warn(new Error(`Graph rejected ${secret}`));
  log.error("Cannot register passkey", new Error("outer", { cause: new Error(`inner ${secret}`) }));
  log.error(
    "Cannot issue TAP: {error.message}",
    {
      error: new ProvisioningError("tap-failed", `Cannot issue TAP ${secret}`, { hint: `Delete ${secret}` }),
    },
  );
  const error = Object.assign(new Error("failed"), { response: { note: secret } });
  log.error("failed: {error}", { error });
}

Deno.test("a registered TAP never reaches the output: message, fields, nested, errors, in both formats", () => {
  const tap = "Xk9#pQ2-v7Lm$w";
  using _tap = redactValue(tap);
  for (const format of formats) {
    for (const verbose of [false, true]) {
      const out = captured(format, () => logEverywhere(tap), verbose);
      assert.ok(!out.includes(tap), `${format}: ${out}`);
      assert.ok(!out.includes(encodeURIComponent(tap)), out);
      assert.ok(out.includes(REDACTED), out);
      assertEquals(out.trimEnd().split("\n").filter((line) => !line.startsWith("    ")).length, 10);
    }
  }
});

Deno.test("json lines carry time, level, category, message and fields", () => {
  const out = captured(
    "json",
    () => getLog("jobs").info("Registered {user}", { user: "alice@contoso.com", row: 2 }),
  );
  const [line, ...rest] = jsonLines(out);
  assertEquals(rest.length, 0);
  assert.ok(line !== undefined);
  deepStrictEqual(Object.keys(line), ["time", "level", "category", "message", "fields"]);
  assert.match(String(line.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assertEquals(line.level, "info");
  assertEquals(line.category, "provisioning.jobs");
  assertEquals(line.message, "Registered alice@contoso.com");
  deepStrictEqual(line.fields, { user: "alice@contoso.com", row: 2 });
});

Deno.test("text lines show the fields the message does not", () => {
  const out = captured(
    "text",
    () => getLog("jobs").info("Registered {user}", { user: "alice", row: 2, note: "a b" }),
  );
  assert.match(out, /^\S+Z INFO {2}jobs: Registered alice row=2 note="a b"\n$/);
});

Deno.test("a secret named by its placeholder is redacted in the message without being registered", () => {
  for (const format of formats) {
    const out = captured(format, () => {
      getLog("pin").info("Using PIN {pin} for {user}", { pin: "482913", user: "alice" });
      getLog("pin").info("Body {request.body.client_secret}", {
        request: { body: { client_secret: "s3cr3t" } },
      });
      getLog("pin").info("All {*}", { temporaryAccessPass: "Abc-123-xyz", upn: "bob" });
    });
    assert.ok(!out.includes("482913") && !out.includes("s3cr3t") && !out.includes("Abc-123-xyz"), out);
    assert.ok(out.includes("alice") && out.includes("bob"), out);
  }
});

Deno.test("fields whose name says secret are redacted at any depth and in any spelling", () => {
  const names = [
    "pin",
    "PIN",
    "newPin",
    "tap",
    "temporaryAccessPass",
    "password",
    "secret",
    "clientSecret",
    "client_secret",
    "token",
    "access_token",
    "refreshToken",
    "id_token",
    "assertion",
    "client_assertion",
    "privateKey",
    "private-key",
    "key",
    "apiKey",
    "Authorization",
    "cookie",
    "Set-Cookie",
    "passphrase",
    "pinUvAuthToken",
  ];
  for (const name of names) assert.ok(isSecretName(name), name);
  for (
    const name of [
      "user",
      "keyId",
      "skipping",
      "pinRetries",
      "tokenType",
      "aaguid",
      "credentialId",
      "tapping",
    ]
  ) {
    assert.ok(!isSecretName(name), name);
  }
  for (const format of formats) {
    const out = captured(format, () => {
      for (const name of names) {
        getLog("fields").info("nested", { outer: { list: [{ [name]: `value-of-${name}` }] } });
      }
      getLog("fields").info("plain", { headers: new Headers({ authorization: "Basic dXNlcjpwYXNz" }) });
    });
    for (const name of names) assert.ok(!out.includes(`value-of-${name}`), `${format} ${name}`);
    assert.ok(!out.includes("dXNlcjpwYXNz"), out);
  }
});

Deno.test("JWTs, bearer tokens, PEM private keys and secret pairs are redacted wherever they appear", () => {
  const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
  const pem =
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----";
  const texts = [
    `token ${jwt} expired`,
    "Authorization: Bearer abc.def-ghi_jkl",
    `key file:\n${pem}\nend`,
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB (truncated",
    "grant_type=client_credentials&client_secret=Zm9vYmFyYmF6cXV4&scope=x",
    "x-api-key=QUJDREVGR0hJSktMTU5PUA more",
    '{"access_token":"opaque-value-1","token_type":"Bearer"}',
  ];
  const leaks = [
    "c2lnbmF0dXJlLWJ5dGVz",
    "eyJzdWIiOiJhbGljZSJ9",
    "abc.def-ghi_jkl",
    "MIGHAgEAMBMGByqGSM49",
    "MHcCAQEEIB",
    "Zm9vYmFyYmF6cXV4",
    "QUJDREVGR0hJSktMTU5PUA",
    "opaque-value-1",
  ];
  for (const format of formats) {
    const out = captured(format, () => {
      for (const text of texts) {
        getLog("patterns").info(text);
        getLog("patterns").info("field", { detail: text });
        getLog("patterns").error(new Error(text));
      }
    });
    for (const leak of leaks) assert.ok(!out.includes(leak), `${format} leaks ${leak}: ${out}`);
    assert.ok(out.includes("grant_type=client_credentials") && out.includes("scope=x"), out);
  }
  assertEquals(redactText(`a ${pem} b`), "a [redacted private key] b");
});

Deno.test("an Error's own fields, cause chain and stack are redacted", () => {
  const error = Object.assign(
    new ProvisioningError("graph-error", "Cannot list methods: 401", { cause: new TypeError("bad token") }),
    { token: "eyJ.not.jwt", status: 401 },
  );
  const line = jsonLines(captured("json", () => getLog("errors").error(error), true))[0];
  const fields = line?.fields as { error: Record<string, unknown> };
  assertEquals(fields.error.name, "ProvisioningError");
  assertEquals(fields.error.code, "graph-error");
  assertEquals(fields.error.token, REDACTED);
  assertEquals(fields.error.status, 401);
  deepStrictEqual((fields.error.cause as Record<string, unknown>).message, "bad token");
  assert.match(String(fields.error.stack), /^ProvisioningError: Cannot list methods: 401\n\s+at /);
  const quiet = jsonLines(captured("json", () => getLog("errors").error(error)))[0];
  assertEquals((quiet?.fields as { error: Record<string, unknown> }).error.stack, undefined);
});

Deno.test("encoded forms of a registered secret are redacted too", () => {
  const secret = 'p+ss w/"rd&=\\';
  using _secret = redactValue(secret);
  const text = `url ?a=${encodeURIComponent(secret)} form ${new URLSearchParams({ a: secret })} json ${
    JSON.stringify({ v: secret })
  }`;
  const out = redactText(text);
  for (const form of [secret, encodeURIComponent(secret), JSON.stringify(secret).slice(1, -1)]) {
    assert.ok(!out.includes(form), out);
  }
});

Deno.test("redactValue registrations are counted and end when disposed", () => {
  const first = redactValue("T4P-abcdef");
  const second = redactValue("T4P-abcdef");
  first[Symbol.dispose]();
  first[Symbol.dispose]();
  assertEquals(redactText("T4P-abcdef"), REDACTED);
  second[Symbol.dispose]();
  assertEquals(redactText("T4P-abcdef"), "T4P-abcdef");
  using _empty = redactValue("");
  assertEquals(redactText("unchanged"), "unchanged");
});

Deno.test("debug lines are written only with verbose", () => {
  const log = () => {
    getLog("jobs").debug("step");
    getLog("jobs").info("done");
  };
  assertEquals(jsonLines(captured("json", log)).map((line) => line.message).join(","), "done");
  assertEquals(jsonLines(captured("json", log, true)).map((line) => line.message).join(","), "step,done");
});

Deno.test("text lines escape control characters so a user name cannot forge a line", () => {
  const user = "eve\n2025-01-01T00:00:00.000Z INFO  jobs: Registered admin\x1b[2K";
  const out = captured("text", () => getLog("jobs").warn("Cannot resolve {user}", { user, note: user }));
  assertEquals(out.split("\n").length, 2);
  assert.ok(!out.includes("\x1b"), out);
  assert.ok(out.includes("eve\\n2025"), out);
});

Deno.test("disposing the configuration resets LogTape; loggers are silent until configured again", () => {
  const writer = memoryWriter();
  {
    using _logging = configureLogging({ writer });
    assert.ok(getConfig() !== null);
  }
  assertEquals(getConfig(), null);
  getLog("jobs").error("nobody listens");
  assertEquals(writer.text(), "");
  const again = memoryWriter();
  {
    using _logging = configureLogging({ writer: again, format: "json" });
    getLog("jobs").info("heard");
  }
  assertEquals(jsonLines(again.text()).length, 1);
});

Deno.test("a second configuration replaces the first, and the first handle leaves it alone", () => {
  const first = memoryWriter();
  const second = memoryWriter();
  const a = configureLogging({ writer: first });
  const b = configureLogging({ writer: second });
  a[Symbol.dispose]();
  getLog("jobs").info("to the second");
  b[Symbol.dispose]();
  assertEquals(first.text(), "");
  assert.match(second.text(), /to the second/);
  assertEquals(getConfig(), null);
});

Deno.test("odd values never crash the sink: cycles, bytes, deep nesting, JWK private members", () => {
  const cycle: Record<string, unknown> = { name: "loop" };
  cycle.self = cycle;
  let deep: Record<string, unknown> = { leaf: true };
  for (let i = 0; i < 20; i++) deep = { deep };
  const jwk = { kty: "EC", crv: "P-256", x: "pub-x", y: "pub-y", d: "private-d-value" };
  const fields = redactFields({
    cycle,
    bytes: new Uint8Array(32),
    deep,
    jwk,
    big: 12n,
    when: new Date(0),
    fn: () => 1,
    throwing: {
      get boom() {
        throw new Error("no");
      },
    },
    many: new AggregateError([new Error("first TAP-0x1"), new Error("second")], "two failed"),
  }) as Record<string, unknown>;
  assertEquals(fields.throwing, "[unreadable]");
  deepStrictEqual((fields.many as { errors: { message: string }[] }).errors.map((error) => error.message), [
    "first TAP-0x1",
    "second",
  ]);
  deepStrictEqual(fields.cycle, { name: "loop", self: "[circular]" });
  assertEquals(fields.bytes, "[32 bytes]");
  deepStrictEqual(fields.jwk, { kty: "EC", crv: "P-256", x: "pub-x", y: "pub-y", d: REDACTED });
  assertEquals(fields.big, "12");
  assertEquals(fields.when, "1970-01-01T00:00:00.000Z");
  assertEquals(fields.fn, "[function]");
  assert.ok(JSON.stringify(fields).includes("[…]"));
  for (const format of formats) {
    const out = captured(format, () => getLog("odd").info("odd {cycle}", { cycle, deep, jwk }));
    assert.ok(!out.includes("private-d-value"), out);
  }
});

Deno.test("formatLogLine redacts what callers format themselves", () => {
  using _pin = redactValue("739155");
  const entry = {
    time: Date.UTC(2025, 0, 2, 3, 4, 5),
    level: "warning" as const,
    category: ["provisioning", "progress"],
    message: "PIN 739155 blocked",
    fields: { event: "user-finished", pin: "739155" },
  };
  assertEquals(
    formatLogLine(entry, "text"),
    "2025-01-02T03:04:05.000Z WARN  progress: PIN [redacted] blocked event=user-finished pin=[redacted]\n",
  );
  deepStrictEqual(JSON.parse(formatLogLine(entry, "json")), {
    time: "2025-01-02T03:04:05.000Z",
    level: "warning",
    category: "provisioning.progress",
    message: "PIN [redacted] blocked",
    fields: { event: "user-finished", pin: REDACTED },
  });
});

Deno.test("property: a registered secret never appears in any line, in either format", () => {
  const alphabet = "ABCxyz0189-_+/=.~!$%&'\"\\ {}#é😀";
  const secretArbitrary = fc.array(fc.constantFrom(...alphabet), { minLength: 12, maxLength: 40 }).map((
    chars,
  ) => chars.join(""));
  fc.assert(
    fc.property(secretArbitrary, fc.string(), fc.constantFrom(...formats), (secret, around, format) => {
      using _secret = redactValue(secret);
      const out = captured(format, () => {
        getLog("prop").info(`${around}${secret}${around}`, { field: `${around}${secret}`, [around]: secret });
        getLog("prop").error(new Error(`${secret}${around}`, { cause: { detail: secret } }));
      });
      return !out.includes(secret) && !out.includes(JSON.stringify(secret).slice(1, -1));
    }),
    { numRuns: 200 },
  );
});

Deno.test("a 10 MB field is redacted whole, secrets at its far end included", () => {
  const huge = `${"a".repeat(10_000_000)} --client-secret=xyz987 "refresh_token": "rt-123" ${
    "eyJ".repeat(1000)
  }`;
  const out = redactText(huge);
  assert.ok(out.endsWith(`--client-secret=${REDACTED} "refresh_token": "${REDACTED}" ${"eyJ".repeat(1000)}`));
  const fields = redactFields({ [`${"k".repeat(1_000_000)}Token`]: "t-1" }) as Record<string, unknown>;
  deepStrictEqual(Object.values(fields), [REDACTED]);
});
