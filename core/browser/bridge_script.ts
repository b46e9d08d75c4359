/**
 * The script the WebAuthn bridge puts into every document before the page's own scripts run
 * (`Page.addScriptToEvaluateOnNewDocument`). It replaces `navigator.credentials.create` and
 * `get` for `publicKey` requests with a call over a CDP binding (`Runtime.addBinding`) into the
 * tool's WebAuthn client, and turns the answer into objects that behave like the browser's own
 * PublicKeyCredential: `instanceof PublicKeyCredential` holds, `rawId` and the response fields are
 * ArrayBuffers, and `getTransports`, `getPublicKey`, `getPublicKeyAlgorithm`,
 * `getAuthenticatorData`, `getClientExtensionResults` and `toJSON` answer as WebAuthn L3 says.
 *
 * It is JavaScript in a string because it runs in the page, not in Deno. The page does not
 * choose the origin the ceremony runs for: the tool takes it from the execution context the
 * binding was called from.
 *
 * @module
 */

/**
 * The page-side script. `bindingName` is the CDP binding to call (the script captures it and
 * removes it from `window`); `settleName` is the hidden function the tool calls back with the
 * result.
 *
 * @example
 * ```ts
 * import { bridgeScript } from "./bridge_script.ts";
 * const source = bridgeScript({ bindingName: "__b", settleName: "__s" });
 * console.assert(source.includes('"__b"'));
 * ```
 */
