#!/usr/bin/env node
// Modern-era (MCP 2026-07-28) client driver for Berth's e2e tests: the official TypeScript SDK v2
// client, @modelcontextprotocol/client 2.4.0, over Streamable HTTP.
//
// Usage:
//   node tests/node-modern/client.mjs [--negotiation auto|pinned] [--expect-version V] [--timeout S] URL MODE [JSON]
//
//   URL            Streamable HTTP endpoint, e.g. http://127.0.0.1:PORT/mcp/<server-name>
//   --negotiation  auto   (default) versionNegotiation {mode: 'auto'}: connect() probes `server/discover`
//                         first and falls back to the 2025 `initialize` handshake on a legacy answer.
//                  pinned versionNegotiation {mode: {pin: '2026-07-28'}}: connect() still sends
//                         `server/discover`, which must offer 2026-07-28; no fallback, fails loudly.
//   --expect-version V    fail unless the negotiated protocol version is exactly V (e.g. 2026-07-28)
//   --timeout S    hard deadline for the whole MODE (default 60 s); hitting it is a failure, never a hang
//
// MODEs (JSON is an optional object; defaults fit tests/node-modern/ref_server.mjs and
// tests/python-modern/ref_server.py):
//   era       connect only; report the negotiated version/era (scenario e).                JSON unused
//   call      list tools, check TOOL is listed, call it, print the result text (scenario a).
//             JSON {"tool": "echo", "args": {"message": "hello"}, "expect": null}
//             "expect": if given, the result text must equal it.
//   progress  call TOOL with an onprogress callback; count notifications/progress (scenario b).
//             JSON {"tool": "slow", "args": {"seconds": 1}, "min": 1}   fails if fewer than "min" arrived
//   cancel    start TOOL, abort it (AbortController) once "after" seconds passed or the first progress
//             arrived, whichever is first; check the call settled within "within" seconds; then make
//             one more request (tools/list) to show the client is still usable (scenario c).
//             JSON {"tool": "slow", "args": {"seconds": 30}, "after": 0.5, "within": 5,
//                   "stats_tool": null, "stats_delay": 0.5}
//             "stats_tool": a tool to call afterwards (e.g. "stats" on the ref servers); its text is
//             reported as "stats" so a test can check the server saw the cancellation.
//   listen    client.listen({toolsListChanged: true}) (subscriptions/listen), call TRIGGER, wait for
//             notifications/tools/list_changed on the listen stream (scenario d).
//             JSON {"trigger": "trigger_tools_changed", "args": {}, "wait": 10}
//   all       era, call echo, call add(2,3)=="5", progress, cancel (with stats_tool "stats"), listen,
//             against a ref server. Prints {"ok": true, "results": {step: summary, ...}}.
//
// Output: ONE JSON line on stdout. Success: {"ok": true, "client": "ts-client-2.4.0", "negotiation",
// "mode", "protocolVersion", "era": "modern"|"legacy", ...mode fields}; exit 0.
// Failure: {"ok": false, "mode", "error"} on stdout, "client.mjs: FAIL <mode>: <why>" on stderr; exit 1.
// (exit 2: bad command line.)
// Mode fields: call -> tools, tool, text, isError; progress -> progress_notifications, last_progress,
// text; cancel -> result: "cancelled", cancel_ms, error, progress_before_cancel, after_cancel_tools,
// stats; listen -> honored, notification, received, ms; era -> discover, serverInfo, supportedVersions.
import { parseArgs } from 'node:util';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const PIN = '2026-07-28';
const CLIENT_ID = 'ts-client-2.4.0';
const MODES = ['era', 'call', 'progress', 'cancel', 'listen', 'all'];

class Fail extends Error {}

const textOf = (r) =>
  (r.content ?? [])
    .filter((c) => c.type === 'text')
    .map((c) => c.text)
    .join('');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Fail(what)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
const describe = (e) => {
  if (e instanceof Fail) return e.message;
  const code = e?.code !== undefined ? ` (code ${e.code})` : '';
  return `${e?.name ?? 'Error'}: ${e?.message ?? String(e)}${code}`;
};

async function modeEra(client, negotiation) {
  const d = client.getDiscoverResult();
  const info = client.getServerVersion();
  return {
    discover: d ? `at connect (${negotiation})` : 'none (legacy initialize)',
    serverInfo: info ?? null,
    supportedVersions: d?.supportedVersions ?? null,
  };
}

