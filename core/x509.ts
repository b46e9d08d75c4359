/**
 * `@peculiar/x509`, ready to use: it resolves its algorithms through tsyringe, which needs the
 * Reflect metadata polyfill loaded first. Import X.509 from here, never from the package, so the
 * order can never be wrong.
 *
 * @example
 * ```ts
 * import { x509 } from "./x509.ts";
 * console.assert(typeof x509.X509Certificate === "function");
 * ```
 *
 * @module
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(crypto);

export { x509 };
