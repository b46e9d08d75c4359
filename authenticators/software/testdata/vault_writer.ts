/**
 * Test fixture for vault_test.ts: opens the vault named by the first argument (passphrase from
 * PROVISIONING_VAULT_PASSPHRASE) and makes changes as writer `name` (second argument): `count`
 * of them (third argument) then exits, or, without a count, prints "ready" once and changes it in
 * a tight loop until it is killed ("forever" as the count does the same). A fourth argument sets
 * `compactAfterBytes`: small values make compactions frequent, so that kills land in them too.
 * Each change carries a check value derived from the counter, so a torn or lost change shows.
 *
 * @module
 */
import { z } from "zod";
import { Vault, type VaultChanges } from "../vault.ts";

/** The state the writers keep: a counter, its check value, and how many changes each writer made. */
export const writerStateSchema = z.object({
  counter: z.number().int().min(0),
  check: z.string(),
  writers: z.record(z.string(), z.number().int().min(0)),
  padding: z.string(),
});

/** A state of {@link writerStateSchema}. */
export type WriterState = z.infer<typeof writerStateSchema>;

/** One writer's change: one more to the counter. */
export const writerChangeSchema = z.object({ writer: z.string(), counter: z.number().int().min(1) });

/** A change of {@link writerChangeSchema}. */
export type WriterChange = z.infer<typeof writerChangeSchema>;

/** The check value of a counter. */
export function checkOf(counter: number): string {
  return `counter-${counter}-${(counter * 2654435761) % 4294967296}`;
}

/** The first state: counter 0, with 4 KiB of padding so the snapshot has some size. */
export function writerState(): WriterState {
  return { counter: 0, check: checkOf(0), writers: {}, padding: "p".repeat(4096) };
}

/** How the writers' changes apply: the counter must follow on, or the change was lost or doubled. */
export const writerChanges: VaultChanges<WriterState, WriterChange> = {
  schema: writerChangeSchema,
  apply(state, change) {
    if (change.counter !== state.counter + 1) {
      throw new Error(`change ${change.counter} follows ${state.counter}: a change was lost or doubled`);
    }
    state.counter = change.counter;
    state.check = checkOf(change.counter);
    state.writers[change.writer] = (state.writers[change.writer] ?? 0) + 1;
  },
};

if (import.meta.main) {
  const [path, name = "writer", count, compactAfterBytes] = Deno.args;
  const passphrase = Deno.env.get("PROVISIONING_VAULT_PASSPHRASE");
  if (path === undefined || passphrase === undefined) {
    throw new TypeError(
      "Cannot run the vault writer: pass the vault path and set PROVISIONING_VAULT_PASSPHRASE",
    );
  }
  await using vault = await Vault.open({
    path,
    passphrase,
    schema: writerStateSchema,
    changes: writerChanges,
    ...(compactAfterBytes ? { compactAfterBytes: Number(compactAfterBytes) } : {}),
  });
  const change = () => vault.change((state) => ({ writer: name, counter: state.counter + 1 }));
  if (count === undefined || count === "forever") {
    await Deno.stdout.write(new TextEncoder().encode("ready\n"));
    for (;;) await change();
  }
  for (let i = 0; i < Number(count); i++) await change();
}
