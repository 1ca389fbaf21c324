#!/usr/bin/env node
// Counts the calls across the wasm boundary per publish, per connect or per disconnect: copies
// roomcast's build, wraps every wasm import (wasm -> JS: runtime APIs and wasm-bindgen glue)
// and export (JS -> wasm) in a counter, and prints calls per operation. Deterministic: the same
// build and workload give the same counts, so it prices a change where CPU timings are noise.
// It patches the generated glue by pattern, so a different wasm-bindgen may need a new pattern.
//
//   node bench/boundary.mjs [--what=publish|connect|close] [--publishes=3000] [--dir=bench/build/roomcast]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Runtime, prepare, ROOMCAST_BUILD } from "./lib/peers.mjs";
import { Pool, Publisher } from "./lib/client.mjs";

const arg = (k, d) => process.argv.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3) ?? d;
const publishes = Number(arg("publishes", 3000));
const what = arg("what", "publish");
// Each operation enters the room's wasm through one export exactly once (a publish and a
// connect through the room's fetch, a disconnect through webSocketClose): counts are dumped at
// every 1,000th entry, so they are the mean over the 1,000 operations before it.
const marker = { publish: "^notificationroom_fetch$", connect: "^notificationroom_fetch$", close: "^notificationroom_webSocketClose$" }[what];
if (!marker) throw new Error(`--what=${what}: publish, connect or close`);
prepare();
const src = arg("dir", ROOMCAST_BUILD);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-boundary-"));
fs.copyFileSync(path.join(src, "index_bg.wasm"), path.join(dir, "index_bg.wasm"));
let js = fs.readFileSync(path.join(src, "index.js"), "utf8");
const inst = /new WebAssembly\.Instance\(([\w$]+),([\w$]+)\(\)\),([\w$]+)=([\w$]+)\.exports/g;
if (!inst.test(js)) throw new Error("boundary: could not find the wasm instantiation in index.js");
js = js.replace(inst, (_m, mod, imports, ex, inst2) => `new WebAssembly.Instance(${mod},__countImports(${imports}())),${ex}=__countExports(${inst2}.exports)`);
const helper = `
var __marker=${JSON.stringify(marker)};
var __counts={imports:{},exports:{}},__sends=0;
function __countImports(o){for(const [name,m] of Object.entries(o)){const w={};for(const k of Object.keys(m)){const f=m[k];if(typeof f!=="function"){w[k]=f;continue;}w[k]=function(...a){__counts.imports[k]=(__counts.imports[k]||0)+1;return f.apply(this,a);};}o[name]=w;}return o;}
function __countExports(e){const w={};for(const k of Object.keys(e)){const v=e[k];w[k]=typeof v==="function"?function(...a){if(/${marker}/.test(k)&&++__sends%1000===0){console.log("BOUNDARY "+JSON.stringify(__counts));__counts={imports:{},exports:{}};}__counts.exports[k]=(__counts.exports[k]||0)+1;return v.apply(this,a);}:v;}return w;}
`;
js = js.replace(/(import \w+ from"\.\/index_bg\.wasm";)/, `$1${helper}`);
fs.writeFileSync(path.join(dir, "index.js"), js);

const rt = await Runtime.start({ name: "roomcast (counting)", kind: "roomcast", dir });
const lines = [];
const output = rt.output.bind(rt);
rt.output = (d, e) => { output(d, e); for (const l of d.toString().split("\n")) if (l.includes("BOUNDARY ")) lines.push(l); };
try {
  const pool = new Pool(rt, "boundary");
  const pub = new Publisher(rt, "boundary");
  if (what === "publish") {
    await pool.open(1);
    for (let i = 0; i < publishes; i++) await pool.allGot((await pub.publish()).seq);
  } else {
    // 1,000 connects in a fresh room (the first 1,000 marker calls are theirs alone), then
    // every client hangs up.
    await pool.open(1000, { concurrency: 20 });
    if (what === "close") { lines.length = 0; await pool.close(); }
  }
  await new Promise((r) => setTimeout(r, 1500));
  if (!lines.length) throw new Error("boundary: no counts came out (fewer than 1000 operations?)");
  const line = lines.at(-1);
  const counts = JSON.parse(line.slice(line.indexOf("{"), line.lastIndexOf("}") + 1).replace(/\\"/g, '"'));
  // What each import does: the start of its body in the glue.
  const bodyOf = (k) => {
    const at = js.indexOf(`${k}:function(`);
    if (at === -1) return "";
    const open = js.indexOf("{", at);
    let end = js.indexOf("},__wb", open);
    if (end === -1 || end - open > 90) end = open + 90;
    return js.slice(open + 1, end).replace(/\s+/g, " ");
  };
  const per = (o) => Object.entries(o).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k.replace(/_[0-9a-f]{16}$/, ""), v / 1000, bodyOf(k)]);
  const sum = (xs) => xs.reduce((a, [, v]) => a + v, 0);
  const imp = per(counts.imports), exp = per(counts.exports);
  console.log(`per ${what} (mean over the last 1,000): ${sum(imp).toFixed(0)} wasm->JS calls, ${sum(exp).toFixed(0)} JS->wasm calls`);
  console.log("\nwasm -> JS (imports):");
  for (const [k, v, body] of imp) console.log(`${v.toFixed(1).padStart(6)}  ${k.padEnd(44)} ${body}`);
  console.log("\nJS -> wasm (exports):");
  for (const [k, v] of exp) console.log(`${v.toFixed(1).padStart(6)}  ${k}`);
  pub.close();
  await pool.close();
} finally {
  await rt.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
