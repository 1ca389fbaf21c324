// The production bundle builds for deployment, its configuration is what an operator expects,
// and the wasm stays within its size ceiling (docs/operations.md, "Bundle size").
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { ROOT } from "./support/harness.mjs";

// Regression ceiling for the gzipped wasm, in KiB: the measured size plus a small margin (the
// budget is 250 KiB; about 23 KiB of it is the demo page and the browser client, embedded).
// docs/benchmarks.md says where the bytes go. Lower this whenever the bundle shrinks.
const WASM_GZIP_CEILING_KIB = 240;

test("wrangler deploy --dry-run --env production builds a deployable bundle", { timeout: 300_000 }, async () => {
  const outdir = mkdtempSync(path.join(tmpdir(), "roomcast-dry-"));
  const { stdout, stderr } = await promisify(execFile)(
    path.join(ROOT, "node_modules/.bin/wrangler"),
    ["deploy", "--dry-run", "--env", "production", "--outdir", outdir],
    { cwd: ROOT, env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false" }, maxBuffer: 16 << 20 },
  );
  const out = stdout + stderr;
  assert.match(out, /--dry-run: exiting now/);
  assert.match(out, /env\.ROOMS \(NotificationRoom\)\s+Durable Object/);
  // The demo page's token minting is development-only.
  assert.match(out, /env\.DEV_MODE \("false"\)/);
  assert.doesNotMatch(out, /JWT_SECRET|BROADCAST_API_KEYS/, "secrets are never in wrangler.toml");

  const wasm = readdirSync(outdir).find((f) => f.endsWith(".wasm"));
  assert.ok(wasm, "the bundle contains the wasm module");
  const bytes = readFileSync(path.join(outdir, wasm));
  const gzKiB = gzipSync(bytes, { level: 9 }).length / 1024;
  console.log(`# wasm ${(statSync(path.join(outdir, wasm)).size / 1024).toFixed(0)} KiB raw, ${gzKiB.toFixed(0)} KiB gzipped`);
  assert.ok(gzKiB <= WASM_GZIP_CEILING_KIB, `wasm is ${gzKiB.toFixed(0)} KiB gzipped, over ${WASM_GZIP_CEILING_KIB}`);
});
