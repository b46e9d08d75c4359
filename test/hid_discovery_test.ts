/**
 * FIDO key discovery against fixture sysfs trees (test/fixtures/sysfs/<case>/sys/class/hidraw):
 * a desk with a keyboard, a YubiKey and a key whose report descriptor is cut short; two keys; a
 * keyboard alone.
 */
import assert from "node:assert/strict";
import { chooseKey, discoverKeys } from "../authenticators/hid/keys.ts";
import { discoverLinuxFidoDevices } from "../authenticators/hid/linux.ts";

const fixtures = new URL("./fixtures/sysfs/", import.meta.url).pathname;

Deno.test("discovery finds the FIDO key on a desk with a keyboard and skips a broken descriptor with its reason", async () => {
  const root = `${fixtures}desk`;
  const { devices, skipped } = await discoverLinuxFidoDevices({ root });
  assert.deepEqual(devices, [{
    path: `${root}/dev/hidraw1`,
    vendorId: 0x1050,
    productId: 0x0407,
    productName: "Yubico YubiKey OTP+FIDO+CCID",
    serialNumber: undefined,
    bus: "usb",
    reportId: undefined,
    inputReportBytes: 64,
    outputReportBytes: 64,
  }]);
  assert.equal(skipped.length, 1);
  assert.equal(skipped[0]!.path, `${root}/dev/hidraw2`);
  assert.match(skipped[0]!.reason, /Cannot parse HID report descriptor: .* \(hidraw2\)/);
});

Deno.test("two keys plugged in: both listed with vendor, product, name and USB serial; choosing needs --device", async () => {
  const root = `${fixtures}two-keys`;
  const discover = () => discoverKeys({ root, os: "linux" });
  const { keys } = await discover();
  assert.deepEqual(keys.map((k) => k.label), [
    `security key "Yubico YubiKey OTP+FIDO+CCID" (${root}/dev/hidraw0)`,
    `security key "TOKEN2 FIDO2 Security Key" (${root}/dev/hidraw3)`,
  ]);
  assert.equal(keys[1]!.descriptor?.vendorId, 0x349e);
  assert.equal(keys[1]!.descriptor?.serialNumber, "T2F2-0001-4242");

  await assert.rejects(chooseKey({ discover }), (error: Error & { code?: string; hint?: string }) => {
    assert.equal(error.code, "usage");
    assert.match(error.message, /Cannot choose a security key: 2 are plugged in/);
    assert.match(error.hint ?? "", /--device: .*hidraw0 .*hidraw3/);
    return true;
  });
  const chosen = await chooseKey({ device: `${root}/dev/hidraw3`, discover });
  assert.equal(chosen.descriptor?.productName, "TOKEN2 FIDO2 Security Key");
});

Deno.test("--device naming a keyboard is refused: it is not a FIDO key", async () => {
  const root = `${fixtures}desk`;
  await assert.rejects(
    chooseKey({ device: `${root}/dev/hidraw0`, discover: () => discoverKeys({ root, os: "linux" }) }),
    (error: Error & { code?: string }) => error.code === "not-a-security-key",
  );
});

Deno.test("a keyboard alone is no security key; the error says so", async () => {
  const root = `${fixtures}keyboard-only`;
  const discover = () => discoverKeys({ root, os: "linux" });
  assert.deepEqual((await discover()).keys, []);
  await assert.rejects(chooseKey({ discover }), (error: Error & { code?: string }) => {
    assert.equal(error.code, "no-security-key");
    assert.match(error.message, /none is plugged in/);
    return true;
  });
});

Deno.test("a machine without hidraw has no keys", async () => {
  assert.deepEqual(await discoverLinuxFidoDevices({ root: `${fixtures}no-such-tree` }), {
    devices: [],
    skipped: [],
  });
});

Deno.test("--device unix:PATH needs no discovery", async () => {
  const chosen = await chooseKey({
    device: "unix:/tmp/key.sock",
    discover: () => Promise.reject(new Error("discovery must not run")),
  });
  assert.deepEqual(chosen.address, { kind: "unix", path: "/tmp/key.sock" });
});
