// Runs the compiled worker in workerd (tests/support/harness.mjs's startWorker) for test suites
// written in other languages (python/tests). Usage:
//
//   node tests/support/serve.mjs ['{"ACK_RETRY_INTERVAL_MS":"300"}'] [--persist DIR] [--port N]
//
// Bindings (overriding the harness's test settings) come as JSON from the first argument or
// from ROOMCAST_BINDINGS. Prints one JSON line {"url": "http://127.0.0.1:PORT"} on stdout when
// ready. Reading the line `restart` on stdin stops the runtime, prints {"stopped": true}, starts
// it again on the same storage and port, and prints {"url": …} again. Exits when stdin closes.
import readline from "node:readline";
import { startWorker } from "./harness.mjs";

function parseArgs(argv) {
  const out = { bindings: {}, persist: undefined, port: 0 };
  let json;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--persist") out.persist = argv[++i];
    else if (a === "--port") out.port = Number(argv[++i]);
    else if (json === undefined) json = a;
    else throw new Error(`unexpected argument: ${a}`);
  }
  json ??= process.env.ROOMCAST_BINDINGS;
  if (json) {
    const parsed = JSON.parse(json);
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new Error("bindings must be a JSON object of strings");
    }
    // Worker vars are strings; numbers and booleans are accepted for convenience.
    for (const [k, v] of Object.entries(parsed)) out.bindings[k] = v === null ? undefined : String(v);
  }
  if (!Number.isInteger(out.port) || out.port < 0) throw new Error("--port must be a port number");
  return out;
}

const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const opts = parseArgs(process.argv.slice(2));
let worker = await startWorker(opts);
// A restart must come back where the clients expect it: the port the first start got.
const port = Number(new URL(worker.base).port);
say({ url: worker.base });

// Lines are handled one after another, so a restart never overlaps another.
let queue = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const cmd = line.trim();
  queue = queue.then(async () => {
    if (cmd === "restart") {
      await worker.stop();
      say({ stopped: true });
      worker = await startWorker({ ...opts, port });
      say({ url: worker.base });
    } else if (cmd !== "") {
      say({ error: `unknown command: ${cmd}` });
    }
  });
});
lines.on("close", () => {
  queue.then(() => worker.stop()).finally(() => process.exit(0));
});
