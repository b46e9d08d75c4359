/**
 * A small HID report-descriptor parser (Device Class Definition for HID 1.11 §6.2.2): enough to
 * tell a FIDO authenticator from a keyboard by what the device declares, not by guessing from
 * its name or vendor id. It walks short and long items, keeps the global state (usage page,
 * report size, count and id, with push/pop), the local usages, and the collection nesting, and
 * returns every top-level collection with the byte length of its input, output and feature
 * reports.
 *
 * A FIDO device declares a top-level application collection with usage page 0xF1D0 and usage
 * 0x01 (CTAPHID), holding 64-byte input and output reports (CTAP 2.1 §11.2.8.1).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fidoCollection, parseReportDescriptor } from "./report_descriptor.ts";
 * const fido = Uint8Array.from([
 *   0x06, 0xd0, 0xf1, 0x09, 0x01, 0xa1, 0x01, // usage page FIDO, usage CTAPHID, application
 *   0x09, 0x20, 0x15, 0x00, 0x26, 0xff, 0x00, 0x75, 0x08, 0x95, 0x40, 0x81, 0x02, // 64-byte input
 *   0x09, 0x21, 0x15, 0x00, 0x26, 0xff, 0x00, 0x75, 0x08, 0x95, 0x40, 0x91, 0x02, // 64-byte output
 *   0xc0,
 * ]);
 * const collection = fidoCollection(parseReportDescriptor(fido));
 * assert.equal(collection?.inputReportBytes, 64);
 * ```
 *
 * @module
 */

/** The FIDO Alliance usage page (CTAP 2.1 §11.2.8.1). */
export const FIDO_USAGE_PAGE = 0xf1d0;
/** The CTAPHID usage within the FIDO usage page. */
export const FIDO_USAGE_CTAPHID = 0x01;

/** One top-level collection of a report descriptor. */
export interface TopLevelCollection {
  /** The usage page of the collection's usage (e.g. 0xF1D0 for FIDO, 0x01 for generic desktop). */
  readonly usagePage: number;
  /** The collection's usage within its page (0x01 CTAPHID, 0x06 keyboard). */
  readonly usage: number;
  /** Collection type byte: 0x01 application, 0x00 physical, 0x02 logical. */
  readonly type: number;
  /** Report ids its reports use; empty when the device sends reports without an id byte. */
  readonly reportIds: readonly number[];
  /** Length in bytes of its largest input report (without the report id byte). */
  readonly inputReportBytes: number;
  /** Length in bytes of its largest output report (without the report id byte). */
  readonly outputReportBytes: number;
  /** Length in bytes of its largest feature report (without the report id byte). */
  readonly featureReportBytes: number;
}

/** The descriptor cannot be parsed: truncated, unbalanced, or otherwise malformed. */
export class ReportDescriptorError extends Error {
  /** Byte offset of the item that could not be read. */
  readonly offset: number;

  constructor(offset: number, detail: string) {
    super(`Cannot parse HID report descriptor: ${detail} at byte ${offset}`);
    this.name = "ReportDescriptorError";
    this.offset = offset;
  }
}

const ItemType = { main: 0, global: 1, local: 2 } as const;
const MainTag = { input: 0x8, output: 0x9, collection: 0xa, feature: 0xb, endCollection: 0xc } as const;
const GlobalTag = {
  usagePage: 0x0,
  reportSize: 0x7,
  reportId: 0x8,
  reportCount: 0x9,
  push: 0xa,
  pop: 0xb,
} as const;
const LocalTag = { usage: 0x0, usageMinimum: 0x1 } as const;

/** The most nested collections a descriptor may declare before it is called malformed. */
const maxDepth = 32;

interface GlobalState {
  usagePage: number;
  reportSize: number;
  reportCount: number;
  reportId: number;
}

interface OpenCollection {
  usagePage: number;
  usage: number;
  type: number;
  /** Bits per report id (0 = no id), per main item kind. */
  bits: Record<"input" | "output" | "feature", Map<number, number>>;
}

/** Reads an unsigned little-endian value of `size` bytes. */
function unsigned(bytes: Uint8Array, offset: number, size: number): number {
  let value = 0;
  for (let i = size - 1; i >= 0; i--) value = value * 256 + bytes[offset + i]!;
  return value;
}

/**
 * Parses a report descriptor into its top-level collections.
 *
 * @throws {ReportDescriptorError} for a truncated item, an End Collection with nothing open, a
 * collection left open, a Pop without a Push, nesting deeper than 32, or an empty descriptor.
 */
