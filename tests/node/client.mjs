#!/usr/bin/env node
// End-to-end MCP client used by Berth's integration tests.
//
// Usage: node client.mjs URL MODE
//
//   MODE everything  URL is a Streamable HTTP endpoint (…/mcp/<name>) serving
//                    @modelcontextprotocol/server-everything.
//   MODE memory      URL is a Streamable HTTP endpoint serving
//                    @modelcontextprotocol/server-memory.
//   MODE sse         URL is a legacy HTTP+SSE endpoint (…/sse/<name>) serving
//                    @modelcontextprotocol/server-everything.
//
// Prints one "ok <step>: <detail>" line per completed step on stdout and exits 0
// on success; on failure prints "FAIL <step>: <reason>" on stderr and exits 1.
//
// Environment:
//   BERTH_E2E_TIMEOUT_MS  overall deadline for the whole script (default 55000)
//   BERTH_E2E_STRICT=1    require HTTP 404 (not just 400/404) for requests that
//                         reuse a terminated session id, as the MCP spec says.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { randomUUID } from "node:crypto";
import { deletes, recordingFetch } from "./recording_fetch.mjs";

const SAMPLING_TEXT = "berth-sampling-reply-7f3a";
const ELICIT_NAME = "Berth Tester";
const REQUEST_TIMEOUT_MS = 20_000;
const OVERALL_TIMEOUT_MS = Number(process.env.BERTH_E2E_TIMEOUT_MS || 55_000);
const STRICT = process.env.BERTH_E2E_STRICT === "1";

// Tool names differ across server-everything releases; the first one the
// server lists wins. The pinned release (2026.8.31) uses the kebab-case names.
const TOOL_CANDIDATES = {
  echo: ["echo"],
  progress: ["trigger-long-running-operation", "longRunningOperation"],
  sampling: ["trigger-sampling-request", "sampleLLM"],
  elicitation: ["trigger-elicitation-request", "startElicitation"],
};

let currentStep = "startup";
const transportErrors = [];

class StepError extends Error {}

function ok(step, detail = "") {
  console.log(`ok ${step}${detail ? `: ${detail}` : ""}`);
}

function assert(cond, message) {
  if (!cond) throw new StepError(message);
}

async function step(name, fn) {
  currentStep = name;
  const detail = await fn();
  ok(name, detail);
}

function texts(content) {
  return (content || [])
    .filter((c) => c && c.type === "text")
    .map((c) => c.text)
    .join("\n");
}

function short(s, n = 120) {
  s = String(s).replace(/\s+/g, " ").trim();
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

function pickTool(tools, key) {
  const names = new Set(tools.map((t) => t.name));
  const found = TOOL_CANDIDATES[key].find((n) => names.has(n));
  assert(
    found,
    `no ${key} tool: expected one of [${TOOL_CANDIDATES[key].join(", ")}] ` +
      `in tools/list, got [${[...names].join(", ")}]`,
  );
  return found;
}

function checkToolResult(result, what) {
  assert(result && Array.isArray(result.content), `${what}: result has no content array: ${short(JSON.stringify(result), 300)}`);
  assert(!result.isError, `${what}: tool returned isError: ${short(texts(result.content), 300)}`);
  return texts(result.content);
}

// Fill an elicitation form schema (flat object of primitive properties) with
// values that satisfy it, preferring declared defaults.
function fillElicitationSchema(schema) {
  const content = {};
  for (const [key, prop] of Object.entries(schema?.properties || {})) {
    let value;
    if (key === "name") value = ELICIT_NAME;
    else if (prop.default !== undefined) value = prop.default;
    else if (prop.type === "boolean") value = true;
    else if (prop.type === "integer") value = Math.ceil(prop.minimum ?? 1);
    else if (prop.type === "number") value = prop.minimum ?? 1;
    else if (prop.type === "array") {
      const items = prop.items || {};
      const first = items.enum?.[0] ?? items.anyOf?.[0]?.const ?? items.oneOf?.[0]?.const;
      value = first !== undefined ? [first] : [];
    } else if (Array.isArray(prop.enum)) value = prop.enum[0];
    else if (Array.isArray(prop.oneOf)) value = prop.oneOf[0].const;
    else if (Array.isArray(prop.anyOf)) value = prop.anyOf[0].const;
    else if (prop.format === "email") value = "berth@example.com";
    else if (prop.format === "uri") value = "https://example.com/berth";
    else if (prop.format === "date") value = "2000-01-01";
    else if (prop.format === "date-time") value = "2000-01-01T00:00:00Z";
    else value = ELICIT_NAME;
    content[key] = value;
  }
  return content;
}

function makeClient({ sampling, elicitation }) {
  const capabilities = {};
  if (sampling) capabilities.sampling = {};
  if (elicitation) capabilities.elicitation = {};
  const client = new Client({ name: "berth-e2e-node", version: "0.1.0" }, { capabilities });
  client.onerror = (e) => transportErrors.push(String(e?.message || e));
  return client;
}

async function connectStreamable(url, caps) {
  const client = makeClient(caps);
  const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: recordingFetch });
  await step("connect", async () => {
    await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
    const info = client.getServerVersion();
    assert(transport.sessionId, "server did not assign an Mcp-Session-Id on initialize");
    return `server=${info?.name}@${info?.version} protocol=${transport.protocolVersion} session=${transport.sessionId}`;
  });
  return { client, transport };
}

