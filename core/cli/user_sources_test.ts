import { assertEquals } from "../../test/assert.ts";
import { estimateRows } from "./user_sources.ts";

Deno.test("estimateRows counts the rows a run will count: blank and all-empty lines are none", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-rows-" });
  try {
    const cases: [string, number][] = [
      ["upn\na@b.c\nb@b.c\n", 2],
      ["upn\r\na@b.c\r\nb@b.c", 2],
      ["upn\na@b.c\n\nb@b.c\n,,\n;\n\n", 2],
      ["upn\n", 0],
    ];
    for (const [text, rows] of cases) {
      await Deno.writeTextFile(`${dir}/users.csv`, text);
      assertEquals(await estimateRows(`${dir}/users.csv`), rows, JSON.stringify(text));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