export function bridgeScript(names: { bindingName: string; settleName: string }): string {
  return `(() => {
  "use strict";
  const BINDING = ${JSON.stringify(names.bindingName)};
  const SETTLE = ${JSON.stringify(names.settleName)};
  const binding = globalThis[BINDING];
  if (typeof binding !== "function" || globalThis[SETTLE]) return;
  try { delete globalThis[BINDING]; } catch (_) { /* keep it */ }
  if (typeof CredentialsContainer !== "function" || !globalThis.navigator || !navigator.credentials) return;

  const pending = new Map();
  let counter = 0;

  const toBase64Url = (buffer) => {
    const bytes = new Uint8Array(buffer);
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  };
  const fromBase64Url = (text) => {
    const plain = atob(String(text).replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = new Uint8Array(plain.length);
    for (let i = 0; i < plain.length; i++) bytes[i] = plain.charCodeAt(i);
    return bytes.buffer;
  };
  const isBuffer = (value) => value instanceof ArrayBuffer || ArrayBuffer.isView(value) ||
    (typeof SharedArrayBuffer === "function" && value instanceof SharedArrayBuffer);
  const bufferBytes = (value) => ArrayBuffer.isView(value)
    ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
    : new Uint8Array(value);
  // WebIDL dictionaries to their JSON forms: every BufferSource becomes base64url text.
  const toJSONValue = (value, depth) => {
    if (depth > 16) throw new TypeError("options nest too deeply");
    if (isBuffer(value)) return toBase64Url(bufferBytes(value));
    if (Array.isArray(value)) return value.map((v) => toJSONValue(v, depth + 1));
    if (value && typeof value === "object") {
      const out = {};
      for (const key of Object.keys(value)) {
        if (key === "__proto__") continue;
        const v = value[key];
        if (v !== undefined && typeof v !== "function") out[key] = toJSONValue(v, depth + 1);
      }
      return out;
    }
    return value;
  };

  const getter = (target, key, read) =>
    Object.defineProperty(target, key, { get: read, enumerable: false, configurable: true });
  const method = (target, key, fn) =>
    Object.defineProperty(target, key, { value: fn, enumerable: false, configurable: true, writable: true });
  const protoOf = (name) => typeof globalThis[name] === "function" ? globalThis[name].prototype : Object.prototype;

  const extensionResults = (json) => {
    const out = {};
    const results = json || {};
    if (results.credProps && typeof results.credProps === "object") out.credProps = { rk: !!results.credProps.rk };
    if (typeof results.hmacCreateSecret === "boolean") out.hmacCreateSecret = results.hmacCreateSecret;
    if (results.appid !== undefined) out.appid = !!results.appid;
    return out;
  };

  const makeAttestationResponse = (json) => {
    const response = Object.create(protoOf("AuthenticatorAttestationResponse"));
    const clientDataJSON = fromBase64Url(json.clientDataJSON);
    const attestationObject = fromBase64Url(json.attestationObject);
    getter(response, "clientDataJSON", () => clientDataJSON);
    getter(response, "attestationObject", () => attestationObject);
    method(response, "getTransports", function getTransports() { return (json.transports || []).slice(); });
    method(response, "getAuthenticatorData", function getAuthenticatorData() {
      return json.authenticatorData === undefined ? null : fromBase64Url(json.authenticatorData);
    });
    method(response, "getPublicKey", function getPublicKey() {
      return json.publicKey === undefined ? null : fromBase64Url(json.publicKey);
    });
    method(response, "getPublicKeyAlgorithm", function getPublicKeyAlgorithm() { return json.publicKeyAlgorithm; });
    return response;
  };
  const makeAssertionResponse = (json) => {
    const response = Object.create(protoOf("AuthenticatorAssertionResponse"));
    const clientDataJSON = fromBase64Url(json.clientDataJSON);
    const authenticatorData = fromBase64Url(json.authenticatorData);
    const signature = fromBase64Url(json.signature);
    const userHandle = json.userHandle === undefined ? null : fromBase64Url(json.userHandle);
    getter(response, "clientDataJSON", () => clientDataJSON);
    getter(response, "authenticatorData", () => authenticatorData);
    getter(response, "signature", () => signature);
    getter(response, "userHandle", () => userHandle);
    getter(response, "attestationObject", () => null);
    return response;
  };
  const makeCredential = (json, kind) => {
    const credential = Object.create(protoOf("PublicKeyCredential"));
    const rawId = fromBase64Url(json.rawId);
    const response = kind === "create" ? makeAttestationResponse(json.response) : makeAssertionResponse(json.response);
    const snapshot = JSON.stringify(json);
    getter(credential, "id", () => json.id);
    getter(credential, "rawId", () => rawId);
    getter(credential, "type", () => "public-key");
    getter(credential, "authenticatorAttachment", () => json.authenticatorAttachment ?? null);
    getter(credential, "response", () => response);
    method(credential, "getClientExtensionResults", function getClientExtensionResults() {
      return extensionResults(json.clientExtensionResults);
    });
    method(credential, "toJSON", function toJSON() { return JSON.parse(snapshot); });
    return credential;
  };

  const settle = (id, outcome) => {
    const entry = pending.get(id);
    if (!entry) return;
    pending.delete(id);
    if (entry.signal) entry.signal.removeEventListener("abort", entry.onAbort);
    if (outcome && outcome.ok) entry.resolve(makeCredential(outcome.credential, entry.kind));
    else entry.reject(new DOMException(outcome && outcome.message || "The operation failed.", outcome && outcome.name || "NotAllowedError"));
  };
  Object.defineProperty(globalThis, SETTLE, { value: settle, enumerable: false, configurable: false, writable: false });

  const call = (kind, options) => new Promise((resolve, reject) => {
    const signal = options.signal;
    if (signal && signal.aborted) {
      reject(signal.reason !== undefined ? signal.reason : new DOMException("The operation was aborted.", "AbortError"));
      return;
    }
    let publicKey;
    try {
      publicKey = toJSONValue(options.publicKey, 0);
    } catch (error) {
      reject(new TypeError(String(error && error.message || error)));
      return;
    }
    const id = String(++counter);
    const entry = { kind, resolve, reject, signal, onAbort: undefined };
    if (signal) {
      entry.onAbort = () => {
        if (!pending.has(id)) return;
        pending.delete(id);
        binding(JSON.stringify({ type: "abort", id }));
        reject(signal.reason !== undefined ? signal.reason : new DOMException("The operation was aborted.", "AbortError"));
      };
      signal.addEventListener("abort", entry.onAbort, { once: true });
    }
    pending.set(id, entry);
    binding(JSON.stringify({ type: kind, id, options: publicKey, mediation: options.mediation }));
  });

  const proto = CredentialsContainer.prototype;
  const nativeCreate = proto.create;
  const nativeGet = proto.get;
  const replacements = {
    create(options) {
      if (!options || typeof options !== "object" || !options.publicKey) return nativeCreate.apply(this, arguments);
      return call("create", options);
    },
    get(options) {
      if (!options || typeof options !== "object" || !options.publicKey || options.mediation === "conditional") {
        return nativeGet.apply(this, arguments);
      }
      return call("get", options);
    },
  };
  for (const name of ["create", "get"]) {
    const descriptor = Object.getOwnPropertyDescriptor(proto, name) || { writable: true, enumerable: true, configurable: true };
    Object.defineProperty(proto, name, { ...descriptor, value: replacements[name] });
  }
})();`;
}
