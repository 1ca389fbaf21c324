// The demo page in a real browser (Debian's headless Chromium driven by playwright-core), against
// the real worker: mint a dev token with the button, connect, receive a publish made through the
// API, see it acked, and the room's history say so; two users see each other online and typing.
// Never skipped: without Chromium it fails and says how to install it (scripts/setup.sh does, as
// root).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { chromium } from "playwright-core";
import { startWorker, tokenFor, signHs256, API_KEY, ROOT } from "../support/harness.mjs";

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
  for (const r of relays) await r.stop();
  for (const w of workers) await w.stop();
});

async function page() {
  const p = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  const errors = [];
  p.on("pageerror", (e) => errors.push(e.message));
  p.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  return { p, errors };
}

// The worker embeds demo/index.html and client/roomcast.js when it is built, so build/ may hold
// older copies than the repo. The pages under test use the repo's files: a loopback relay in front
// of the worker serves them and passes everything else (/dev/token, history, the WebSocket
// upgrades) to the real worker byte for byte, so the page talks to one origin as it does when the
// worker serves it. (Pages fulfilled by Playwright instead have no network address, and Chromium's
// local network access checks then block their WebSockets to 127.0.0.1.)
const DEMO_HTML = path.join(ROOT, "demo/index.html");
const CLIENT_JS = path.join(ROOT, "client/roomcast.js");
const relays = [];

/**
 * Starts a relay to worker `w` serving `files` (path -> {file | body, type}); resolves with its
 * base URL.
 */
async function relay(w, files) {
  const target = new URL(w.base);
  const sockets = new Set();
  const server = http.createServer(async (req, res) => {
    const own = files[new URL(req.url, "http://relay").pathname];
    if (own && req.method === "GET") {
      res.writeHead(200, { "content-type": own.type, "cache-control": "no-store" });
      res.end(own.body ?? await readFile(own.file));
      return;
    }
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  server.on("upgrade", (req, socket, head) => {
    const up = net.connect(Number(target.port), target.hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length) up.write(head);
      socket.pipe(up).pipe(socket);
    });
    sockets.add(socket);
    const end = () => { sockets.delete(socket); socket.destroy(); up.destroy(); };
    for (const s of [socket, up]) { s.on("error", end); s.on("close", end); }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  relays.push({
    stop: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
      server.close(resolve);
    }),
  });
  return `http://127.0.0.1:${server.address().port}`;
}

async function demoPage(w) {
  const base = await relay(w, {
    "/": { file: DEMO_HTML, type: "text/html; charset=utf-8" },
    "/client/roomcast.js": { file: CLIENT_JS, type: "text/javascript; charset=utf-8" },
  });
  const { p, errors } = await page();
  await p.goto(`${base}/`);
  return { p, errors };
}

test("the demo page: mint a token, connect, receive and ack a notification, see it in history", async () => {
  const w = await startWorker({ bindings: { DEV_MODE: "true", ACK_RETRY_INTERVAL_MS: "400" } });
  workers.push(w);
  const { p, errors } = await demoPage(w);
  const sub = `b${Date.now().toString(36)}`;
  const room = `user_${sub}`;
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

  // This worker allows no client events: the first refused one disables the typing box, so the
  // page never collects the refusals that would close its connection.
  await p.waitForSelector('#online li[data-user="' + sub + '"]', { timeout: 5000 });
  await p.type("#say", "hi");
  await p.waitForSelector("#say:disabled", { timeout: 5000 });
  assert.match(await p.textContent("#say-hint"), /CLIENT_EVENT_TYPES/);
  assert.equal(await p.textContent("#state"), "connected");

  mkdirSync(ARTIFACTS, { recursive: true });
  await p.screenshot({ path: path.join(ARTIFACTS, "demo.png"), fullPage: true });
  assert.deepEqual(errors, [], "no errors in the page");
  await p.close();
});

