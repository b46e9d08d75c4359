/**
 * The policy check both Temporary Access Pass paths (the browser flow and `--via tap`) make
 * before any pass exists: a pass must never be spent on a flow the tenant's policies make
 * impossible.
 *
 * @module
 */
import { getFido2Policy, getTapPolicy } from "../graph/policies.ts";
import type { EntraSession } from "../session.ts";
import { BrowserFlowError, describeReason } from "./errors.ts";

/** The policy read in flight per session: users starting together share one read. */
const policyReads = new WeakMap<EntraSession, Promise<string | undefined>>();

/**
 * Refuses before any pass exists when the tenant's policies make the flow impossible: the Passkey
 * (FIDO2) method disabled or without self-service setup, or the Temporary Access Pass method
 * disabled. A session that may not read the policies goes on (the page will say). Each user's
 * check reads the policies anew (in parallel with opening the browser context), so a policy
 * changed during a run counts at once.
 */
export async function checkPolicies(
  session: EntraSession,
  upn: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  let read = policyReads.get(session);
  if (!read) {
    read = readPolicyRefusal(session, signal).finally(() => policyReads.delete(session));
    policyReads.set(session, read);
  }
  const refusal = await read;
  if (refusal) throw new BrowserFlowError(refusal, upn, "check-policy", describeReason(refusal));
}

async function readPolicyRefusal(
  session: EntraSession,
  signal: AbortSignal | undefined,
): Promise<string | undefined> {
  try {
    const [fido2, tap] = await Promise.all([
      getFido2Policy(session.client, signal ? { signal } : {}),
      getTapPolicy(session.client, signal ? { signal } : {}),
    ]);
    if (tap.state !== "enabled") return "tap-disabled";
    if (fido2.state !== "enabled" || fido2.isSelfServiceRegistrationAllowed === false) {
      return "policy-forbids-security-keys";
    }
    return undefined;
  } catch {
    return undefined;
  }
}
