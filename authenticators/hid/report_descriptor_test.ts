import assert from "node:assert/strict";
import fc from "fast-check";
import {
  FIDO_USAGE_PAGE,
  fidoCollection,
  parseReportDescriptor,
  ReportDescriptorError,
} from "./report_descriptor.ts";

const hex = (text: string) =>
  Uint8Array.from(text.match(/[0-9a-f]{2}/gi)!.map((b) => Number.parseInt(b, 16)));

// CTAP 2.1 §11.2.8.1: the FIDO report descriptor.
const fido = hex("06d0f1 0901 a101 0920 1500 26ff00 7508 9540 8102 0921 1500 26ff00 7508 9540 9102 c0");
// HID 1.11 Appendix B.1: the boot keyboard.
const keyboard = hex(
  "05010906a101050719e029e71500250175019508810295017508810195057501050819012905910295017503910195067508150025650507190029658100c0",
);

Deno.test("the CTAP 2.1 §11.2.8.1 descriptor is one FIDO CTAPHID application collection with 64-byte reports", () => {
  const collections = parseReportDescriptor(fido);
  assert.equal(collections.length, 1);
  assert.deepEqual(collections[0], {
    usagePage: FIDO_USAGE_PAGE,
    usage: 1,
    type: 1,
    reportIds: [],
    inputReportBytes: 64,
    outputReportBytes: 64,
    featureReportBytes: 0,
  });
});

Deno.test("a boot keyboard (HID 1.11 Appendix B.1) is a generic-desktop keyboard, not FIDO", () => {
  const collections = parseReportDescriptor(keyboard);
  assert.equal(collections.length, 1);
  assert.equal(collections[0]!.usagePage, 0x01);
  assert.equal(collections[0]!.usage, 0x06);
  assert.equal(collections[0]!.inputReportBytes, 8);
  assert.equal(collections[0]!.outputReportBytes, 1);
  assert.equal(fidoCollection(collections), undefined);
});

Deno.test("a composite descriptor with report ids finds the FIDO collection among others", () => {
  // Report id 1: a keyboard; report id 2: FIDO (as a key that also types OTPs might declare).
  const composite = hex(
    "05 01 09 06 a1 01 85 01 05 07 19 e0 29 e7 15 00 25 01 75 01 95 08 81 02 c0" +
      "06 d0 f1 09 01 a1 01 85 02 09 20 15 00 26 ff 00 75 08 95 40 81 02" +
      "09 21 15 00 26 ff 00 75 08 95 40 91 02 c0",
  );
  const collections = parseReportDescriptor(composite);
  assert.equal(collections.length, 2);
  assert.deepEqual(collections[0]!.reportIds, [1]);
  const found = fidoCollection(collections);
  assert.deepEqual(found?.reportIds, [2]);
  assert.equal(found?.inputReportBytes, 64);
  assert.equal(found?.outputReportBytes, 64);
});

Deno.test("a 4-byte usage carries its own usage page", () => {
  // Usage 0xF1D0_0001 as one extended usage, then the collection.
  const descriptor = hex("0b 01 00 d0 f1 a1 01 75 08 95 40 81 02 c0");
  assert.equal(fidoCollection(parseReportDescriptor(descriptor))?.usage, 1);
});

Deno.test("Pop restores the report count that Push saved", () => {
  // Report size 8, Push (count unset), count 32, Pop (count back to unset = 0), count 64, Input.
  const collections = parseReportDescriptor(hex("06 d0 f1 09 01 a1 01 75 08 a4 95 20 b4 95 40 81 02 c0"));
  assert.equal(collections[0]!.inputReportBytes, 64);
  const popped = parseReportDescriptor(hex("06 d0 f1 09 01 a1 01 75 08 95 40 a4 95 20 b4 81 02 c0"));
  assert.equal(popped[0]!.inputReportBytes, 64);
});

Deno.test("malformed descriptors are refused with the offset of the bad item", () => {
  const cases: [string, string, RegExp][] = [
    ["truncated", "06d0f10901a1010920150026ff", /needs 2 data bytes, 1 are left at byte 11/],
    ["unclosed collection", "06d0f10901a1010920750895408102", /never closed/],
    ["End Collection first", "c0", /End Collection without an open collection at byte 0/],
    ["Pop without Push", "06d0f1b4", /Pop without a matching Push at byte 3/],
    ["empty", "", /it is empty/],
    ["long item truncated", "fe0510aabb", /long item's data is truncated/],
    ["report id 0", "8500", /report id 0 is out of range/],
  ];
  for (const [name, text, pattern] of cases) {
    const bytes = text ? hex(text) : new Uint8Array();
    assert.throws(() => parseReportDescriptor(bytes), (error: unknown) => {
      assert.ok(error instanceof ReportDescriptorError, name);
      assert.match(error.message, pattern, name);
      return true;
    });
  }
});

Deno.test("any byte string either parses or throws ReportDescriptorError, never anything else", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      try {
        parseReportDescriptor(bytes);
      } catch (error) {
        if (!(error instanceof ReportDescriptorError)) throw error;
      }
    }),
    { numRuns: 2000 },
  );
});
