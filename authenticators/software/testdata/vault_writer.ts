/**
 * Test fixture for vault_test.ts: opens the vault named by the first argument (passphrase from
 * PROVISIONING_VAULT_PASSPHRASE), prints "ready" once, then updates it in a tight loop until it is
 * killed. Each state carries a check value derived from its counter, so a torn write shows.
 *
 * @module
 */
import { z } from "zod";
import { Vault } from "../vault.ts";

/** The state the writer keeps: a counter, its check value, and padding to make writes slow. */
export const writerStateSchema = z.object({
  counter: z.number().int().min(0),
  check: z.string(),
  padding: z.string(),
});

/** A state of {@link writerStateSchema}. */
export type WriterState = z.infer<typeof writerStateSchema>;

/** The check value of a counter. */
export function checkOf(counter: number): string {
  return `counter-${counter}-${(counter * 2654435761) % 4294967296}`;
}

/** The state with the given counter; 256 KiB of padding so a write takes long enough to interrupt. */
export function writerState(counter: number): WriterState {
  return { counter, check: checkOf(counter), padding: "p".repeat(256 * 1024) };
}

if (import.meta.main) {
  const path = Deno.args[0];
  const passphrase = Deno.env.get("PROVISIONING_VAULT_PASSPHRASE");
  if (path === undefined || passphrase === undefined) {
    throw new TypeError(
      "Cannot run the vault writer: pass the vault path and set PROVISIONING_VAULT_PASSPHRASE",
    );
  }
  const vault = await Vault.open({ path, passphrase, schema: writerStateSchema });
  await Deno.stdout.write(new TextEncoder().encode("ready\n"));
  for (;;) await vault.update((state) => writerState(state.counter + 1));
}
