// The hand-written .d.ts files next to each client module: they compile (strict), an app's typical
// use type-checks while misuse does not (tests/client/types/usage.ts), and each declares exactly
// the values its module exports.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { ROOT } from "../support/harness.mjs";

const run = promisify(execFile);

test("the client's .d.ts files type-check an app's usage (and refuse misuse)", async () => {
  const tsc = path.join(ROOT, "node_modules/typescript/bin/tsc");
  const r = await run(process.execPath, [tsc, "-p", path.join(ROOT, "tests/client/types/tsconfig.json")], { timeout: 60000 })
    .catch((e) => e);
  assert.equal(r.code ?? 0, 0, `tsc failed:\n${r.stdout}${r.stderr}`);
});

test("each .d.ts declares exactly the values its module exports", async () => {
  // roomcast.js and broadcaster.js load anywhere; react.js needs React, which is installed.
  for (const mod of ["roomcast", "broadcaster", "react"]) {
    const js = await import(path.join(ROOT, `client/${mod}.js`));
    const dts = await readFile(path.join(ROOT, `client/${mod}.d.ts`), "utf8");
    // A function with overloads is declared once per signature.
    const declared = new Set([...dts.matchAll(/^export (?:declare )?(?:class|function|const) (\w+)/gm)].map((m) => m[1]));
    assert.deepEqual([...declared].sort(), Object.keys(js).sort(), mod);
  }
});
