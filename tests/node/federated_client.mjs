#!/usr/bin/env node
// Plan-driven MCP client (official TypeScript SDK) for Berth's federated-endpoint tests.
//
// Usage: node federated_client.mjs URL PLAN_JSON
//
//   URL        a Streamable HTTP endpoint, e.g. http://127.0.0.1:18900/mcp/work
//   PLAN_JSON  {"expect_tools": [names that tools/list must contain],
//               "calls": [{"tool": NAME, "args": {...}, "expect": SUBSTRING}],
//               "sampling": {"tool": NAME, "args": {...}, "expect": SUBSTRING},  (optional)
//               "headers": {"Name": "value"}}                                   (optional)
//
// Connects, initializes (declaring sampling: sampling/createMessage is answered
// with the text berth-sampling-reply-7f3a), lists every page of tools, checks
// expect_tools, makes each call in order (a result must not be isError and its
// first text content must contain "expect"), then the sampling call, and closes
// the session with DELETE (which must answer 2xx).
//
// Prints exactly one JSON line on stdout:
//   {"ok": true, "client": ..., "tools": [...], "results": [first text of each call],
//    "sampling": first text of the sampling call (only when the plan has one)}   exit 0
//   {"ok": false, "step": ..., "error": ...}                                     exit 1
// (exit 2 with the same failure line for a bad command line or plan).
//
// Environment: BERTH_E2E_TIMEOUT_MS, the hard overall deadline (default 60000).

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { readFileSync } from "node:fs";
import { deletes, recordingFetch } from "./recording_fetch.mjs";

const SAMPLING_TEXT = "berth-sampling-reply-7f3a";
const DEADLINE_MS = Number(process.env.BERTH_E2E_TIMEOUT_MS || 60_000);
const SDK_VERSION = JSON.parse(
  readFileSync(new URL("./node_modules/@modelcontextprotocol/sdk/package.json", import.meta.url), "utf8"),
).version;
const CLIENT = `@modelcontextprotocol/sdk ${SDK_VERSION}`;

let step = "startup";
let printed = false;
const transportErrors = [];

class StepError extends Error {}

// Prints the one JSON line and exits; a second attempt (e.g. the watchdog's) is dropped.
function finish(line, code) {
  if (printed) return;
  printed = true;
  process.stdout.write(`${JSON.stringify(line)}\n`, () => process.exit(code));
}

function fail(error, code = 1) {
  finish({ ok: false, step, error }, code);
}

function assert(cond, message) {
  if (!cond) throw new StepError(message);
}

