// The systems under test, each started in its own workerd process through Miniflare, so CPU
// and memory can be read per peer from /proc.
import { Miniflare } from "miniflare";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { workerdChildren } from "./proc.mjs";

export const BENCH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const ROOT = path.resolve(BENCH, "..");
export const COMPATIBILITY_DATE = "2026-04-20";
export const JWT_SECRET = "bench-secret-0123456789abcdef0123456789";
export const API_KEY = "bench-key-1";
/** roomcast's build/, copied at the start of a run so a rebuild meanwhile cannot mix builds. */
export const ROOMCAST_BUILD = path.join(BENCH, "build/roomcast");

/** The peers, in table order; js-hibernating is the baseline every ratio divides by. */
export const PEERS = [
  { name: "roomcast", kind: "roomcast" },
  { name: "js-hibernating", kind: "js", file: "js-hibernating.js" },
  { name: "js-accept", kind: "js", file: "js-accept.js" },
  { name: "js-durable", kind: "js", file: "js-durable.js" },
  { name: "partyserver", kind: "js", file: "partyserver.js" },
];
export const BASELINE = "js-hibernating";

/** Diagnostic peers (bench/diag.mjs): js-durable priced step by step toward roomcast's room. */
export const DIAG_PEERS = [
  { name: "js-durable+log", kind: "js", file: "js-shaped.js", bindings: { DIAG_LOG: "1" } },
  { name: "js-schema", kind: "js", file: "js-shaped.js", bindings: { DIAG_SCHEMA: "1" } },
  { name: "js-schema+log", kind: "js", file: "js-shaped.js", bindings: { DIAG_SCHEMA: "1", DIAG_LOG: "1" } },
];

/** Builds what is missing: roomcast's build/ (npm run build) and the bundled JS peers. */
export function prepare({ log = console.error } = {}) {
  if (!fs.existsSync(path.join(ROOT, "build/index.js")) || !fs.existsSync(path.join(ROOT, "build/index_bg.wasm"))) {
    log("bench: build/ is missing, running npm run build");
    execFileSync("npm", ["run", "build"], { cwd: ROOT, stdio: "inherit" });
  }
  fs.mkdirSync(ROOMCAST_BUILD, { recursive: true });
  for (const f of ["index.js", "index_bg.wasm"]) fs.copyFileSync(path.join(ROOT, "build", f), path.join(ROOMCAST_BUILD, f));
  const esbuild = path.join(ROOT, "node_modules/.bin/esbuild");
  fs.mkdirSync(path.join(BENCH, "build"), { recursive: true });
  const files = new Set([...PEERS, ...DIAG_PEERS].filter((p) => p.kind === "js").map((p) => p.file));
  for (const file of files) {
    execFileSync(esbuild, [
      path.join(BENCH, "peers", file), "--bundle", "--format=esm", "--platform=browser",
      "--conditions=workerd,worker,browser", "--external:cloudflare:*", "--log-level=warning",
      `--outfile=${path.join(BENCH, "build", file)}`,
    ], { cwd: ROOT, stdio: "inherit" });
  }
}

/** Miniflare options for a peer. */
function options(peer, { persist, port = 0, onStdout, inspectorPort, bindings: extra = {} }) {
  const drain = (stdout, stderr) => {
    stdout.on("data", (d) => onStdout?.(d));
    stderr.on("data", (d) => onStdout?.(d, true));
  };
  const common = {
    modules: true,
    compatibilityDate: COMPATIBILITY_DATE,
    durableObjectsPersist: persist ?? false,
    host: "127.0.0.1",
    port,
    handleRuntimeStdio: drain,
    ...(inspectorPort ? { inspectorPort } : {}),
  };
  if (peer.kind === "roomcast") {
    return {
      ...common,
      scriptPath: path.join(peer.dir ?? ROOMCAST_BUILD, "index.js"),
      modulesRoot: peer.dir ?? ROOMCAST_BUILD,
      modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"], fallthrough: true }],
      durableObjects: { ROOMS: { className: "NotificationRoom", useSQLite: true } },
      bindings: {
        JWT_SECRET,
        BROADCAST_API_KEYS: API_KEY,
        MAX_CONNECTIONS_PER_USER: "100000",
        MAX_CONNECTIONS_PER_ROOM: "100000",
        ...peer.bindings,
        ...extra,
      },
    };
  }
  return {
    ...common,
    scriptPath: path.join(BENCH, "build", peer.file),
    durableObjects: { ROOMS: { className: "Room", useSQLite: true } },
    bindings: { BROADCAST_API_KEYS: API_KEY, ...peer.bindings },
  };
}

/** A started peer: its Miniflare, base URLs and the PID of its workerd. */
export class Runtime {
  static async start(peer, opts = {}) {
    const before = new Set(workerdChildren());
    const t0 = performance.now();
    const rt = new Runtime(peer);
    rt.mf = new Miniflare(options(peer, { ...opts, onStdout: (d, err) => rt.output(d, err) }));
    const url = await rt.mf.ready;
    rt.readyMs = performance.now() - t0;
    rt.startedAt = t0;
    rt.base = url.href.replace(/\/$/, "");
    rt.wsBase = rt.base.replace(/^http/, "ws");
    rt.port = Number(url.port);
    const spawned = workerdChildren().filter((p) => !before.has(p));
    if (spawned.length !== 1) throw new Error(`${peer.name}: expected one new workerd, found ${spawned}`);
    rt.pid = spawned[0];
    return rt;
  }

  constructor(peer) {
    this.peer = peer;
    this.name = peer.name;
    this.logBytes = 0;
    this.logLines = 0;
    this.errors = [];
  }

  output(d, isErr) {
    this.logBytes += d.length;
    for (let i = d.indexOf(10); i !== -1; i = d.indexOf(10, i + 1)) this.logLines++;
    if (isErr || /error|panicked/i.test(d)) {
      const text = d.toString().trim();
      if (text && this.errors.length < 20) this.errors.push(text.slice(0, 500));
    }
  }

  async dispose() {
    await this.mf?.dispose();
    this.mf = null;
  }
}