test("the demo page: two users in a room see each other online, and who is typing", async () => {
  const w = await startWorker({ bindings: { DEV_MODE: "true", CLIENT_EVENT_TYPES: "typing.*" } });
  workers.push(w);
  const room = `team_${Date.now().toString(36)}`;
  const open = async (sub) => {
    const { p, errors } = await demoPage(w);
    await p.waitForSelector('body[data-dev="on"]', { timeout: 10000 });
    await p.fill("#room", room);
    await p.fill("#sub", sub);
    await p.click("#mint");
    await p.waitForFunction(() => document.querySelector("#token").value.split(".").length === 3, null, { timeout: 5000 });
    await p.click("#connect");
    await p.waitForSelector('#state:text("connected")', { timeout: 10000 });
    return { p, errors };
  };
  const alice = await open("alice");
  const bob = await open("bob");
  for (const { p } of [alice, bob]) {
    await p.waitForSelector('body[data-online="2"]', { timeout: 5000 });
    assert.deepEqual(await p.$$eval("#online li", (lis) => lis.map((li) => li.dataset.user)), ["alice", "bob"]);
  }
  assert.match(await alice.p.textContent('#online li[data-user="alice"]'), /\(you\)/);

  // Bob types: alice sees it, next to his name and in the line under the box; bob does not see
  // himself typing.
  await bob.p.type("#say", "hello");
  await alice.p.waitForSelector('body[data-typing="bob"]', { timeout: 5000 });
  assert.equal(await alice.p.textContent("#typing-line"), "bob is typing…");
  assert.equal(await alice.p.isVisible('#online li[data-user="bob"] .typing'), true);
  assert.equal(await alice.p.isVisible('#online li[data-user="alice"] .typing'), false);
  assert.equal(await bob.p.textContent("#typing-line"), "");
  mkdirSync(ARTIFACTS, { recursive: true });
  await alice.p.screenshot({ path: path.join(ARTIFACTS, "demo-presence.png"), fullPage: true });
  // He pauses: typing.stop clears it.
  await alice.p.waitForSelector('body[data-typing=""]', { timeout: 5000 });

  // A progress update (ephemeral) shows live, without a seq, and never in the history.
  const r = await w.publish(room, { type: "upload.progress", data: { pct: 40 }, status: "pending", ephemeral: true });
  assert.equal(r.body.broadcastCount, 2);
  await alice.p.waitForSelector(`#live tr[data-ephemeral="${r.body.id}"]`, { timeout: 5000 });
  assert.match(await alice.p.textContent(`#live tr[data-ephemeral="${r.body.id}"]`), /upload\.progress.*ephemeral/);
  assert.equal((await w.history(room)).body.notifications.length, 0);

  // Bob leaves: alice sees one user online.
  await bob.p.click("#disconnect");
  await alice.p.waitForSelector('body[data-online="1"]', { timeout: 5000 });
  assert.deepEqual(await alice.p.$$eval("#online li", (lis) => lis.map((li) => li.dataset.user)), ["alice"]);
  for (const { p, errors } of [alice, bob]) {
    assert.deepEqual(errors, [], "no errors in the page");
    await p.close();
  }
});

test("without DEV_MODE the page has no mint button and no publish form", async () => {
  const w = await startWorker();
  workers.push(w);
  const { p, errors } = await demoPage(w);
  await p.waitForSelector('body[data-dev="off"]', { timeout: 10000 });
  assert.equal(await p.isVisible("#mint"), false);
  assert.equal(await p.isVisible("#publish-box"), false);
  assert.equal(await p.isVisible("#connect"), true);
  // The probe's 404 is the only failed request the console reports.
  assert.ok(errors.every((e) => /404/.test(e)), errors.join("\n"));
  await p.close();
});

// Refusals in a real browser: Chromium reports a refused upgrade only as close 1006, so the
// client must ask the server why. The page loads the repo's client/roomcast.js (the file the
// worker serves at that path once built) and counts every WebSocket it opens.

