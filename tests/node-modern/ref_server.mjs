#!/usr/bin/env node
// Reference MCP server (TypeScript SDK v2: @modelcontextprotocol/server 2.4.0 + @modelcontextprotocol/node
// 2.1.2, Streamable HTTP) for Berth's modern-client tests.
//
//   node tests/node-modern/ref_server.mjs [--host 127.0.0.1] [--port 8766] [--legacy stateless|reject]
//
// Serves http://HOST:PORT/mcp through createMcpHandler: 2026-07-28 (stateless, per-request `_meta`
// envelope, server/discover, subscriptions/listen) and, unless --legacy reject, the 2025 era via the
// SDK's stateless legacy fallback. Prints `READY http://HOST:PORT/mcp` on stdout once listening.
//
// Same tools (and the same behaviour the client scripts expect) as tests/python-modern/ref_server.py:
//   echo(message)            -> text `message`
//   add(a, b)                -> text of a+b ("5" for 2+3)
//   slow(seconds=5)          -> sleeps, sending notifications/progress every 100 ms (progress=i,
//                               total=10*seconds) when the request carries a progressToken; stops as soon
//                               as the request is cancelled (the client closed the response stream)
//   trigger_tools_changed()  -> publishes notifications/tools/list_changed to every open
//                               subscriptions/listen stream that asked for toolsListChanged
//   stats()                  -> JSON counters {"slow_cancelled","slow_completed","slow_started"}
import http from 'node:http';
import { parseArgs } from 'node:util';
import { McpServer, createMcpHandler } from '@modelcontextprotocol/server';
import { toNodeHandler } from '@modelcontextprotocol/node';
import * as z from 'zod';

const { values: opt } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '8766' },
    legacy: { type: 'string', default: 'stateless' },
  },
});

const stats = { slow_cancelled: 0, slow_completed: 0, slow_started: 0 };
const text = (t) => ({ content: [{ type: 'text', text: String(t) }] });
const num = (x) => String(x); // JS prints 2+3 as "5"
let handler; // assigned below; trigger_tools_changed publishes through it

// One factory for both eras; createMcpHandler calls it once per HTTP request (stateless).
function factory() {
  const server = new McpServer(
    { name: 'berth-ref-node', version: '1.0.0' },
    { capabilities: { tools: { listChanged: true } } },
  );
  server.registerTool(
    'echo',
    { description: 'Echo back the message', inputSchema: z.object({ message: z.string() }) },
    async ({ message }) => text(message),
  );
  server.registerTool(
    'add',
    { description: 'Add two numbers', inputSchema: z.object({ a: z.number(), b: z.number() }) },
    async ({ a, b }) => text(num(a + b)),
  );
  server.registerTool(
    'slow',
    {
      description: 'Sleep for `seconds`, reporting progress every 100 ms; cancellable',
      inputSchema: z.object({ seconds: z.number().default(5) }),
    },
    async ({ seconds }, ctx) => {
      const steps = Math.max(1, Math.round(seconds * 10));
      const token = ctx.mcpReq._meta?.progressToken;
      const signal = ctx.mcpReq.signal;
      stats.slow_started++;
      for (let i = 1; i <= steps; i++) {
        const aborted = await new Promise((resolve) => {
          if (signal.aborted) return resolve(true);
          const timer = setTimeout(() => {
            signal.removeEventListener('abort', onAbort);
            resolve(false);
          }, 100);
          const onAbort = () => {
            clearTimeout(timer);
            resolve(true);
          };
          signal.addEventListener('abort', onAbort, { once: true });
        });
        if (aborted) {
          stats.slow_cancelled++;
          console.error(`[ref_server.mjs] slow(${seconds}) cancelled`);
          throw new Error('cancelled');
        }
        if (token !== undefined) {
          await ctx.mcpReq.notify({
            method: 'notifications/progress',
            params: { progressToken: token, progress: i, total: steps, message: `step ${i}/${steps}` },
          });
        }
      }
      stats.slow_completed++;
      return text(`slept ${num(seconds)}s`);
    },
  );
  server.registerTool(
    'trigger_tools_changed',
    { description: 'Make the server send notifications/tools/list_changed to listen subscribers' },
    async () => {
      handler.notify.toolsChanged();
      return text('tools/list_changed sent');
    },
  );
  server.registerTool('stats', { description: 'Counters of slow() calls started/completed/cancelled' }, async () =>
    text(JSON.stringify(stats)),
  );
  return server;
}

handler = createMcpHandler(factory, {
  legacy: opt.legacy === 'reject' ? 'reject' : 'stateless',
  onerror: (e) => {
    if (process.env.REF_SERVER_DEBUG) console.error('[ref_server.mjs] onerror:', e);
  },
});
const nodeHandler = toNodeHandler(handler);

const httpServer = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path !== '/mcp') {
    res.writeHead(404).end('not found');
    return;
  }
  nodeHandler(req, res);
});
httpServer.listen(Number(opt.port), opt.host, () => {
  console.log(`READY http://${opt.host}:${opt.port}/mcp`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    await handler.close();
    httpServer.close();
    process.exit(0);
  });
}
