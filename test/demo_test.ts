/** `deno task demo` is one of the README's two set-up commands: it must keep working. */
import { assert, assertEquals } from "./assert.ts";

Deno.test("the demo provisions the sandbox's sample users and the sandbox shows one verified passkey each", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-P=demo", "scripts/demo.ts"],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  assertEquals(output.code, 0, new TextDecoder().decode(output.stderr));
  assert.match(stdout, /5 of 5 users hold exactly one verified passkey/);
  assertEquals(stdout.match(/@contoso\.sandbox +provisioned +[0-9a-f-]{36}\n/g)?.length, 5);
  assert.match(stdout, /duplicate +1\n/);
  assert.match(stdout, /5 users done before, 0 provisioned anew/);
});