async function refusalPage(w) {
  const base = await relay(w, {
    "/client/roomcast.js": { file: CLIENT_JS, type: "text/javascript; charset=utf-8" },
    "/refusals.html": { body: "<!doctype html><title>refusals</title><link rel=\"icon\" href=\"data:,\">", type: "text/html; charset=utf-8" },
  });
  const { p, errors } = await page();
  await p.addInitScript(() => {
    const Native = window.WebSocket;
    window.__sockets = [];
    window.WebSocket = class extends Native {
      constructor(url, protocols) {
        super(url, protocols);
        window.__sockets.push(new URL(url).pathname);
      }
    };
  });
  const probes = [];
  p.on("request", (r) => {
    if (r.resourceType() === "fetch" && new URL(r.url()).pathname.endsWith("/subscribe")) probes.push(new URL(r.url()).pathname);
  });
  await p.goto(`${base}/refusals.html`);
  return { p, errors, probes };
}

/** Starts a RealtimeClient in the page; resolves with its first fatal error and how long it took. */
function startClient(p, args) {
  return p.evaluate(async ({ room, tokens }) => {
    const { RealtimeClient } = await import("/client/roomcast.js");
    const t0 = Date.now();
    let asked = 0;
    return new Promise((resolve) => {
      const client = new RealtimeClient({
        rooms: [room],
        // Each call hands out the next token (the last one again when they run out).
        getToken: () => tokens[Math.min(asked++, tokens.length - 1)],
        initialDelayMs: 100,
        maxDelayMs: 200,
      });
      window.__client = client;
      // A client that never gives up must fail the test, not hang it.
      setTimeout(() => resolve({ code: "none within 8 s", state: client.state, asked }), 8000);
      client.on("error", (e) => {
        if (!e.fatal) return;
        resolve({ code: e.code, roomId: e.roomId, status: e.status, message: e.message, ms: Date.now() - t0, asked, state: client.state });
      });
    });
  }, args);
}

test("in Chromium, a wrong token and a forbidden room each end in the fatal error, with no further attempts", async () => {
  const w = await startWorker();
  workers.push(w);
  const { p, errors, probes } = await refusalPage(w);
  const u = `c${Date.now().toString(36)}`;
  const sockets = (room) => p.evaluate((r) => window.__sockets.filter((s) => s === `/rooms/${r}/subscribe`).length, room);

  // Wrong tokens (signed with another secret): one fresh getToken, then `unauthorized`.
  const mine = `user_${u}`;
  const wrong = (i) => signHs256({ sub: u, exp: Math.floor(Date.now() / 1000) + 3600, i }, "not-the-server-secret-0123456789abcdef");
  const unauthorized = await startClient(p, { room: mine, tokens: [wrong(1), wrong(2)] });
  assert.equal(unauthorized.code, "unauthorized");
  assert.equal(unauthorized.roomId, mine);
  assert.equal(unauthorized.status, 401);
  assert.match(unauthorized.message, new RegExp(`^room ${mine}: the server refused the token \\(401 unauthorized`));
  assert.equal(unauthorized.state, "error");
  assert.equal(unauthorized.asked, 2);
  assert.ok(unauthorized.ms < 5000, `took ${unauthorized.ms} ms`);
  assert.equal(await sockets(mine), 2);
  assert.equal(probes.length, 2, "one probe per refused socket");

  // A room the (valid) token may not enter: `forbidden` at once.
  const theirs = `request_${u}-not-mine`;
  const forbidden = await startClient(p, { room: theirs, tokens: [tokenFor(u)] });
  assert.equal(forbidden.code, "forbidden");
  assert.equal(forbidden.roomId, theirs);
  assert.equal(forbidden.status, 403);
  assert.match(forbidden.message, new RegExp(`^room ${theirs}: not allowed in this room \\(403 forbidden`));
  assert.ok(forbidden.ms < 5000, `took ${forbidden.ms} ms`);
  assert.equal(await sockets(theirs), 1);
  assert.equal(probes.length, 3);

  // Many backoff periods later, nothing more was attempted.
  await p.waitForTimeout(1500);
  assert.deepEqual([await sockets(mine), await sockets(theirs), probes.length], [2, 1, 3]);
  for (const room of [mine, theirs]) {
    const h = await w.request("GET", `/rooms/${room}/health`, { headers: { authorization: `Bearer ${API_KEY}` } });
    assert.equal(h.body.connections, 0);
  }
  assert.deepEqual(errors.filter((e) => !/status of 40[13]|WebSocket/.test(e)), [], "no page errors");
  await p.close();
});

