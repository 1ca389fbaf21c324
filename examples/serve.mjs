#!/usr/bin/env node
// Serves the example functions (examples/functions.mjs) to Inngest at http://127.0.0.1:3000/api/inngest.
//
//   ROOMCAST_URL=http://127.0.0.1:8787 ROOMCAST_API_KEY=dev-key INNGEST_DEV=1 node examples/serve.mjs
//   npx inngest-cli@latest dev -u http://127.0.0.1:3000/api/inngest    # Inngest's dev server
//
// Then send an event from the dev server's UI (http://127.0.0.1:8288), e.g.
// {"name":"app/note.create.requested","data":{"userId":"demo","requestId":"req-1","title":"My Note"}},
// and watch it arrive on roomcast's demo page (room user_demo). PORT changes the port.
import { serve } from "inngest/node";
import http from "node:http";
import { inngest, createFunctions } from "./functions.mjs";

const handler = serve({ client: inngest, functions: Object.values(createFunctions()) });
const port = Number(process.env.PORT ?? 3000);
const server = http.createServer((req, res) => {
  if (req.url?.startsWith("/api/inngest")) return handler(req, res);
  res.writeHead(404, { "content-type": "text/plain" }).end("see /api/inngest\n");
});
server.listen(port, "127.0.0.1", () => console.log(`Inngest functions at http://127.0.0.1:${port}/api/inngest`));
