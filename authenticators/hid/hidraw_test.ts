import assert from "node:assert/strict";
import { Ctap2Client } from "../../core/ctap/client.ts";
import { CtapHidClient } from "../../core/ctap/hid_client.ts";
import { CtapHidDevice } from "../../core/ctap/hid_device.ts";
import { newTestKey } from "../../test/software_key.ts";
import { type HidrawFile, openHidrawTransport } from "./hidraw.ts";

/**
 * Stands in for /dev/hidrawN, the one thing that cannot run here: writes carry a report id byte,
 * reads return one input report, and closing does not end a read in flight (as in the kernel).
 * Behind it, the real CTAPHID device layer in front of a software key.
 */
class FakeHidrawNode implements HidrawFile {
  readonly writes: Uint8Array[] = [];
  readonly #reports: Uint8Array[] = [];
  #waiter: { resolve: (r: Uint8Array) => void; reject: (e: unknown) => void } | undefined;
  readonly device: CtapHidDevice;
  closed = false;

  constructor(handler: ConstructorParameters<typeof CtapHidDevice>[0], readonly reportId?: number) {
    this.device = new CtapHidDevice(handler, (packet) => {
      this.deliver(reportId === undefined ? packet : Uint8Array.of(reportId, ...packet));
    });
  }

  deliver(report: Uint8Array): void {
    if (this.#waiter) {
      const waiter = this.#waiter;
      this.#waiter = undefined;
      waiter.resolve(report);
    } else {
      this.#reports.push(report);
    }
  }

  unplug(): void {
    this.#waiter?.reject(new Error("No such device (os error 19)"));
    this.#waiter = undefined;
  }

  read(buffer: Uint8Array): Promise<number | null> {
    const next = this.#reports.shift();
    const copy = (report: Uint8Array) => {
      buffer.set(report.subarray(0, buffer.length));
      return Math.min(report.length, buffer.length);
    };
    if (next) return Promise.resolve(copy(next));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve: (r) => resolve(copy(r)), reject };
    });
  }

  write(data: Uint8Array): Promise<number> {
    this.writes.push(data.slice());
    this.device.receive(data.slice(1));
    return Promise.resolve(data.length);
  }

  close(): void {
    this.closed = true;
  }
}

Deno.test("hidraw transport: 65-byte writes with report id 0, getInfo through the CTAPHID client, close wakes the pending read", async () => {
  const key = await newTestKey();
  const node = new FakeHidrawNode(key.device);
  const transport = await openHidrawTransport({ path: "/dev/hidraw9", open: () => Promise.resolve(node) });
  const client = await CtapHidClient.open(transport);
  const info = await new Ctap2Client(client).getInfo();
  assert.deepEqual(info.versions, ["FIDO_2_0", "FIDO_2_1"]);
  assert.ok(node.writes.length >= 2);
  for (const write of node.writes) {
    assert.equal(write.length, 65);
    assert.equal(write[0], 0);
  }
  const before = node.writes.length;
  await client.close();
  assert.ok(node.closed);
  // close() asked for one INIT answer on the broadcast channel to end the blocked read.
  assert.equal(node.writes.length, before + 1);
  assert.deepEqual([...node.writes.at(-1)!.subarray(1, 6)], [0xff, 0xff, 0xff, 0xff, 0x86]);
  await node.device.close();
});

Deno.test("hidraw transport: numbered reports carry the FIDO report id out and are stripped (and filtered) in", async () => {
  const key = await newTestKey();
  const node = new FakeHidrawNode(key.device, 2);
  const transport = await openHidrawTransport({
    path: "/dev/hidraw9",
    reportId: 2,
    open: () => Promise.resolve(node),
  });
  // A report of another collection (id 1) arrives first: it is not a CTAPHID packet.
  node.deliver(Uint8Array.of(1, ...new Uint8Array(8)));
  await using client = await CtapHidClient.open(transport);
  assert.ok(node.writes.every((w) => w[0] === 2));
  assert.ok(client.cid > 0);
  await client.close();
  await node.device.close();
});

Deno.test("hidraw transport: an unplugged key ends pending and later receives with key-unplugged", async () => {
  const key = await newTestKey();
  const node = new FakeHidrawNode(key.device);
  await using transport = await openHidrawTransport({
    path: "/dev/hidraw9",
    open: () => Promise.resolve(node),
  });
  const pending = transport.receive();
  node.unplug();
  await assert.rejects(pending, (error: Error & { code?: string }) => {
    assert.equal(error.code, "key-unplugged");
    assert.match(error.message, /Cannot receive from security key "\/dev\/hidraw9"/);
    return true;
  });
  await assert.rejects(
    transport.receive(),
    (error: Error & { code?: string }) => error.code === "key-unplugged",
  );
  await node.device.close();
});

Deno.test("hidraw transport: a node the user may not open explains the udev rule", async () => {
  await assert.rejects(
    openHidrawTransport({
      path: "/dev/hidraw9",
      open: () => Promise.reject(new Deno.errors.PermissionDenied("Permission denied (os error 13)")),
    }),
    (error: Error & { code?: string; hint?: string }) => {
      assert.equal(error.code, "hidraw-permission-denied");
      assert.match(error.hint ?? "", /udev rule/);
      return true;
    },
  );
});
