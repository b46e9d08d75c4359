import assert from "node:assert/strict";
import { p256 } from "@noble/curves/nist.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { decodeAuthenticatorData } from "../../core/ctap/auth_data.ts";
import { decodeCosePublicKey, uncompressedPoint } from "../../core/ctap/cose.ts";
import { concatBytes, equalBytes, randomBytes, utf8 } from "../../core/bytes.ts";
import { serveKey } from "./_test_support.ts";
import {
  enumerateHidapiFidoDevices,
  hidapiLibraryCandidates,
  hidapiLibraryEnv,
  hidDeviceInfoLayout,
  openHidapiTransport,
  readWideString,
} from "./hidapi.ts";
import { chooseKey, discoverKeys, formatKeyAddress, openKey, parseKeyAddress } from "./keys.ts";
import { hidAuthenticator } from "./plugin.ts";
import { scriptedUser } from "../../test/software_key.ts";

/*
 * hidapi is a third-party C library and this machine has no USB key, so these tests load a
 * stand-in built from test/fixtures/hidapi/fake_hidapi.c: hidapi's ABI, one FIDO device bridged
 * to a software key's CTAPHID socket, one keyboard. The last two tests check our binding against
 * the real hidapi (Debian's libhidapi-dev and libhidapi-hidraw0).
 */

const fakeSource = new URL("../../test/fixtures/hidapi/fake_hidapi.c", import.meta.url).pathname;
/** The FIDO device's path in the fake: shaped like a Windows HID interface path. */
const fidoPath = String
  .raw`\\?\hid#vid_1050&pid_0407&mi_01#7&2a1c3e&0&0000#{4d1e55b2-f16f-11cf-88cb-001111000030}`;
const keyboardPath = "/dev/fake-keyboard";
const productName = "Cl\u00e9 FIDO \u2713 \u{1F511}";
const serialNumber = "FK-\u00c9-0001";

