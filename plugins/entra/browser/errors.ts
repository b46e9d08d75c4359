/**
 * Failures of the browser path, by reason code (the code failures.csv carries), each with what
 * it means and what the admin can do.
 *
 * @module
 */
import { ProvisioningError } from "../../../core/errors.ts";
import type { PasskeyMethod } from "../../../core/plugin.ts";

/** What a reason code means, and what to do about it. */
export const browserReasons: Readonly<Record<string, { meaning: string; hint: string }>> = {
  "wrong-tap": {
    meaning: "the sign-in page refused the Temporary Access Pass",
    hint: "Another admin or run may have replaced the user's pass meanwhile (a user has one); run again",
  },
  "tap-expired": {
    meaning: "the Temporary Access Pass expired before the sign-in",
    hint: "Check the machine's clock, or issue passes with a longer lifetime",
  },
  "tap-not-yet-valid": {
    meaning: "the Temporary Access Pass is not valid yet",
    hint: "Check the machine's clock against the tenant's",
  },
  "tap-already-used": {
    meaning: "the one-time Temporary Access Pass had already been used",
    hint: "Someone signed in with it first; run again for a fresh pass",
  },
  "tap-disabled": {
    meaning: "Temporary Access Pass sign-in is turned off for the tenant",
    hint: "Enable the Temporary Access Pass method in Entra ID > Authentication methods > Policies",
  },
  "tap-refused": {
    meaning: "the sign-in page kept refusing the new Temporary Access Pass",
    hint:
      "A new pass can take a while before sign-in accepts it, and another run may have replaced it; run again later",
  },
  "page-language-unsupported": {
    meaning: "the sign-in or Security info page is in a language the flow has no texts for",
    hint:
      "Run this user with --mode headful (the flow falls back to manual mode: the admin finishes in the window) or --manual, or set the account's display language to English",
  },
  "security-info-registration-required": {
    meaning:
      "the sign-in stopped at 'Keep your account secure': the tenant requires the user to register methods first, without a way to skip",
    hint:
      "Exclude the users from the registration campaign or security defaults' interrupt while provisioning, or provision them with --via graph",
  },
  "mfa-required-for-security-key": {
    meaning: "Security info asks for a two-factor sign-in before a security key can be added",
    hint: "Check the Conditional Access policies that apply to registering security info for these users",
  },
  "security-key-limit": {
    meaning: "the user already has the most security keys Entra ID allows",
    hint: "Delete one of the user's passkeys first, or run with --replace-existing",
  },
  "ceremony-refused": {
    meaning: "the passkey setup page on login.microsoft.com refused the request",
    hint: "The request expired or was not valid; run again",
  },
  "user-not-found": {
    meaning: "the sign-in page does not know the user name",
    hint: "Check the UPN; a user synced from on-premises may not have reached Entra ID yet",
  },
  "policy-forbids-security-keys": {
    meaning: "the Passkey (FIDO2) policy does not let this user add a security key",
    hint:
      "Enable Passkey (FIDO2) for the user with 'Allow self-service setup' on, in Entra ID > Authentication methods > Policies",
  },
  "registration-refused": {
    meaning: "Security info refused the new security key",
    hint:
      "See the page's message; attestation enforcement or key restrictions may exclude this authenticator",
  },
  "webauthn-failed": {
    meaning: "the page's security key ceremony failed",
    hint: "See the screenshot in the debug folder",
  },
  "page-changed": {
    meaning: "an element the flow waits for did not appear",
    hint:
      "The page changed or did not load; see the screenshot in the debug folder and fix the step's selectors in plugins/entra/browser/*_flow.json",
  },
  "registration-not-confirmed": {
    meaning: "the page confirmed the security key, but Graph does not list a new passkey",
    hint: "Look at the user's authentication methods in Entra ID before running again",
  },
  "manual-timeout": {
    meaning: "the admin did not finish adding the security key in time",
    hint: "Run again and add the security key in the window that opens",
  },
  "browser-closed": {
    meaning: "the browser window was closed before the security key was registered",
    hint: "Run again and leave the window open until it closes by itself",
  },
  "tap-delete-failed": {
    meaning: "the passkey was registered but the Temporary Access Pass could not be deleted",
    hint: "Delete the user's Temporary Access Pass in Entra ID (Authentication methods) by hand",
  },
};

/**
 * A browser flow failed for one user. `code` is the reason; `step` is the flow step;
 * `debugFiles` are the screenshot and page files saved for it.
 */
export class BrowserFlowError extends ProvisioningError {
  /** The user's sign-in name. */
  readonly user: string;
  /** The step that failed, e.g. `enter-tap`, or `create-tap` / `confirm` outside the page. */
  readonly step: string;
  /** The files written to the debug folder for this failure. */
  debugFiles: readonly string[] = [];
  /** Set when deleting the Temporary Access Pass failed too. */
  tapDeleteError: unknown;
  /** `tap-delete-failed` only: the passkey that was registered before the delete failed. */
  registration: { method: PasskeyMethod; credentialId: string } | undefined;

  constructor(
    code: string,
    user: string,
    step: string,
    detail: string,
    options: { cause?: unknown; hint?: string } = {},
  ) {
    const known = browserReasons[code];
    const hint = options.hint ?? known?.hint;
    super(code, `Cannot register a passkey for ${user} in the browser: ${detail} (step "${step}")`, {
      ...(options.cause === undefined ? {} : { cause: options.cause }),
      ...(hint === undefined ? {} : { hint }),
    });
    this.user = user;
    this.step = step;
  }
}

/** The detail of a reason: its meaning, and the page's own words when there are some. */
export function describeReason(code: string, pageText?: string): string {
  const meaning = browserReasons[code]?.meaning ?? code;
  const text = pageText?.replace(/\s+/g, " ").trim().slice(0, 300);
  return text ? `${meaning} ("${text}")` : meaning;
}
