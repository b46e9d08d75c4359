import { assert, assertEquals } from "../../test/assert.ts";
import { ProvisioningError } from "../errors.ts";
import { checkNamedPaths } from "./path_guard.ts";

async function link(target: string, path: string): Promise<void> {
  // Deno.symlink needs unscoped read and write, which the test permission set does not grant.
  const made = await new Deno.Command("ln", { args: ["-s", target, path] }).output();
  assertEquals(made.code, 0);
}

Deno.test("named paths: a link out of what was named is refused with the real path; plain files pass", async () => {
  const base = await Deno.makeTempDir({ prefix: "provisioning-guard-" });
  try {
    const cwd = `${base}/work`;
    await Deno.mkdir(cwd);
    await Deno.mkdir(`${base}/elsewhere`);
    await Deno.writeTextFile(`${base}/elsewhere/ca.pem`, "not a certificate");
    await Deno.writeTextFile(`${cwd}/users.csv`, "upn\n");
    await link(`${base}/elsewhere/ca.pem`, `${cwd}/ca.pem`);
    await link(`${base}/elsewhere`, `${cwd}/out`);
    const check = (...args: string[]) =>
      checkNamedPaths({ args, cwd, env: () => undefined, mode: "deno-run" });

    assertEquals(check("--csv", "users.csv", "--results", "results.csv"), undefined);
    // Named outside the working folder, without links: the admin named it.
    assertEquals(check("--ca-file", `${base}/elsewhere/ca.pem`), undefined);

    const file = check("--ca-file", "ca.pem");
    assert.ok(file instanceof ProvisioningError);
    assertEquals(file.code, "path-is-link");
    assert.match(file.message, /--ca-file "ca\.pem": it is a link to ".*\/elsewhere\/ca\.pem"/);
    assert.match(file.hint ?? "", /Name the real path instead: --ca-file .*\/elsewhere\/ca\.pem/);

    // Writing through a linked folder below the working folder.
    const folder = check("--results", "out/results.csv");
    assert.ok(folder instanceof ProvisioningError);
    assertEquals(folder.code, "path-is-link");
    assert.match(folder.message, /a folder in it is a link to ".*\/elsewhere"/);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
