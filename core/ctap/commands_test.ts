import fc from "fast-check";
import { assertEquals, deepStrictEqual, throws } from "../../test/assert.ts";
import { toHex } from "../bytes.ts";
import { decodeCbor } from "./cbor.ts";
import {
  ConfigRequest,
  CredentialManagementRequest,
  CtapCommand,
  decodeBody,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  GetAssertionResponse,
  GetInfoResponse,
  MakeCredentialRequest,
} from "./commands.ts";
import { CtapError, CtapStatus } from "./status.ts";

const makeCredential: MakeCredentialRequest = {
  clientDataHash: new Uint8Array(32).fill(1),
  rp: { id: "login.microsoft.com", name: "Microsoft" },
  user: { id: new Uint8Array([1, 2, 3]), name: "alice@contoso.com", displayName: "Alice" },
  pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
  extensions: { credProtect: 2, "hmac-secret": true },
  options: { rk: true },
  pinUvAuthParam: new Uint8Array(32).fill(2),
  pinUvAuthProtocol: 2,
};

Deno.test("makeCredential request (CTAP 2.1 §6.1) encodes with integer keys in order and decodes to the same fields", () => {
  const bytes = encodeRequest(CtapCommand.makeCredential, MakeCredentialRequest, makeCredential);
  assertEquals(bytes[0], 0x01);
  const map = decodeCbor(bytes.subarray(1)) as Map<number, unknown>;
  deepStrictEqual([...map.keys()], [1, 2, 3, 4, 6, 7, 8, 9]);
  deepStrictEqual(decodeBody(MakeCredentialRequest, bytes.subarray(1)), makeCredential);
});

Deno.test("a request missing a required field is CTAP2_ERR_MISSING_PARAMETER naming the field", () => {
  const { clientDataHash: _, ...rest } = makeCredential;
  const bytes = encodeRequest(
    CtapCommand.makeCredential,
    MakeCredentialRequest,
    rest as MakeCredentialRequest,
  );
  const error = throws(() => decodeBody(MakeCredentialRequest, bytes.subarray(1)), CtapError);
  assertEquals(error.status, CtapStatus.CTAP2_ERR_MISSING_PARAMETER);
  assertEquals(error.message.includes("clientDataHash"), true);
});

Deno.test("a field of the wrong type is CTAP2_ERR_CBOR_UNEXPECTED_TYPE; bytes that are not CBOR are CTAP2_ERR_INVALID_CBOR", () => {
  const wrong = { ...makeCredential, rp: "login.microsoft.com" } as unknown as MakeCredentialRequest;
  const bytes = encodeRequest(CtapCommand.makeCredential, MakeCredentialRequest, wrong);
  assertEquals(
    throws(() => decodeBody(MakeCredentialRequest, bytes.subarray(1)), CtapError).status,
    CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE,
  );
  assertEquals(
    throws(() => decodeBody(MakeCredentialRequest, Uint8Array.of(0xa1, 0x01)), CtapError).status,
    CtapStatus.CTAP2_ERR_INVALID_CBOR,
  );
  assertEquals(
    throws(() => decodeBody(MakeCredentialRequest, Uint8Array.of(0x01)), CtapError).status,
    CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE,
  );
});

Deno.test("nested integer-keyed parameter maps of credentialManagement and config round-trip", () => {
  const cm: CredentialManagementRequest = {
    subCommand: 4,
    subCommandParams: { rpIdHash: new Uint8Array(32).fill(9) },
    pinUvAuthProtocol: 2,
    pinUvAuthParam: new Uint8Array(32),
  };
  const cmBytes = encodeRequest(CtapCommand.credentialManagement, CredentialManagementRequest, cm);
  const params = (decodeCbor(cmBytes.subarray(1)) as Map<number, unknown>).get(2);
  assertEquals(params instanceof Map && (params as Map<number, unknown>).has(1), true);
  deepStrictEqual(decodeBody(CredentialManagementRequest, cmBytes.subarray(1)), cm);

  const config: ConfigRequest = {
    subCommand: 3,
    subCommandParams: { newMinPINLength: 8, forceChangePin: true },
  };
  const configBytes = encodeRequest(CtapCommand.config, ConfigRequest, config);
  assertEquals(toHex(configBytes), "0da20103 02a2 0108 03f5".replaceAll(" ", ""));
  deepStrictEqual(decodeBody(ConfigRequest, configBytes.subarray(1)), config);
});

Deno.test("responses: status 0 with a body decodes; a non-zero status throws CtapError with its name", () => {
  const info: GetInfoResponse = { versions: ["FIDO_2_1"], aaguid: new Uint8Array(16), options: { rk: true } };
  deepStrictEqual(decodeResponse(GetInfoResponse, encodeResponse(GetInfoResponse, info)), info);
  const error = throws(() => decodeResponse(GetInfoResponse, Uint8Array.of(0x31)), CtapError);
  assertEquals(error.message, "CTAP error: 0x31 - PIN_INVALID");
  assertEquals(throws(() => decodeResponse(undefined, Uint8Array.of(0xe5)), CtapError).statusName, "UNKNOWN");
  assertEquals(
    throws(() => decodeResponse(undefined, new Uint8Array()), CtapError).status,
    CtapStatus.CTAP1_ERR_OTHER,
  );
});

Deno.test("a getAssertion response may omit the credential (CTAP 2.1 §6.2.2, single-entry allowList)", () => {
  const response: GetAssertionResponse = { authData: new Uint8Array(37), signature: new Uint8Array(70) };
  deepStrictEqual(
    decodeResponse(GetAssertionResponse, encodeResponse(GetAssertionResponse, response)),
    response,
  );
});

Deno.test("any bytes given as a command body yield a request or a CtapError, never another exception", () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (body) => {
    for (const codec of [MakeCredentialRequest, ConfigRequest, CredentialManagementRequest]) {
      try {
        decodeBody(codec as typeof MakeCredentialRequest, body);
      } catch (error) {
        if (!(error instanceof CtapError)) throw error;
      }
    }
  }));
});

Deno.test("an empty byte string where a map belongs is CTAP2_ERR_CBOR_UNEXPECTED_TYPE, not an empty map", () => {
  assertEquals(
    throws(() => decodeBody(MakeCredentialRequest, Uint8Array.of(0x40)), CtapError).status,
    CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE,
  );
  assertEquals(
    throws(() => decodeBody(ConfigRequest, Uint8Array.of(0xa2, 0x01, 0x03, 0x02, 0x40)), CtapError).status,
    CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE,
  );
});