async function terminate(url, client, transport) {
  let sessionId;
  await step("terminate-session", async () => {
    sessionId = transport.sessionId;
    assert(sessionId, "no session id to terminate");
    await transport.terminateSession();
    const del = deletes.find((d) => d.sessionId === sessionId);
    assert(del, "terminateSession() sent no DELETE carrying the session id");
    assert(del.status >= 200 && del.status < 300, `DELETE returned HTTP ${del.status} (expected 2xx)`);
    return `DELETE ${sessionId} -> ${del.status}`;
  });
  await step("session-gone", async () => {
    // Reusing a terminated session id must be rejected (spec: 404 Not Found).
    const res = await fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": sessionId,
        ...(transport.protocolVersion ? { "mcp-protocol-version": transport.protocolVersion } : {}),
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 99, method: "tools/list", params: {} }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    await res.body?.cancel();
    const allowed = STRICT ? [404] : [400, 404];
    assert(allowed.includes(res.status), `request with terminated session id got HTTP ${res.status}, expected ${allowed.join(" or ")}`);
    return `POST with old session id -> ${res.status}`;
  });
  await step("close", async () => {
    await client.close();
    return "";
  });
}

async function runEverything(url) {
  let samplingCalls = 0;
  let elicitCalls = 0;
  const { client, transport } = await connectStreamable(url, { sampling: true, elicitation: true });

  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    samplingCalls++;
    assert(Array.isArray(req.params?.messages), "sampling request without messages");
    return {
      role: "assistant",
      content: { type: "text", text: SAMPLING_TEXT },
      model: "berth-e2e-model",
      stopReason: "endTurn",
    };
  });
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    elicitCalls++;
    return { action: "accept", content: fillElicitationSchema(req.params?.requestedSchema) };
  });

  let tools = [];
  await step("list-tools", async () => {
    ({ tools } = await client.listTools({}, { timeout: REQUEST_TIMEOUT_MS }));
    assert(tools.length > 0, "tools/list returned no tools");
    return `${tools.length} tools`;
  });
  const names = Object.fromEntries(Object.keys(TOOL_CANDIDATES).map((k) => [k, pickTool(tools, k)]));

  await step("call-echo", async () => {
    const msg = `hello from berth ${randomUUID()}`;
    const r = await client.callTool({ name: names.echo, arguments: { message: msg } }, undefined, { timeout: REQUEST_TIMEOUT_MS });
    const text = checkToolResult(r, names.echo);
    assert(text.includes(msg), `echo result does not contain the message: ${short(text)}`);
    return short(text);
  });

  await step("call-progress", async () => {
    const progress = [];
    const r = await client.callTool(
      { name: names.progress, arguments: { duration: 2, steps: 4 } },
      undefined,
      { timeout: REQUEST_TIMEOUT_MS, onprogress: (p) => progress.push(p) },
    );
    checkToolResult(r, names.progress);
    assert(progress.length >= 1, `no notifications/progress received while ${names.progress} ran`);
    const last = progress[progress.length - 1];
    return `${progress.length} progress notifications (last ${last.progress}/${last.total})`;
  });

  await step("call-sampling", async () => {
    const r = await client.callTool(
      { name: names.sampling, arguments: { prompt: "Say something for Berth", maxTokens: 50 } },
      undefined,
      { timeout: REQUEST_TIMEOUT_MS },
    );
    const text = checkToolResult(r, names.sampling);
    assert(samplingCalls >= 1, "client never received a sampling/createMessage request");
    assert(text.includes(SAMPLING_TEXT), `sampling tool result lacks the client's reply ${SAMPLING_TEXT}: ${short(text, 300)}`);
    return `sampling handled ${samplingCalls}x, result contains reply`;
  });

  await step("call-elicitation", async () => {
    const r = await client.callTool({ name: names.elicitation, arguments: {} }, undefined, { timeout: REQUEST_TIMEOUT_MS });
    const text = checkToolResult(r, names.elicitation);
    assert(elicitCalls >= 1, "client never received an elicitation/create request");
    assert(/accept/i.test(text), `elicitation result does not report action accept: ${short(text, 300)}`);
    assert(text.includes(ELICIT_NAME), `elicitation result does not echo the accepted content (${ELICIT_NAME}): ${short(text, 300)}`);
    return `elicitation handled ${elicitCalls}x, result reflects accepted content`;
  });

  let resource;
  await step("list-resources", async () => {
    const { resources } = await client.listResources({}, { timeout: REQUEST_TIMEOUT_MS });
    assert(resources.length > 0, "resources/list returned no resources");
    resource = resources[0];
    return `${resources.length} resources, first ${resource.uri}`;
  });

  await step("read-resource", async () => {
    const { contents } = await client.readResource({ uri: resource.uri }, { timeout: REQUEST_TIMEOUT_MS });
    assert(contents.length > 0, `resources/read ${resource.uri} returned no contents`);
    const c = contents[0];
    assert(c.uri === resource.uri, `resources/read returned uri ${c.uri}, expected ${resource.uri}`);
    const size = (c.text ?? c.blob ?? "").length;
    assert(size > 0, `resource ${resource.uri} is empty`);
    return `${c.uri} (${c.mimeType}, ${size} chars)`;
  });

  await step("list-prompts", async () => {
    const { prompts } = await client.listPrompts({}, { timeout: REQUEST_TIMEOUT_MS });
    const names = prompts.map((p) => p.name);
    assert(names.includes("args-prompt"), `prompts/list lacks args-prompt: [${names.join(", ")}]`);
    return `${prompts.length} prompts`;
  });

  await step("get-prompt", async () => {
    const r = await client.getPrompt({ name: "args-prompt", arguments: { city: "Hamburg", state: "HH" } }, { timeout: REQUEST_TIMEOUT_MS });
    const text = r.messages.map((m) => (m.content?.type === "text" ? m.content.text : "")).join("\n");
    assert(text.includes("Hamburg, HH"), `prompt text does not contain the arguments: ${short(text)}`);
    return short(text);
  });

  await terminate(url, client, transport);
}