// An app built around a provider, in Chromium: tests/fixtures/react-provider-page/app.mjs
// (RealtimeProvider with userId and rooms, a component calling useRealtime() with no options),
// bundled with React by esbuild (installed with wrangler, as bench/ uses it) and served next to the
// worker by the relay.
async function providerPage(w) {
  const { build } = await import("esbuild");
  const bundle = await build({
    entryPoints: [path.join(ROOT, "tests/fixtures/react-provider-page/app.mjs")],
    bundle: true,
    format: "esm",
    write: false,
    logLevel: "silent",
    define: { "process.env.NODE_ENV": '"development"' },
  });
  const base = await relay(w, {
    "/app.js": { body: bundle.outputFiles[0].text, type: "text/javascript; charset=utf-8" },
    "/app.html": {
      body: "<!doctype html><title>provider</title><link rel=\"icon\" href=\"data:,\"><div id=\"app\"></div><script type=\"module\" src=\"/app.js\"></script>",
      type: "text/html; charset=utf-8",
    },
  });
  const { p, errors } = await page();
  await p.goto(`${base}/app.html`);
  await p.waitForFunction(() => typeof window.startApp === "function", null, { timeout: 10000 });
  return { p, errors };
}

test("in Chromium, useRealtime() under a provider: subscribe gets its rooms' notifications and events, emit reaches others", async () => {
  const w = await startWorker({ bindings: { CLIENT_EVENT_TYPES: "typing.*" } });
  workers.push(w);
  const u = `pv${Date.now().toString(36)}`;
  const team = `team_${u}`;
  const { p, errors } = await providerPage(w);
  await p.evaluate((props) => window.startApp(props), { userId: u, rooms: [team], token: tokenFor(u, { rooms: [team] }) });
  await p.waitForSelector('#status[data-connected="true"]', { timeout: 10000 });
  assert.equal(await p.textContent("#status"), "connected");
  assert.equal(await p.textContent("#attempt"), "0");

  // Notifications of both provider rooms, in order, each once.
  await w.publish(`user_${u}`, { type: "approval.created" });
  await w.publish(team, { type: "agent.run.started" });
  await p.waitForFunction(() => document.querySelectorAll("#items li").length === 2, null, { timeout: 5000 });
  assert.deepEqual(await p.$$eval("#items li", (lis) => lis.map((li) => li.textContent)),
    [`notification:approval.created@user_${u}`, `notification:agent.run.started@${team}`]);

  // Another user in the team room: the page's emit reaches them, theirs reaches the page.
  const bob = await w.connect(team, { token: tokenFor("bob", { rooms: [team] }) });
  await p.click("#emit");
  assert.equal(await p.evaluate(() => window.__emitted), true);
  const heard = await bob.until((f) => f.type === "event");
  assert.deepEqual([heard.event, heard.userId, heard.data], ["typing.start", u, { field: "title" }]);
  bob.send({ type: "emit", event: "typing.stop" });
  await p.waitForFunction(() => document.querySelectorAll("#items li").length === 3, null, { timeout: 5000 });
  assert.equal(await p.textContent("#items li:nth-child(3)"), `event:typing.stop:bob@${team}`);
  // One socket per room: StrictMode's double mount left none behind.
  for (const room of [team, `user_${u}`]) {
    const h = await w.request("GET", `/rooms/${room}/health`, { headers: { authorization: `Bearer ${API_KEY}` } });
    assert.equal(h.body.connections, room === team ? 2 : 1, room);
  }
  assert.deepEqual(errors, [], "no errors in the page");
  await p.close();
});
