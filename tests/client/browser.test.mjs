// The demo page in a real browser (Debian's headless Chromium driven by playwright-core), served
// by the worker: mint a dev token with the button, connect, receive a publish made through the
// API, see it acked, and the room's history say so. Never skipped: without Chromium it fails and
// says how to install it (scripts/setup.sh does, as root).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { startWorker, ROOT } from "../support/harness.mjs";

const CHROMIUM = process.env.ROOMCAST_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = path.join(ROOT, "tests/artifacts");

let browser;
const workers = [];
before(async () => {
  assert.ok(
    existsSync(CHROMIUM),
    `Chromium is missing at ${CHROMIUM}: run \`apt-get install -y chromium\` (scripts/setup.sh does it as root), ` +
      "or point ROOMCAST_CHROMIUM at a Chromium binary",
  );
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: 30000,
  });
});
after(async () => {
  await browser?.close();
  for (const w of workers) await w.stop();
});

async function page() {
  const p = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const errors = [];
  p.on("pageerror", (e) => errors.push(e.message));
  p.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  return { p, errors };
}

test("the demo page: mint a token, connect, receive and ack a notification, see it in history", async () => {
  const w = await startWorker({ bindings: { DEV_MODE: "true", ACK_RETRY_INTERVAL_MS: "400" } });
  workers.push(w);
  const { p, errors } = await page();
  const sub = `b${Date.now().toString(36)}`;
  const room = `user_${sub}`;
  await p.goto(`${w.base}/`);
  await p.waitForSelector('body[data-dev="on"]', { timeout: 10000 });
  assert.equal(await p.isVisible("#mint"), true, "the mint button is there in dev mode");
  assert.equal(await p.isVisible("#publish-box"), true);

  await p.fill("#room", room);
  await p.fill("#sub", sub);
  await p.click("#mint");
  await p.waitForFunction(() => document.querySelector("#token").value.split(".").length === 3, null, { timeout: 5000 });
  await p.click("#connect");
  await p.waitForSelector('#state:text("connected")', { timeout: 10000 });

  const r = await w.publish(room, { type: "note.creation.completed", data: { entityId: "note-456", title: "My Note" }, requiresAck: true });
  assert.equal(r.status, 200);
  assert.equal(r.body.broadcastCount, 1, "the page's socket received it");
  const row = p.locator(`#live tr[data-seq="${r.body.seq}"]`);
  await row.waitFor({ timeout: 5000 });
  assert.match(await row.innerText(), /note\.creation\.completed/);
  await p.waitForSelector(`#live tr[data-seq="${r.body.seq}"] .ack-state .badge.acked`, { timeout: 5000 });

  // The room's history (loaded by the page with its token) shows it acked by this user.
  const hist = p.locator(`#history tr[data-seq="${r.body.seq}"]`);
  await p.waitForSelector(`#history tr[data-seq="${r.body.seq}"] .delivery .badge.acked`, { timeout: 5000 });
  assert.match(await hist.innerText(), new RegExp(sub));
  const server = (await w.history(room)).body.notifications[0];
  assert.equal(server.deliveryStatus, "acked");
  assert.equal(server.ackedBy, sub);
  assert.equal(server.attempts, 1);

  // The dev publish form, with the API key pasted by the user.
  await p.fill("#api-key", "test-key-1");
  await p.fill("#pub-type", "task.created");
  await p.uncheck("#pub-ack");
  await p.click("#publish");
  await p.waitForSelector('#publish-result:text("published #2")', { timeout: 5000 });
  await p.locator('#live tr[data-seq="2"]').waitFor({ timeout: 5000 });
  await p.locator('#history tr[data-seq="2"]').waitFor({ timeout: 5000 });

  mkdirSync(ARTIFACTS, { recursive: true });
  await p.screenshot({ path: path.join(ARTIFACTS, "demo.png"), fullPage: true });
  assert.deepEqual(errors, [], "no errors in the page");
  await p.close();
});

test("without DEV_MODE the page has no mint button and no publish form", async () => {
  const w = await startWorker();
  workers.push(w);
  const { p, errors } = await page();
  await p.goto(`${w.base}/`);
  await p.waitForSelector('body[data-dev="off"]', { timeout: 10000 });
  assert.equal(await p.isVisible("#mint"), false);
  assert.equal(await p.isVisible("#publish-box"), false);
  assert.equal(await p.isVisible("#connect"), true);
  // The probe's 404 is the only failed request the console reports.
  assert.ok(errors.every((e) => /404/.test(e)), errors.join("\n"));
  await p.close();
});