function parseJsonResult(result, what) {
  if (result.structuredContent) return result.structuredContent;
  const text = checkToolResult(result, what);
  try {
    return JSON.parse(text);
  } catch {
    throw new StepError(`${what}: result is not JSON: ${short(text)}`);
  }
}

async function runMemory(url) {
  const { client, transport } = await connectStreamable(url, { sampling: false, elicitation: false });
  // Unique names keep runs independent even if the memory file is shared.
  const tag = randomUUID().slice(0, 8);
  const entities = [
    { name: `berth-alpha-${tag}`, entityType: "gateway", observations: [`routes mcp traffic ${tag}`] },
    { name: `berth-beta-${tag}`, entityType: "server", observations: ["speaks stdio"] },
  ];

  await step("list-tools", async () => {
    const { tools } = await client.listTools({}, { timeout: REQUEST_TIMEOUT_MS });
    const names = tools.map((t) => t.name);
    for (const n of ["create_entities", "read_graph", "search_nodes"]) {
      assert(names.includes(n), `tools/list lacks ${n}: [${names.join(", ")}]`);
    }
    return `${tools.length} tools`;
  });

  await step("create-entities", async () => {
    const r = await client.callTool({ name: "create_entities", arguments: { entities } }, undefined, { timeout: REQUEST_TIMEOUT_MS });
    const created = parseJsonResult(r, "create_entities");
    const list = Array.isArray(created) ? created : created.entities;
    assert(Array.isArray(list) && list.length === entities.length, `create_entities returned ${short(JSON.stringify(created))}`);
    return `created ${list.map((e) => e.name).join(", ")}`;
  });

  await step("read-graph", async () => {
    const r = await client.callTool({ name: "read_graph", arguments: {} }, undefined, { timeout: REQUEST_TIMEOUT_MS });
    const graph = parseJsonResult(r, "read_graph");
    for (const e of entities) {
      const got = graph.entities.find((g) => g.name === e.name);
      assert(got, `read_graph lacks entity ${e.name}`);
      assert(got.entityType === e.entityType, `entity ${e.name} has type ${got.entityType}, expected ${e.entityType}`);
      assert(JSON.stringify(got.observations) === JSON.stringify(e.observations), `entity ${e.name} has observations ${JSON.stringify(got.observations)}`);
    }
    return `${graph.entities.length} entities in graph`;
  });

  await step("search-nodes", async () => {
    const r = await client.callTool({ name: "search_nodes", arguments: { query: `mcp traffic ${tag}` } }, undefined, { timeout: REQUEST_TIMEOUT_MS });
    const graph = parseJsonResult(r, "search_nodes");
    const found = graph.entities.map((e) => e.name);
    assert(found.length === 1 && found[0] === entities[0].name, `search_nodes returned [${found.join(", ")}], expected [${entities[0].name}]`);
    return `found ${found[0]}`;
  });

  await terminate(url, client, transport);
}

