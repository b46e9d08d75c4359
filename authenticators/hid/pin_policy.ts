/**
 * PINs the organisation's policy asks for: random ones of a chosen length that are not trivial,
 * checks of given ones (a CSV `pin` column, `--pin`), and the length a key can take (its
 * `minPINLength`, the policy's minimum, at most 63 bytes: CTAP 2.1 §6.5.1).
 *
 * A PIN travels as a {@link SecretPin}, whose string and JSON forms are redacted, so a PIN cannot
 * reach a log line or a results file by accident; {@link SecretPin.reveal} is the one way out.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { randomPin, trivialPinReason } from "./pin_policy.ts";
 * const pin = randomPin(8);
 * assert.equal(pin.reveal().length, 8);
 * assert.equal(trivialPinReason(pin.reveal()), undefined);
 * assert.equal(String(pin), "[PIN]");
 * assert.equal(trivialPinReason("123456"), "a run of consecutive digits");
 * ```
 *
 * @module
 */
import { ProvisioningError } from "../../core/errors.ts";

/** A PIN that does not print itself. */
export class SecretPin {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  /** The PIN itself: for the key, the PIN file, and nothing else. */
  reveal(): string {
    return this.#value;
  }

  /** Its length in code points (what a key's minPINLength counts). */
  get length(): number {
    return [...this.#value].length;
  }

  /** Redacted. */
  toString(): string {
    return "[PIN]";
  }

  /** Redacted. */
  toJSON(): string {
    return "[PIN]";
  }

  /** Redacted, for `console.log` and `Deno.inspect`. */
  [Symbol.for("Deno.customInspect")](): string {
    return "[PIN]";
  }
}

/** The longest PIN CTAP allows, in UTF-8 bytes (§6.5.1: 63). */
export const maxPinBytes = 63;

/** PINs people pick first; refused whatever their length. */
const commonPins = new Set([
  "0852",
  "1004",
  "1212",
  "1313",
  "2000",
  "2580",
  "5683",
  "6969",
  "112233",
  "121212",
  "123123",
  "123321",
  "131313",
  "147258",
  "159357",
  "159753",
  "202020",
  "252525",
  "654321",
  "696969",
  "789456",
  "852456",
  "102030",
  "11223344",
  "12344321",
  "147258369",
  "159753456",
]);

/**
 * Why a PIN is trivial, or undefined when it is not: one repeated character, a run of
 * consecutive digits up or down, digits in any fixed step (`13579135`), a short pattern repeated (`121212`, `123123`), or a very common
 * PIN. The reason never contains the PIN.
 */
export function trivialPinReason(pin: string): string | undefined {
  const chars = [...pin];
  if (chars.length === 0) return "it is empty";
  if (chars.every((c) => c === chars[0])) return "one repeated character";
  if (/^\d+$/.test(pin)) {
    const digits = chars.map(Number);
    const steps = digits.slice(1).map((d, i) => (d - digits[i]! + 10) % 10);
    if (steps.every((s) => s === 1) || steps.every((s) => s === 9)) return "a run of consecutive digits";
    if (steps.every((s) => s === steps[0])) return "digits in a fixed step";
  }
  for (let period = 2; period <= chars.length / 2; period++) {
    if (chars.length % period !== 0) continue;
    if (chars.every((c, i) => c === chars[i % period])) return "a short pattern repeated";
  }
  if (commonPins.has(pin)) return "one of the most common PINs";
  return undefined;
}

/** An unbiased random digit string of `length`, drawn again until it is not trivial. */
export function randomPin(length: number): SecretPin {
  if (!Number.isInteger(length) || length < 4 || length > maxPinBytes) {
    throw new RangeError(`Cannot generate a PIN of ${length} digits: the length must be 4 to ${maxPinBytes}`);
  }
  for (;;) {
    const digits: string[] = [];
    const buffer = new Uint8Array(length * 2);
    while (digits.length < length) {
      crypto.getRandomValues(buffer);
      // 250 = 25 * 10: bytes 250..255 are dropped so that every digit is equally likely.
      for (const byte of buffer) if (byte < 250 && digits.length < length) digits.push(String(byte % 10));
    }
    const pin = digits.join("");
    if (trivialPinReason(pin) === undefined) return new SecretPin(pin);
  }
}

/**
 * Checks a PIN the organisation gave (CSV column, flag) against the key's and the policy's
 * minimum and the trivial-PIN rules; `who` names the row or key in the message.
 *
 * @throws {ProvisioningError} `pin-too-short`, `pin-too-long` or `pin-trivial`; the message
 * never contains the PIN.
 */
export function checkGivenPin(pin: SecretPin, minLength: number, who: string): void {
  const value = pin.reveal();
  if (pin.length < minLength) {
    throw new ProvisioningError(
      "pin-too-short",
      `Cannot use the PIN given for ${who}: it has ${pin.length} characters, the key and policy need at least ${minLength}`,
      { hint: "Give a longer PIN, or let the tool choose one at random (leave the pin column empty)" },
    );
  }
  if (new TextEncoder().encode(value).length > maxPinBytes) {
    throw new ProvisioningError(
      "pin-too-long",
      `Cannot use the PIN given for ${who}: it is longer than ${maxPinBytes} bytes`,
    );
  }
  const trivial = trivialPinReason(value);
  if (trivial) {
    throw new ProvisioningError(
      "pin-trivial",
      `Cannot use the PIN given for ${who}: it is trivial (${trivial})`,
      { hint: "Choose a PIN that is not a repeated digit, a sequence or a common PIN" },
    );
  }
}
