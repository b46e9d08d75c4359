import assert from "node:assert/strict";
import { checkGivenPin, randomPin, SecretPin, trivialPinReason } from "./pin_policy.ts";

Deno.test("trivial PINs are recognised, with a reason that does not repeat them", () => {
  const trivial: [string, string][] = [
    ["000000", "one repeated character"],
    ["123456", "a run of consecutive digits"],
    ["987654", "a run of consecutive digits"],
    ["890123", "a run of consecutive digits"],
    ["13579135", "digits in a fixed step"],
    ["121212", "a short pattern repeated"],
    ["123123", "a short pattern repeated"],
    ["147258", "one of the most common PINs"],
  ];
  for (const [pin, reason] of trivial) assert.equal(trivialPinReason(pin), reason, pin);
  for (const pin of ["48213967", "5819", "70413928", "pass-phrase 7"]) {
    assert.equal(trivialPinReason(pin), undefined, pin);
  }
});

Deno.test("random PINs have the asked length, only digits, and are never trivial", () => {
  for (let i = 0; i < 500; i++) {
    const pin = randomPin(6).reveal();
    assert.match(pin, /^\d{6}$/);
    assert.equal(trivialPinReason(pin), undefined);
  }
  assert.throws(() => randomPin(3), RangeError);
  assert.throws(() => randomPin(64), RangeError);
});

Deno.test("a SecretPin never prints itself", () => {
  const pin = new SecretPin("48213967");
  assert.equal(String(pin), "[PIN]");
  assert.equal(`${pin}`, "[PIN]");
  assert.equal(JSON.stringify({ pin }), '{"pin":"[PIN]"}');
  assert.equal(Deno.inspect({ pin }).includes("48213967"), false);
  assert.equal(pin.length, 8);
});

Deno.test("given PINs are checked against the minimum, the CTAP maximum and the trivial rules", () => {
  assert.throws(() => checkGivenPin(new SecretPin("4821"), 6, "row 3"), /row 3: it has 4 characters/);
  assert.throws(() => checkGivenPin(new SecretPin("4".repeat(64)), 4, "row 4"), /longer than 63 bytes/);
  assert.throws(
    () => checkGivenPin(new SecretPin("11111111"), 4, "row 5"),
    /trivial \(one repeated character\)/,
  );
  checkGivenPin(new SecretPin("48213967"), 8, "row 6");
});
