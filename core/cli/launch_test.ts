import { assert, assertEquals, deepStrictEqual } from "../../test/assert.ts";
import { planLaunch } from "./launch.ts";

const base = {
  cwd: "/home/me/run",
  root: "/opt/provisioning",
  deno: "/usr/bin/deno",
  env: () => undefined,
  hidapiLibraries: ["/usr/lib/x86_64-linux-gnu/libhidapi-hidraw.so.0", "libhidapi-hidraw.so.0"],
};

function flag(args: readonly string[], name: string): string[] | undefined {
  const found = args.find((arg) => arg.startsWith(`${name}=`));
  return found?.slice(name.length + 1).split(",");
}

Deno.test("launch: the set's lists stay when a named path adds to them (a flag replaces the set's list)", () => {
  const plan = planLaunch({ ...base, args: ["key", "serve", "--socket", "../sock/k.sock"] });
  const net = flag(plan.args, "--allow-net")!;
  assert.ok(net.includes("graph.microsoft.com") && net.includes("127.0.0.1"), net.join());
  assert.ok(net.includes("unix:/home/me/sock/k.sock"), net.join());
  const read = flag(plan.args, "--allow-read")!;
  assert.ok(read.includes("/usr/bin/chromium") && read.includes("/opt/provisioning"), read.join());
  assert.ok(read.includes("/home/me/run") && read.includes("/home/me/sock/k.sock"), read.join());
  assertEquals(plan.cwd, "/home/me/run");
  assertEquals(plan.env["PROVISIONING_INVOKED_AS"], "deno task --config /opt/provisioning/deno.json start");
});

Deno.test("launch: FFI only for the commands that open a security key, and only of hidapi's files", () => {
  assertEquals(flag(planLaunch({ ...base, args: ["--csv", "users.csv"] }).args, "--allow-ffi"), undefined);
  deepStrictEqual(flag(planLaunch({ ...base, args: ["key", "devices"] }).args, "--allow-ffi"), [
    "/usr/lib/x86_64-linux-gnu/libhidapi-hidraw.so.0",
  ]);
  const named = planLaunch({
    ...base,
    args: ["--authenticator", "hid", "--hidapi-library", "lib/h.so", "--csv", "u.csv"],
  });
  deepStrictEqual(flag(named.args, "--allow-ffi"), ["/home/me/run/lib/h.so"]);
  assertEquals(named.env["PROVISIONING_HIDAPI_LIBRARY"], "/home/me/run/lib/h.so");
  // The variable set by hand is not trusted: nothing is granted for it.
  const env = (name: string) => name === "PROVISIONING_HIDAPI_LIBRARY" ? "/tmp/evil.so" : undefined;
  deepStrictEqual(flag(planLaunch({ ...base, env, args: ["key", "list"] }).args, "--allow-ffi"), [
    "/usr/lib/x86_64-linux-gnu/libhidapi-hidraw.so.0",
  ]);
});

Deno.test("launch: outputs grant their folder, inputs their file; TLS flags become Deno's start-up settings", () => {
  const plan = planLaunch({
    ...base,
    args: [
      "--csv",
      "/srv/in/users.csv",
      "--results",
      "/srv/out/r.csv",
      "--disable-ssl-verify",
      "--sandbox",
      "https://10.0.0.5:8443",
    ],
  });
  const write = flag(plan.args, "--allow-write")!;
  assert.ok(write.includes("/srv/out") && !write.includes("/srv/in/users.csv"), write.join());
  assert.ok(flag(plan.args, "--allow-read")!.includes("/srv/in/users.csv"));
  assert.ok(flag(plan.args, "--allow-net")!.includes("10.0.0.5:8443"));
  const ignore = flag(plan.args, "--unsafely-ignore-certificate-errors")!;
  assert.ok(ignore.includes("graph.microsoft.com") && ignore.includes("10.0.0.5"), ignore.join());
  assertEquals(plan.env["PROVISIONING_TLS_APPLIED"], "no-verify");
  const store = planLaunch({ ...base, args: ["whoami", "--local-ssl-verify"] });
  assertEquals(store.env["DENO_TLS_CA_STORE"], "system");
});