async function modeCall(client, cfg) {
  const tool = cfg.tool ?? 'echo';
  const args = cfg.args ?? (tool === 'echo' ? { message: 'hello' } : {});
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  if (!names.includes(tool)) throw new Fail(`tool ${JSON.stringify(tool)} not in tools/list: ${JSON.stringify(names)}`);
  const r = await client.callTool({ name: tool, arguments: args });
  const text = textOf(r);
  if (r.isError) throw new Fail(`tools/call ${tool} returned isError: ${JSON.stringify(text)}`);
  if (cfg.expect !== undefined && cfg.expect !== null && text !== String(cfg.expect)) {
    throw new Fail(`tools/call ${tool} returned ${JSON.stringify(text)}, expected ${JSON.stringify(cfg.expect)}`);
  }
  return { tools: names, tool, text, isError: Boolean(r.isError) };
}

async function modeProgress(client, cfg) {
  const tool = cfg.tool ?? 'slow';
  const args = cfg.args ?? { seconds: 1 };
  const min = Number(cfg.min ?? 1);
  const seen = [];
  const r = await client.callTool({ name: tool, arguments: args }, { onprogress: (p) => seen.push(p) });
  const text = textOf(r);
  if (r.isError) throw new Fail(`tools/call ${tool} returned isError: ${JSON.stringify(text)}`);
  if (seen.length < min) throw new Fail(`only ${seen.length} progress notifications arrived (want >= ${min})`);
  const last = seen.at(-1);
  return {
    tool,
    progress_notifications: seen.length,
    last_progress: last ? { progress: last.progress, total: last.total ?? null, message: last.message ?? null } : null,
    text,
  };
}

async function modeCancel(client, cfg) {
  const tool = cfg.tool ?? 'slow';
  const args = cfg.args ?? { seconds: 30 };
  const after = Number(cfg.after ?? 0.5);
  const within = Number(cfg.within ?? 5);
  const ac = new AbortController();
  let progressCount = 0;
  let firstProgress;
  const gotProgress = new Promise((r) => (firstProgress = r));
  const outcome = {};
  const call = client
    .callTool({ name: tool, arguments: args }, { signal: ac.signal, onprogress: () => (progressCount++, firstProgress()) })
    .then(
      (r) => (outcome.completed = textOf(r)),
      (e) => (outcome.error = describe(e)),
    );
  await Promise.race([gotProgress, sleep(after * 1000), call]);
  if ('completed' in outcome || 'error' in outcome) {
    throw new Fail(`the call ended before it could be cancelled: ${JSON.stringify(outcome)}`);
  }
  const t0 = performance.now();
  ac.abort(new Error('cancelled by client.mjs'));
  await withTimeout(call, within * 1000, `the aborted call did not settle within ${within} s: the client hung`);
  const cancelMs = Math.round(performance.now() - t0);
  if ('completed' in outcome) throw new Fail(`the call completed despite the abort: ${outcome.completed}`);
  // The client must still be usable after a cancelled request.
  const { tools } = await withTimeout(
    client.listTools(undefined, { cacheMode: 'bypass' }),
    within * 1000,
    `tools/list after the cancel did not answer within ${within} s`,
  );
  const res = {
    result: 'cancelled',
    tool,
    cancel_ms: cancelMs,
    error: outcome.error,
    progress_before_cancel: progressCount,
    after_cancel_tools: tools.length,
    stats: null,
  };
  if (cfg.stats_tool) {
    await sleep(Number(cfg.stats_delay ?? 0.5) * 1000);
    res.stats = textOf(await client.callTool({ name: cfg.stats_tool, arguments: {} }));
  }
  return res;
}

