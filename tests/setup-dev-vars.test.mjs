// scripts/dev-vars.sh, which setup runs: .dev.vars gets the keys new in .dev.vars.example,
// and keeps what it has.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const EXAMPLE = [
  "# Header of the example.",
  "",
  "JWT_SECRET=example-secret",
  "BROADCAST_API_KEYS=dev-key",
  "DEV_MODE=true",
  "# Client events the demo page sends.",
  "CLIENT_EVENT_TYPES=typing.*",
  "",
].join("\n");

/** Runs the script on a temp example and target; returns { stderr, target text }. */
function run(dir, target) {
  const ex = path.join(dir, "example");
  const t = path.join(dir, "target");
  fs.writeFileSync(ex, EXAMPLE);
  if (target !== undefined) fs.writeFileSync(t, target);
  const r = spawnSync("bash", [path.join(ROOT, "scripts/dev-vars.sh"), ex, t], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return { stderr: r.stderr, text: fs.readFileSync(t, "utf8") };
}

test("missing keys are added with their comments, present ones untouched, and a second run says nothing", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-devvars-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // A key commented out counts as present; the last line has no newline.
  const mine = "JWT_SECRET=my-own-secret\n# DEV_MODE=true\nBROADCAST_API_KEYS=k1,k2";
  const first = run(dir, mine);
  assert.equal(first.text, `${mine}\n# Client events the demo page sends.\nCLIENT_EVENT_TYPES=typing.*\n`);
  assert.match(first.stderr, /added CLIENT_EVENT_TYPES to .*target/);
  assert.doesNotMatch(first.stderr, /JWT_SECRET|DEV_MODE|BROADCAST_API_KEYS/);

  const again = spawnSync("bash", [path.join(ROOT, "scripts/dev-vars.sh"), path.join(dir, "example"), path.join(dir, "target")], { encoding: "utf8" });
  assert.equal(again.status, 0);
  assert.equal(again.stderr, "");
  assert.equal(fs.readFileSync(path.join(dir, "target"), "utf8"), first.text);
});

test("several missing keys are named together; no .dev.vars at all is a copy of the example", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-devvars-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const some = run(dir, "BROADCAST_API_KEYS=mine\n");
  assert.match(some.stderr, /added JWT_SECRET, DEV_MODE, CLIENT_EVENT_TYPES to /);
  assert.ok(some.text.startsWith("BROADCAST_API_KEYS=mine\nJWT_SECRET=example-secret\nDEV_MODE=true\n"), some.text);

  fs.rmSync(path.join(dir, "target"));
  const fresh = run(dir);
  assert.equal(fresh.text, EXAMPLE);
  assert.match(fresh.stderr, /created .*target from/);
});
