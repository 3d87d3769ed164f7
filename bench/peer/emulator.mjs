// fauxqs, an in-memory SQS-compatible server, on 127.0.0.1 only (its own start-up helper
// binds every interface, so the app is built and bound here).
//
//   node emulator.mjs PORT
//
// Prints "ready" once listening; stops on SIGTERM.
import { buildApp } from "fauxqs";

const app = buildApp({ logger: false });
await app.listen({ port: Number(process.argv[2]), host: "127.0.0.1" });
console.log("ready");
process.on("SIGTERM", () => {
  app.close().finally(() => process.exit(0));
});