export function parseReportDescriptor(bytes: Uint8Array): TopLevelCollection[] {
  if (bytes.length === 0) throw new ReportDescriptorError(0, "it is empty");
  const result: TopLevelCollection[] = [];
  const stack: GlobalState[] = [];
  let global: GlobalState = { usagePage: 0, reportSize: 0, reportCount: 0, reportId: 0 };
  let usages: number[] = [];
  const open: OpenCollection[] = [];
  let usedIds = new Set<number>();

  let offset = 0;
  while (offset < bytes.length) {
    const prefix = bytes[offset]!;
    if (prefix === 0xfe) {
      // Long item (§6.2.2.3): size byte, tag byte, data. No long item tags are defined: skip it.
      if (offset + 3 > bytes.length) throw new ReportDescriptorError(offset, "a long item is truncated");
      const size = bytes[offset + 1]!;
      if (offset + 3 + size > bytes.length) {
        throw new ReportDescriptorError(offset, "a long item's data is truncated");
      }
      offset += 3 + size;
      continue;
    }
    const sizeCode = prefix & 0x03;
    const size = sizeCode === 3 ? 4 : sizeCode;
    const type = (prefix >> 2) & 0x03;
    const tag = prefix >> 4;
    if (offset + 1 + size > bytes.length) {
      throw new ReportDescriptorError(
        offset,
        `item 0x${prefix.toString(16).padStart(2, "0")} needs ${size} data bytes, ${
          bytes.length - offset - 1
        } are left`,
      );
    }
    const data = unsigned(bytes, offset + 1, size);
    const itemOffset = offset;
    offset += 1 + size;

    if (type === ItemType.global) {
      switch (tag) {
        case GlobalTag.usagePage:
          global.usagePage = data;
          break;
        case GlobalTag.reportSize:
          global.reportSize = data;
          break;
        case GlobalTag.reportCount:
          global.reportCount = data;
          break;
        case GlobalTag.reportId:
          if (data === 0 || data > 255) {
            throw new ReportDescriptorError(itemOffset, `report id ${data} is out of range 1..255`);
          }
          global.reportId = data;
          break;
        case GlobalTag.push:
          stack.push({ ...global });
          break;
        case GlobalTag.pop: {
          const popped = stack.pop();
          if (!popped) throw new ReportDescriptorError(itemOffset, "Pop without a matching Push");
          global = popped;
          break;
        }
      }
      continue;
    }
    if (type === ItemType.local) {
      if (tag === LocalTag.usage || tag === LocalTag.usageMinimum) {
        // A 4-byte usage carries its own page in the high 16 bits (§6.2.2.8).
        usages.push(size === 4 ? data : global.usagePage * 0x10000 + data);
      }
      continue;
    }
    if (type !== ItemType.main) {
      throw new ReportDescriptorError(itemOffset, `item 0x${prefix.toString(16)} has the reserved type 3`);
    }
    switch (tag) {
      case MainTag.collection: {
        if (open.length >= maxDepth) {
          throw new ReportDescriptorError(itemOffset, `collections nest deeper than ${maxDepth}`);
        }
        const full = usages[0] ?? global.usagePage * 0x10000;
        open.push({
          usagePage: Math.floor(full / 0x10000),
          usage: full % 0x10000,
          type: data,
          bits: { input: new Map(), output: new Map(), feature: new Map() },
        });
        if (open.length === 1) usedIds = new Set();
        break;
      }
      case MainTag.endCollection: {
        const closed = open.pop();
        if (!closed) throw new ReportDescriptorError(itemOffset, "End Collection without an open collection");
        if (open.length === 0) {
          const bytesOf = (bits: Map<number, number>) => Math.ceil(Math.max(0, ...bits.values()) / 8);
          result.push({
            usagePage: closed.usagePage,
            usage: closed.usage,
            type: closed.type,
            reportIds: [...usedIds].filter((id) => id !== 0).sort((a, b) => a - b),
            inputReportBytes: bytesOf(closed.bits.input),
            outputReportBytes: bytesOf(closed.bits.output),
            featureReportBytes: bytesOf(closed.bits.feature),
          });
        }
        break;
      }
      case MainTag.input:
      case MainTag.output:
      case MainTag.feature: {
        const top = open[0];
        if (!top) throw new ReportDescriptorError(itemOffset, "a report field lies outside every collection");
        const kind = tag === MainTag.input ? "input" : tag === MainTag.output ? "output" : "feature";
        const bits = top.bits[kind];
        bits.set(global.reportId, (bits.get(global.reportId) ?? 0) + global.reportSize * global.reportCount);
        usedIds.add(global.reportId);
        break;
      }
    }
    // Local items apply to the next main item only (§6.2.2.8).
    usages = [];
  }
  if (open.length > 0) {
    throw new ReportDescriptorError(bytes.length, `${open.length} collection(s) are never closed`);
  }
  return result;
}

/** The FIDO (CTAPHID) top-level collection of a descriptor, if it declares one. */
export function fidoCollection(collections: readonly TopLevelCollection[]): TopLevelCollection | undefined {
  return collections.find((c) => c.usagePage === FIDO_USAGE_PAGE && c.usage === FIDO_USAGE_CTAPHID);
}