async function modeListen(client, cfg) {
  const trigger = cfg.trigger ?? 'trigger_tools_changed';
  const args = cfg.args ?? {};
  const wait = Number(cfg.wait ?? 10);
  let notified;
  const arrived = new Promise((r) => (notified = r));
  // listen() delivers the stream's change notifications to the ordinary notification handlers.
  client.setNotificationHandler('notifications/tools/list_changed', (n) => notified(n));
  const sub = await client.listen({ toolsListChanged: true });
  try {
    const honored = sub.honoredFilter;
    if (!honored?.toolsListChanged) throw new Fail(`server did not honor toolsListChanged: honored=${JSON.stringify(honored)}`);
    const t0 = performance.now();
    const r = await client.callTool({ name: trigger, arguments: args });
    if (r.isError) throw new Fail(`trigger tool ${trigger} returned isError: ${JSON.stringify(textOf(r))}`);
    const ended = sub.closed.then((how) => {
      throw new Fail(`the listen stream ended (${how}) before notifications/tools/list_changed arrived`);
    });
    await withTimeout(
      Promise.race([arrived, ended]),
      wait * 1000,
      `no notifications/tools/list_changed on the listen stream within ${wait} s`,
    );
    return {
      honored,
      trigger,
      notification: 'notifications/tools/list_changed',
      received: true,
      ms: Math.round(performance.now() - t0),
    };
  } finally {
    await sub.close();
  }
}

const RUN = { era: modeEra, call: modeCall, progress: modeProgress, cancel: modeCancel, listen: modeListen };
const ALL_STEPS = [
  ['era', 'era', {}],
  ['call_echo', 'call', { tool: 'echo', args: { message: 'hello' }, expect: 'hello' }],
  ['call_add', 'call', { tool: 'add', args: { a: 2, b: 3 }, expect: '5' }],
  ['progress', 'progress', { tool: 'slow', args: { seconds: 1 }, min: 5 }],
  ['cancel', 'cancel', { tool: 'slow', args: { seconds: 30 }, stats_tool: 'stats' }],
  ['listen', 'listen', {}],
];

async function run(url, negotiation, mode, cfg, expectVersion) {
  const client = new Client(
    { name: 'berth-e2e-node-modern', version: CLIENT_ID },
    { versionNegotiation: { mode: negotiation === 'auto' ? 'auto' : { pin: PIN } } },
  );
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport);
  try {
    const version = client.getNegotiatedProtocolVersion();
    const head = {
      ok: true,
      client: CLIENT_ID,
      negotiation,
      mode,
      protocolVersion: version ?? null,
      era: client.getProtocolEra() ?? null,
    };
    if (expectVersion && version !== expectVersion) {
      throw new Fail(`negotiated protocol version ${JSON.stringify(version)}, expected ${JSON.stringify(expectVersion)}`);
    }
    if (mode === 'all') {
      const results = {};
      for (const [name, m, c] of ALL_STEPS) {
        try {
          results[name] = await RUN[m](client, m === 'era' ? negotiation : c);
        } catch (e) {
          throw new Fail(`step ${name}: ${describe(e)}`);
        }
      }
      return { ...head, results };
    }
    return { ...head, ...(await RUN[mode](client, mode === 'era' ? negotiation : cfg)) };
  } finally {
    await client.close().catch(() => {});
  }
}

function usage(msg) {
  console.error(`client.mjs: ${msg}\nusage: client.mjs [--negotiation auto|pinned] [--expect-version V] [--timeout S] URL MODE [JSON]`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      negotiation: { type: 'string', default: 'auto' },
      'expect-version': { type: 'string' },
      timeout: { type: 'string', default: '60' },
    },
  });
} catch (e) {
  usage(e.message);
}
const { values: opt, positionals } = parsed;
const [url, mode, json = '{}'] = positionals;
if (!url || !mode) usage('URL and MODE are required');
if (!MODES.includes(mode)) usage(`MODE must be one of ${MODES.join(', ')}`);
if (!['auto', 'pinned'].includes(opt.negotiation)) usage('--negotiation must be auto or pinned');
let cfg;
try {
  cfg = JSON.parse(json);
  if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) throw new Error('not an object');
} catch (e) {
  usage(`JSON argument must be an object: ${e.message}`);
}

function fail(why) {
  console.log(JSON.stringify({ ok: false, client: CLIENT_ID, negotiation: opt.negotiation, mode, error: why }));
  console.error(`client.mjs: FAIL ${mode} (${opt.negotiation}) against ${url}: ${why}`);
  process.exit(1);
}

const timeoutS = Number(opt.timeout);
if (timeoutS > 0) {
  setTimeout(() => fail(`mode did not finish within ${timeoutS} s`), timeoutS * 1000).unref();
}
try {
  const out = await run(url, opt.negotiation, mode, cfg, opt['expect-version']);
  console.log(JSON.stringify(out));
  process.exit(0);
} catch (e) {
  fail(describe(e));
}
