import assert from "node:assert/strict";
import { PacketQueue } from "./packet_queue.ts";

const packet = (n: number) => new Uint8Array(64).fill(n & 0xff);

Deno.test("packets wait in order for receivers that come later", async () => {
  const queue = new PacketQueue();
  for (let i = 0; i < 5; i++) queue.push(packet(i));
  for (let i = 0; i < 5; i++) assert.equal((await queue.take(undefined))[0], i);
  assert.equal(queue.size, 0);
});

Deno.test("a flood of packets nobody reads keeps only the newest, up to the bound", async () => {
  const queue = new PacketQueue({ maxPackets: 100 });
  for (let i = 0; i < 30_000; i++) queue.push(packet(i));
  assert.equal(queue.size, 100);
  assert.equal(queue.dropped, 29_900);
  assert.equal((await queue.take(undefined))[0], 29_900 & 0xff, "the oldest kept is the 29,901st");
  const defaults = new PacketQueue();
  for (let i = 0; i < 30_000; i++) defaults.push(packet(i));
  assert.equal(defaults.size, 1024);
});

Deno.test("the end fails waiting and later receivers, after the packets still queued", async () => {
  const queue = new PacketQueue();
  const waiting = queue.take(undefined);
  queue.push(packet(1));
  assert.equal((await waiting)[0], 1);
  queue.push(packet(2));
  queue.end(new Error("closed"));
  assert.equal((await queue.take(undefined))[0], 2);
  await assert.rejects(queue.take(undefined), /closed/);
});
