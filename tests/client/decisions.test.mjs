// The JS client's decide() against the table both clients share (tests/fixtures/reconnect-cases.json):
// what the client does after each refusal or close. Pure: no server, no sockets.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { decide } from "../../client/roomcast.js";

const table = JSON.parse(readFileSync(new URL("../fixtures/reconnect-cases.json", import.meta.url), "utf8"));

test("the table has cases, each with a distinct name", () => {
  assert.ok(table.cases.length >= 20);
  assert.equal(new Set(table.cases.map((c) => c.name)).size, table.cases.length);
});

for (const c of table.cases) {
  test(`decide: ${c.name}`, () => {
    const given = { ...table.defaults, ...c.given };
    assert.deepEqual(decide(given), c.then, JSON.stringify(given));
  });
}

test("decide refuses a kind it does not know", () => {
  assert.throws(() => decide({ ...table.defaults, kind: "bogus" }), /unknown kind "bogus"/);
});