function short(s, n = 300) {
  s = String(s).replace(/\s+/g, " ").trim();
  return s.length <= n ? s : `${s.slice(0, n)}…`;
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function loadPlan(raw) {
  let plan;
  try {
    plan = JSON.parse(raw);
  } catch (e) {
    throw new StepError(`PLAN_JSON is not JSON: ${e.message}`);
  }
  assert(isObject(plan), "PLAN_JSON must be an object");
  assert(Array.isArray(plan.expect_tools ?? []), "expect_tools must be a list");
  assert(Array.isArray(plan.calls ?? []), "calls must be a list");
  for (const c of [...(plan.calls ?? []), ...(plan.sampling ? [plan.sampling] : [])]) {
    assert(isObject(c) && typeof c.tool === "string", `each call needs a tool name: ${JSON.stringify(c)}`);
    assert(isObject(c.args ?? {}), `args of ${c.tool} must be an object`);
  }
  assert(isObject(plan.headers ?? {}), "headers must be an object");
  return plan;
}

async function call(client, c, timeout) {
  const r = await client.callTool({ name: c.tool, arguments: c.args ?? {} }, undefined, { timeout });
  assert(Array.isArray(r?.content), `${c.tool}: result has no content array: ${short(JSON.stringify(r))}`);
  const text = r.content.find((x) => x.type === "text")?.text;
  assert(!r.isError, `${c.tool} returned isError: ${short(text ?? JSON.stringify(r.content))}`);
  assert(typeof text === "string", `${c.tool} returned no text content: ${short(JSON.stringify(r.content))}`);
  if (c.expect !== undefined && c.expect !== null) {
    assert(text.includes(c.expect), `${c.tool}: first text lacks ${JSON.stringify(c.expect)}: ${short(text)}`);
  }
  return text;
}

async function run(url, plan, started) {
  const remaining = () => Math.max(1, DEADLINE_MS - (Date.now() - started));
  const headers = Object.fromEntries(Object.entries(plan.headers ?? {}).map(([k, v]) => [k, String(v)]));
  let samplingRequests = 0;

  const client = new Client({ name: "berth-federated-node", version: "0.1.0" }, { capabilities: { sampling: {} } });
  client.onerror = (e) => transportErrors.push(String(e?.message || e));
  client.setRequestHandler(CreateMessageRequestSchema, async () => {
    samplingRequests++;
    return {
      role: "assistant",
      content: { type: "text", text: SAMPLING_TEXT },
      model: "berth-e2e-model",
      stopReason: "endTurn",
    };
  });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    fetch: recordingFetch,
    requestInit: { headers },
  });

  step = "connect";
  await client.connect(transport, { timeout: remaining() });
  const sessionId = transport.sessionId;
  assert(sessionId, "server assigned no Mcp-Session-Id on initialize");

  step = "list-tools";
  const tools = [];
  const seen = new Set();
  let cursor;
  for (;;) {
    const page = await client.listTools(cursor ? { cursor } : {}, { timeout: remaining() });
    tools.push(...page.tools.map((t) => t.name));
    cursor = page.nextCursor;
    if (!cursor) break;
    assert(!seen.has(cursor), `tools/list repeated cursor ${JSON.stringify(cursor)}`);
    seen.add(cursor);
  }
  const out = { ok: true, client: CLIENT, tools, results: [] };

  step = "expect-tools";
  const missing = (plan.expect_tools ?? []).filter((t) => !tools.includes(t));
  assert(missing.length === 0, `tools/list lacks ${JSON.stringify(missing)}; it has ${JSON.stringify(tools)}`);

  for (const c of plan.calls ?? []) {
    step = `call ${c.tool}`;
    out.results.push(await call(client, c, remaining()));
  }

  if (plan.sampling) {
    step = `sampling ${plan.sampling.tool}`;
    out.sampling = await call(client, plan.sampling, remaining());
    assert(samplingRequests >= 1, "the client never received sampling/createMessage");
  }

  step = "close";
  await transport.terminateSession();
  const del = deletes.find((d) => d.sessionId === sessionId);
  assert(del, "terminateSession() sent no DELETE carrying the session id");
  assert(del.status >= 200 && del.status < 300, `DELETE answered HTTP ${del.status} (expected 2xx)`);
  await client.close();
  return out;
}

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 2) {
    step = "usage";
    return fail("usage: node federated_client.mjs URL PLAN_JSON", 2);
  }
  let plan;
  try {
    plan = loadPlan(args[1]);
  } catch (e) {
    step = "plan";
    return fail(e.message, 2);
  }
  const started = Date.now();
  // Not unref'd: it also keeps the process alive until a result line is printed
  // (finish() exits, so it never delays a finished run).
  setTimeout(() => fail(`timed out after ${DEADLINE_MS} ms (BERTH_E2E_TIMEOUT_MS)`), DEADLINE_MS);
  try {
    finish(await run(args[0], plan, started), 0);
  } catch (e) {
    let msg = e instanceof StepError ? e.message : `${e?.name || "Error"}: ${e?.message ?? e}`;
    if (e?.cause) msg += ` (cause: ${e.cause.code || ""} ${e.cause.message || e.cause})`;
    if (transportErrors.length) msg += ` [transport errors: ${transportErrors.join("; ")}]`;
    fail(msg.trim());
  }
}

await main();