async function runSse(url) {
  const client = makeClient({ sampling: false, elicitation: false });
  const transport = new SSEClientTransport(new URL(url));
  await step("connect", async () => {
    await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
    const info = client.getServerVersion();
    return `server=${info?.name}@${info?.version} (legacy HTTP+SSE)`;
  });
  let tools = [];
  await step("list-tools", async () => {
    ({ tools } = await client.listTools({}, { timeout: REQUEST_TIMEOUT_MS }));
    assert(tools.length > 0, "tools/list returned no tools");
    return `${tools.length} tools`;
  });
  const echo = pickTool(tools, "echo");
  await step("call-echo", async () => {
    const msg = `hello over sse ${randomUUID()}`;
    const r = await client.callTool({ name: echo, arguments: { message: msg } }, undefined, { timeout: REQUEST_TIMEOUT_MS });
    const text = checkToolResult(r, echo);
    assert(text.includes(msg), `echo result does not contain the message: ${short(text)}`);
    return short(text);
  });
  await step("close", async () => {
    await client.close();
    return "";
  });
}

async function main() {
  const [url, mode] = process.argv.slice(2);
  const modes = { everything: runEverything, memory: runMemory, sse: runSse };
  if (!url || !modes[mode]) {
    console.error(`usage: node client.mjs URL (${Object.keys(modes).join("|")})`);
    process.exit(2);
  }
  const watchdog = setTimeout(() => {
    console.error(`FAIL ${currentStep}: timed out after ${OVERALL_TIMEOUT_MS} ms (mode ${mode}, ${url})`);
    process.exit(1);
  }, OVERALL_TIMEOUT_MS);
  try {
    await modes[mode](url);
  } catch (e) {
    let msg = e instanceof StepError ? e.message : `${e?.name || "Error"}: ${e?.message ?? e}`;
    if (e?.cause) msg += ` (cause: ${e.cause.code || ""} ${e.cause.message || e.cause})`;
    console.error(`FAIL ${currentStep}: ${msg.trim()}`);
    if (!(e instanceof StepError) && e?.stack) console.error(e.stack);
    if (transportErrors.length) console.error(`transport errors seen:\n  ${transportErrors.join("\n  ")}`);
    process.exit(1);
  }
  clearTimeout(watchdog);
  ok("done", `mode ${mode}`);
  process.exit(0);
}

await main();