const controlSymbols = {
  fake_hidapi_set_socket: { parameters: ["buffer"], result: "void" },
  fake_hidapi_counter: { parameters: ["i32"], result: "i32" },
  fake_hidapi_offsetof: { parameters: ["i32"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;

/** What the fake counts: enumerations not freed, devices open, hid_close calls, bad closes, ... */
const counter = {
  liveEnumerations: 0,
  openDevices: 1,
  closeCalls: 2,
  badCloses: 3,
  keyboardOpens: 4,
  initCalls: 5,
  exitCalls: 6,
} as const;

/** Builds the fake with gcc; no gcc is a failure that says what to install. */
async function buildFake(dir: string, flags: readonly string[] = []): Promise<string> {
  const output = `${dir}/libfake_hidapi${flags.join("").replaceAll(/[^a-z]/gi, "_")}.so`;
  let result: Deno.CommandOutput;
  try {
    result = await new Deno.Command("gcc", {
      args: ["-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", ...flags, "-o", output, fakeSource],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        "Cannot build the fake hidapi library: gcc is not installed (apt-get install gcc); the hidapi tests need it",
      );
    }
    throw error;
  }
  if (!result.success) {
    const stderr = new TextDecoder().decode(result.stderr);
    // The ABI check builds against the real header, which libhidapi-dev installs.
    const hint = stderr.includes("hidapi/hidapi.h") ? " (install libhidapi-dev for the real header)" : "";
    throw new Error(`Cannot build the fake hidapi library${hint}: gcc failed:\n${stderr}`);
  }
  return output;
}

interface Fake {
  readonly dir: string;
  readonly library: string;
  readonly control: Deno.DynamicLibrary<typeof controlSymbols>["symbols"];
  count(name: keyof typeof counter): number;
}

/** Builds and loads the fake for one test, with the hidapi variable unset; cleans up after. */
async function withFake(
  run: (fake: Fake) => Promise<void>,
  flags: readonly string[] = [],
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "hidapi-test-" });
  const saved = Deno.env.get(hidapiLibraryEnv);
  Deno.env.delete(hidapiLibraryEnv);
  try {
    const library = await buildFake(dir, flags);
    const control = Deno.dlopen(library, controlSymbols);
    try {
      await run({
        dir,
        library,
        control: control.symbols,
        count: (name) => control.symbols.fake_hidapi_counter(counter[name]),
      });
    } finally {
      control.close();
    }
  } finally {
    if (saved === undefined) Deno.env.delete(hidapiLibraryEnv);
    else Deno.env.set(hidapiLibraryEnv, saved);
    await Deno.remove(dir, { recursive: true });
  }
}

/** After every test: nothing of hidapi is left in use, and the library was shut down as often as started. */
function assertAllReleased(fake: Fake): void {
  assert.equal(fake.count("liveEnumerations"), 0, "every hid_enumerate list was freed");
  assert.equal(fake.count("openDevices"), 0, "every device was closed");
  assert.equal(fake.count("badCloses"), 0, "no handle was closed twice");
  assert.equal(fake.count("keyboardOpens"), 0, "the keyboard was never opened");
  assert.equal(fake.count("exitCalls"), fake.count("initCalls"), "hid_exit once per hid_init");
}

Deno.test("hidapi discovery on macOS lists exactly the FIDO device, with UTF-32 product and serial strings; the keyboard is left out", async () => {
  await withFake(async (fake) => {
    Deno.env.set(hidapiLibraryEnv, fake.library);
    const { keys, skipped } = await discoverKeys({ os: "darwin" });
    assert.deepEqual(skipped, []);
    assert.equal(keys.length, 1);
    const [key] = keys;
    assert.deepEqual(key!.address, { kind: "hidapi", path: fidoPath });
    assert.deepEqual(key!.descriptor, {
      path: fidoPath,
      vendorId: 0x1050,
      productId: 0x0407,
      productName,
      serialNumber,
      bus: "usb",
      reportId: undefined,
      inputReportBytes: 64,
      outputReportBytes: 64,
    });
    assert.equal(key!.label, `security key "${productName}" (hidapi:${fidoPath})`);
    assert.ok(fake.count("initCalls") >= 1);
    assertAllReleased(fake);
  });
});

Deno.test("hidapi discovery on Windows reads wchar_t as UTF-16, surrogate pair included (a -fshort-wchar build)", async () => {
  await withFake(async (fake) => {
    assert.equal(fake.control.fake_hidapi_offsetof(98), 2n, "the fake's wchar_t is 2 bytes");
    const { keys } = await discoverKeys({ os: "windows", hidapiLibrary: fake.library });
    assert.deepEqual(keys.map((k) => [k.descriptor?.productName, k.descriptor?.serialNumber]), [
      [productName, serialNumber],
    ]);
    assertAllReleased(fake);
  }, ["-fshort-wchar"]);
});

Deno.test("a key behind hidapi: address does getInfo, makeCredential and getAssertion through openKey, then closes once", async () => {
  await withFake(async (fake) => {
    Deno.env.set(hidapiLibraryEnv, fake.library);
    await using served = await serveKey(fake.dir, "key");
    fake.control.fake_hidapi_set_socket(utf8(`${served.server.path}\0`));
    const device = `hidapi:${fidoPath}`;
    assert.equal(formatKeyAddress(parseKeyAddress(device)), device);
    // On Linux, hidraw is the default: a hidapi: address makes discovery use hidapi.
    const location = await chooseKey({ device, discover: (backend) => discoverKeys({ backend }) });
    assert.equal(location.descriptor?.productName, productName);
    {
      await using key = await openKey(location);
      const info = await key.ctap.getInfo();
      assert.deepEqual(info.versions, ["FIDO_2_0", "FIDO_2_1"]);

      const rpId = "login.microsoft.com";
      const made = await key.ctap.makeCredential({
        clientDataHash: randomBytes(32),
        rp: { id: rpId },
        user: { id: utf8("user-1"), name: "alice@contoso.com", displayName: "Alice" },
        pubKeyCredParams: [{ type: "public-key", alg: -7 }],
        options: { rk: true },
      });
      const credential = decodeAuthenticatorData(made.authData).attestedCredentialData;
      assert.ok(credential, "makeCredential returned attested credential data");
      const publicKey = decodeCosePublicKey(credential.publicKey);
      assert.equal(publicKey.kty, "EC2");

      const clientDataHash = randomBytes(32);
      const assertion = await key.ctap.getAssertion({
        rpId,
        clientDataHash,
        allowList: [{ type: "public-key", id: credential.credentialId }],
      });
      if (assertion.credential) assert.ok(equalBytes(assertion.credential.id, credential.credentialId));
      assert.ok(
        publicKey.kty === "EC2" &&
          p256.verify(
            assertion.signature,
            sha256(concatBytes(assertion.authData, clientDataHash)),
            uncompressedPoint(publicKey),
            { prehash: false, format: "der" },
          ),
        "the assertion verifies with the credential's public key",
      );
      assert.equal(fake.count("openDevices"), 1);
    }
    assert.equal(fake.count("closeCalls"), 1, "hid_close exactly once");
    assertAllReleased(fake);
  });
});

Deno.test("the hid plugin describes the key named hidapi:PATH, with the library from its own environment", async () => {
  await withFake(async (fake) => {
    await using served = await serveKey(fake.dir, "key");
    fake.control.fake_hidapi_set_socket(utf8(`${served.server.path}\0`));
    const env: Record<string, string> = { [hidapiLibraryEnv]: fake.library };
    const context = {
      interaction: scriptedUser(),
      env: (name: string) => env[name],
      readSecret: () => Promise.reject(new Error("no secret expected")),
    };
    const { devices } = await hidAuthenticator.listDevices(context, { device: `hidapi:${fidoPath}` });
    assert.equal(devices.length, 1);
    const [listing] = devices;
    assert.ok(listing?.ok, "the key was described");
    assert.equal(listing.description.device, `hidapi:${fidoPath}`);
    assert.equal(listing.description.productName, productName);
    assert.deepEqual(listing.description.versions, ["FIDO_2_0", "FIDO_2_1"]);
    assert.equal(fake.count("closeCalls"), 1);
    assertAllReleased(fake);
  });
});

Deno.test("--device hidapi:PATH of a keyboard is refused without opening it", async () => {
  await withFake(async (fake) => {
    await assert.rejects(
      chooseKey({
        device: `hidapi:${keyboardPath}`,
        discover: (backend) => discoverKeys({ backend, hidapiLibrary: fake.library }),
      }),
      (error: Error & { code?: string; hint?: string }) => {
        assert.equal(error.code, "not-a-security-key");
        assert.match(
          error.message,
          /Cannot use "hidapi:\/dev\/fake-keyboard": it is not a FIDO security key/,
        );
        assert.match(error.hint ?? "", /Choose one with --device: hidapi:\\\\\?\\hid#vid_1050/);
        return true;
      },
    );
    assertAllReleased(fake);
  });
});

Deno.test("hidapi transport: close while a read is pending ends it, calls hid_close once and lets go of hidapi", async () => {
  await withFake(async (fake) => {
    await using served = await serveKey(fake.dir, "key");
    fake.control.fake_hidapi_set_socket(utf8(`${served.server.path}\0`));
    const transport = await openHidapiTransport({ path: fidoPath, library: fake.library });
    // An aborted receive rejects with the reason and leaves the transport usable.
    const abort = new AbortController();
    const aborted = transport.receive(abort.signal);
    abort.abort(new Error("operator pressed Ctrl+C"));
    await assert.rejects(aborted, /operator pressed Ctrl\+C/);
    await assert.rejects(transport.send(new Uint8Array(10)), RangeError);

    const pending = assert.rejects(transport.receive(), (error: Error & { code?: string }) => {
      assert.equal(error.code, "ctaphid-closed");
      assert.match(error.message, /Cannot receive from security key "hidapi:.*": it is closed/);
      return true;
    });
    await transport.close();
    await pending;
    await transport.close();
    await assert.rejects(
      transport.send(new Uint8Array(64)),
      (e: Error & { code?: string }) => e.code === "ctaphid-closed",
    );
    assert.equal(fake.count("closeCalls"), 1, "hid_close exactly once, however often close() is called");
    assertAllReleased(fake);
  });
});

Deno.test("one loaded hidapi serves concurrent opens and enumerations; hid_exit comes after the last user", async () => {
  await withFake(async (fake) => {
    await using served = await serveKey(fake.dir, "key");
    fake.control.fake_hidapi_set_socket(utf8(`${served.server.path}\0`));
    const options = { path: fidoPath, library: fake.library };
    const [first, second, found] = await Promise.all([
      openHidapiTransport(options),
      openHidapiTransport(options),
      enumerateHidapiFidoDevices({ library: fake.library }),
    ]);
    assert.equal(found.devices.length, 1);
    assert.equal(fake.count("openDevices"), 2);
    assert.equal(fake.count("initCalls"), 1, "hid_init once for all users");
    await first.close();
    assert.equal(fake.count("exitCalls"), 0, "still in use by the second device");
    await second.close();
    assert.equal(fake.count("exitCalls"), 1);
    assertAllReleased(fake);
  });
});

Deno.test("hidapi transport: a key that goes away ends pending receives with key-unplugged", async () => {
  await withFake(async (fake) => {
    const served = await serveKey(fake.dir, "key");
    fake.control.fake_hidapi_set_socket(utf8(`${served.server.path}\0`));
    await using transport = await openHidapiTransport({ path: fidoPath, library: fake.library });
    const pending = transport.receive();
    const unplugged = assert.rejects(pending, (error: Error & { code?: string; hint?: string }) => {
      assert.equal(error.code, "key-unplugged");
      assert.match(
        error.message,
        /Cannot receive from security key "hidapi:.*": fake hidapi: the device is gone/,
      );
      assert.match(error.hint ?? "", /plug it in again/);
      return true;
    });
    await served.server.close();
    await unplugged;
    await transport.close();
    assertAllReleased(fake);
  });
});

Deno.test("a device that cannot be opened is hidapi-open-failed, with hidapi's reason and a hint per OS", async () => {
  await withFake(async (fake) => {
    fake.control.fake_hidapi_set_socket(utf8(`${fake.dir}/nobody-listens.sock\0`));
    await assert.rejects(
      openHidapiTransport({ path: fidoPath, library: fake.library, os: "windows" }),
      (error: Error & { code?: string; hint?: string }) => {
        assert.equal(error.code, "hidapi-open-failed");
        assert.match(error.message, /: fake hidapi: cannot connect to the CTAPHID socket$/);
        assert.match(error.hint ?? "", /administrator/);
        return true;
      },
    );
    assertAllReleased(fake);
  }, ["-fshort-wchar"]);
});

Deno.test("without hidapi, discovery fails with hidapi-missing: the files tried and, per OS, where to get it", async () => {
  const saved = Deno.env.get(hidapiLibraryEnv);
  Deno.env.delete(hidapiLibraryEnv);
  try {
    const cases = [
      ["windows", /hidapi\.dll/, /hidapi\.dll .*github\.com\/libusb\/hidapi\/releases/],
      ["darwin", /\/opt\/homebrew\/lib\/libhidapi\.dylib/, /brew install hidapi/],
    ] as const;
    for (const [os, tried, hint] of cases) {
      await assert.rejects(discoverKeys({ os }), (error: Error & { code?: string; hint?: string }) => {
        assert.equal(error.code, "hidapi-missing");
        assert.match(error.message, /^Cannot load hidapi: none of its usual files could be opened/);
        assert.match(error.message, tried);
        assert.match(error.hint ?? "", hint);
        assert.match(error.hint ?? "", new RegExp(hidapiLibraryEnv));
        return true;
      });
    }
    Deno.env.set(hidapiLibraryEnv, "/nonexistent/libhidapi.dylib");
    await assert.rejects(discoverKeys({ os: "darwin" }), (error: Error & { code?: string }) => {
      assert.equal(error.code, "hidapi-missing");
      assert.match(
        error.message,
        /^Cannot load hidapi from PROVISIONING_HIDAPI_LIBRARY: "\/nonexistent\/libhidapi\.dylib"/,
      );
      return true;
    });
    // A library that is not hidapi lacks its symbols.
    await assert.rejects(
      enumerateHidapiFidoDevices({ library: "libm.so.6", os: "linux" }),
      (error: Error & { code?: string; hint?: string }) => {
        assert.equal(error.code, "hidapi-missing");
        assert.match(error.message, /"libm\.so\.6": .*hid_/);
        assert.match(error.hint ?? "", /libhidapi-hidraw0/);
        return true;
      },
    );
  } finally {
    if (saved === undefined) Deno.env.delete(hidapiLibraryEnv);
    else Deno.env.set(hidapiLibraryEnv, saved);
  }
});

Deno.test("hidapi is searched beside the executable first, then where package managers put it", () => {
  assert.deepEqual(hidapiLibraryCandidates("windows", "x86_64", String.raw`C:\Tools\provisioning.exe`), [
    String.raw`C:\Tools\hidapi.dll`,
    "hidapi.dll",
  ]);
  assert.deepEqual(hidapiLibraryCandidates("darwin", "aarch64", "/Applications/provisioning/provisioning"), [
    "/Applications/provisioning/libhidapi.dylib",
    "/opt/homebrew/lib/libhidapi.dylib",
    "/usr/local/lib/libhidapi.dylib",
    "/opt/local/lib/libhidapi.dylib",
    "libhidapi.dylib",
  ]);
  assert.equal(
    hidapiLibraryCandidates("linux", "aarch64")[0],
    "/usr/lib/aarch64-linux-gnu/libhidapi-hidraw.so.0",
  );
  assert.deepEqual(hidapiLibraryCandidates("freebsd"), []);
});

Deno.test({
  name: "without FFI permission, loading hidapi fails with hidapi-not-permitted and says which flag",
  permissions: { ffi: false, env: "inherit", read: "inherit" },
  async fn() {
    await assert.rejects(
      enumerateHidapiFidoDevices({ library: "/usr/lib/libhidapi.so", os: "linux" }),
      (error: Error & { code?: string; hint?: string }) => {
        assert.equal(error.code, "hidapi-not-permitted");
        assert.match(error.message, /^Cannot load hidapi: loading native libraries is not permitted/);
        assert.match(error.hint ?? "", /--allow-ffi/);
        return true;
      },
    );
  },
});

Deno.test("wide strings: UTF-16 and UTF-32 decode strictly, bad units become U+FFFD, no terminator is an error", () => {
  const utf16 = new Uint16Array([0x43, 0xd83d, 0xdd11, 0xdc00, 0x41, 0xd800, 0]);
  assert.equal(readWideString(Deno.UnsafePointer.of(utf16), 2), "C\u{1F511}\ufffdA\ufffd");
  const utf32 = new Uint32Array([0x1f511, 0x110000, 0xd800, 0xe9, 0]);
  assert.equal(readWideString(Deno.UnsafePointer.of(utf32), 4), "\u{1F511}\ufffd\ufffd\u00e9");
  assert.equal(readWideString(null, 4), undefined);
  assert.throws(
    () => readWideString(Deno.UnsafePointer.of(new Uint32Array([0x41, 0x42, 0x43, 0])), 4, 3),
    /Cannot read a wide string: no terminator within 3 characters/,
  );
});

Deno.test("the fake's ABI is real hidapi's: built against <hidapi/hidapi.h>, the layout is the one we read", async () => {
  // gcc refuses the build if any fake function's signature differs from the real header's.
  await withFake((fake) => {
    const offsets = Object.values(hidDeviceInfoLayout).map((_, i) =>
      Number(fake.control.fake_hidapi_offsetof(i))
    );
    assert.deepEqual(offsets, Object.values(hidDeviceInfoLayout));
    assert.equal(fake.control.fake_hidapi_offsetof(99), 72n, "sizeof(struct hid_device_info)");
    return Promise.resolve();
  }, ["-DFAKE_HIDAPI_SYSTEM_HEADER"]);
});

Deno.test("the real hidapi (libhidapi-hidraw0) loads with our symbol table and enumerates without error", async () => {
  const saved = Deno.env.get(hidapiLibraryEnv);
  Deno.env.delete(hidapiLibraryEnv);
  try {
    // Found through the usual places, as on an operator's machine.
    let found;
    try {
      found = await discoverKeys({ os: "linux", backend: "hidapi" });
    } catch (error) {
      if ((error as { code?: string }).code !== "hidapi-missing") throw error;
      throw new Error("Cannot test against the real hidapi: install libhidapi-hidraw0 (libhidapi-dev)", {
        cause: error,
      });
    }
    assert.deepEqual(found.skipped, []);
    for (const key of found.keys) {
      assert.equal(key.address.kind, "hidapi");
      assert.equal(key.descriptor?.inputReportBytes, 64);
    }
    // Again by its full path: hidapi was unloaded after the first and starts again.
    const file = hidapiLibraryCandidates("linux")[0]!;
    assert.equal((await enumerateHidapiFidoDevices({ library: file })).devices.length, found.keys.length);
  } finally {
    if (saved !== undefined) Deno.env.set(hidapiLibraryEnv, saved);
  }
});
