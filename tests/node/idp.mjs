#!/usr/bin/env node
// Independent OAuth 2.0 / OpenID provider used by Berth's integration tests to
// check JWT access-token validation against a real, third-party implementation
// (oidc-provider) rather than tokens Berth's own code would mint.
//
// Usage: node idp.mjs
//
// Listens on 127.0.0.1:<random port> and prints exactly one JSON line on stdout:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT,"jwks_uri":"…","token_endpoint":"…"}
// Everything else (oidc-provider notices, request errors) goes to stderr. The
// process exits when stdin closes or on SIGTERM/SIGINT, so a test that drops
// its handle never leaks it.
//
// Test-control endpoints (JSON in, JSON out), served next to the provider:
//   POST /test/token   {"client":"agent"|"reader","resource":URL,"scope":"…"}
//                      → real client_credentials response from /token (same status)
//   POST /test/forge   {"claims":{…,"aud":…},"mode":"valid"|"none"|"hs256-public"|
//                      "bad-signature"|"unknown-kid","kid":optional} → {"token":"…"}
//   POST /test/rotate  → {"kid":"…"}; new key signs new tokens, JWKS serves only it
//   GET  /test/state   → {"kid":"…","jwks_requests":N}

import http from "node:http";
import { createHmac, generateKeyPairSync, randomBytes, sign } from "node:crypto";

// oidc-provider prints its NOTICE lines with console.info, i.e. on stdout,
// which would corrupt the one-line handshake. Route all console output to
// stderr before the module is loaded (hence the dynamic import below).
for (const method of ["log", "info", "debug"]) console[method] = console.error;
const { default: Provider, errors } = await import("oidc-provider");

const SCOPES = ["tools:read", "tools:call", "github:write"];
const CLIENTS = [
  { client_id: "agent", client_secret: "agent-secret", scope: "tools:read tools:call github:write" },
  { client_id: "reader", client_secret: "reader-secret", scope: "tools:read tools:call" },
  // Can obtain no tokens; only lets a resource server authenticate to introspection.
  { client_id: "berth", client_secret: "berth-secret", grant_types: [] },
].map((c) => ({
  grant_types: ["client_credentials"],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: "client_secret_basic",
  ...c,
}));
const ROUTES = { jwks: "/jwks", token: "/token", introspection: "/token/introspection" };
const ACCESS_TOKEN_TTL = 300;

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

// A fresh ES256 key pair; the private JWK feeds oidc-provider's keystore, the
// KeyObject and SPKI PEM are kept so /test/forge can sign and mount attacks.
function newSigningKey(prefix = "es256") {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const kid = `${prefix}-${randomBytes(8).toString("hex")}`;
  const jwk = { ...privateKey.export({ format: "jwk" }), kid, alg: "ES256", use: "sig" };
  return { kid, jwk, privateKey, publicPem: publicKey.export({ type: "spki", format: "pem" }) };
}

// JOSE wants the raw r||s form for ECDSA, not node's default DER encoding.
function signEs256(header, payload, key) {
  const input = `${b64url(header)}.${b64url(payload)}`;
  const sig = sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  return `${input}.${sig.toString("base64url")}`;
}

function buildProvider(issuer, key) {
  const provider = new Provider(issuer, {
    clients: CLIENTS,
    jwks: { keys: [key.jwk] },
    // Declaring the scopes makes oidc-provider enforce each client's scope
    // allow-list (reader asking for github:write gets invalid_scope) instead
    // of silently treating them as unknown.
    scopes: SCOPES,
    routes: ROUTES,
    // The keystore holds only an EC key, so nothing may default to RS256.
    clientDefaults: { id_token_signed_response_alg: "ES256" },
    cookies: { keys: [randomBytes(16).toString("hex")] },
    // A plain number here would override the resource server's accessTokenTTL,
    // so keep the stock rule (RS TTL for JWTs, 10 min for opaque) minus its
    // "you should change this" notice.
    ttl: { ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 600 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // No `resource` → no resource server → opaque token (introspection tests).
        defaultResource: async (ctx, client, oneOf) => oneOf,
        useGrantedResource: async () => true,
        // Any http(s) URL is a resource server whose tokens are ES256 JWTs
        // with aud = that URL.
        async getResourceServerInfo(ctx, resourceIndicator) {
          const { protocol } = new URL(resourceIndicator);
          if (protocol !== "http:" && protocol !== "https:") {
            throw new errors.InvalidTarget("resource must be an http(s) URL");
          }
          return {
            scope: SCOPES.join(" "),
            audience: resourceIndicator,
            accessTokenTTL: ACCESS_TOKEN_TTL,
            accessTokenFormat: "jwt",
            jwt: { sign: { alg: "ES256" } },
          };
        },
      },
    },
  });
  provider.on("server_error", (ctx, err) => console.error("idp server_error:", err));
  provider.on("grant.error", (ctx, err) => console.error("idp grant.error:", err.message, err.error_description ?? ""));
  return provider;
}

// ---- mutable state: the provider instance is swapped on /test/rotate ----
let issuer;
let current; // { key, provider, callback }
let jwksRequests = 0;

function install(key) {
  const provider = buildProvider(issuer, key);
  current = { key, provider, callback: provider.callback() };
}

// ---- test-control handlers ----

async function testToken(body) {
  const client = CLIENTS.find((c) => c.client_id === body.client);
  if (!client) return [400, { error: `unknown client ${JSON.stringify(body.client)}` }];
  const form = new URLSearchParams({ grant_type: "client_credentials" });
  if (body.resource !== undefined) form.set("resource", body.resource);
  if (body.scope !== undefined) form.set("scope", body.scope);
  // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
  const basic = Buffer.from(
    `${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`,
  ).toString("base64");
  const res = await fetch(`${issuer}${ROUTES.token}`, {
    method: "POST",
    headers: { authorization: `Basic ${basic}`, "content-type": "application/x-www-form-urlencoded" },
    body: form,
  });
  return [res.status, await res.json()];
}

function testForge(body) {
  const claims = body.claims ?? {};
  if (!("aud" in claims)) return [400, { error: "claims.aud is required (null to omit it)" }];
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    iss: issuer,
    sub: "forged-subject",
    iat: now,
    nbf: now,
    exp: now + ACCESS_TOKEN_TTL,
    scope: "tools:read tools:call",
    client_id: "agent",
    jti: randomBytes(16).toString("base64url"),
    ...claims,
  };
  for (const [k, v] of Object.entries(payload)) if (v === null) delete payload[k];

  // Same header shape oidc-provider uses for JWT access tokens (RFC 9068).
  const header = (alg, kid) => ({ alg, typ: "at+jwt", ...(kid ? { kid } : {}), ...(body.kid ? { kid: body.kid } : {}) });
  const { key } = current;
  let token;
  switch (body.mode ?? "valid") {
    case "valid":
      token = signEs256(header("ES256", key.kid), payload, key.privateKey);
      break;
    case "none":
      token = `${b64url({ alg: "none", typ: "JWT", ...(body.kid ? { kid: body.kid } : {}) })}.${b64url(payload)}.`;
      break;
    case "hs256-public": {
      // Key confusion: a verifier that feeds "the key" to whatever alg the
      // header names would HMAC with the public key's PEM text.
      const input = `${b64url(header("HS256", key.kid))}.${b64url(payload)}`;
      token = `${input}.${createHmac("sha256", key.publicPem).update(input).digest("base64url")}`;
      break;
    }
    case "bad-signature": {
      const [h, p, s] = signEs256(header("ES256", key.kid), payload, key.privateKey).split(".");
      const sig = Buffer.from(s, "base64url");
      sig[sig.length - 1] ^= 0xff; // still 64 bytes, still canonical base64url
      token = `${h}.${p}.${sig.toString("base64url")}`;
      break;
    }
    case "unknown-kid": {
      const stranger = newSigningKey("unknown");
      token = signEs256(header("ES256", stranger.kid), payload, stranger.privateKey);
      break;
    }
    default:
      return [400, { error: `unknown mode ${JSON.stringify(body.mode)}` }];
  }
  return [200, { token }];
}

function testRotate() {
  // oidc-provider's keystore is fixed at construction, so rotation means a new
  // instance. Its default memory adapter is module-global, so opaque tokens
  // issued before the swap remain introspectable.
  install(newSigningKey());
  console.error(`idp: rotated signing key to ${current.key.kid}`);
  return [200, { kid: current.key.kid }];
}

const TEST_ROUTES = {
  "POST /test/token": testToken,
  "POST /test/forge": testForge,
  "POST /test/rotate": testRotate,
  "GET /test/state": () => [200, { kid: current.key.kid, jwks_requests: jwksRequests }],
};

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString("utf8").trim();
  return text ? JSON.parse(text) : {};
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer(async (req, res) => {
  const { pathname } = new URL(req.url, "http://localhost");
  const handler = TEST_ROUTES[`${req.method} ${pathname}`];
  if (!handler) {
    if (req.method === "GET" && pathname === ROUTES.jwks) jwksRequests += 1;
    // oidc-provider 8.x only serves OpenID discovery; its document is a
    // superset of RFC 8414 metadata, so alias the OAuth well-known path to it.
    if (pathname === "/.well-known/oauth-authorization-server") {
      req.url = "/.well-known/openid-configuration";
    }
    current.callback(req, res);
    return;
  }
  try {
    const [status, body] = await handler(await readJson(req));
    send(res, status, body);
  } catch (err) {
    console.error(`idp: ${req.method} ${pathname} failed:`, err);
    send(res, err instanceof SyntaxError ? 400 : 500, { error: String(err?.message ?? err) });
  }
});

// ---- lifecycle: tie our lifetime to the parent's stdin ----
const exit = (why) => {
  console.error(`idp: exiting (${why})`);
  process.exit(0);
};
process.stdin.on("end", () => exit("stdin closed"));
process.stdin.on("close", () => exit("stdin closed"));
process.stdin.on("error", () => exit("stdin error"));
process.stdin.resume();
process.on("SIGTERM", () => exit("SIGTERM"));
process.on("SIGINT", () => exit("SIGINT"));

server.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  issuer = `http://127.0.0.1:${port}`;
  install(newSigningKey());
  process.stdout.write(
    `${JSON.stringify({
      issuer,
      port,
      jwks_uri: `${issuer}${ROUTES.jwks}`,
      token_endpoint: `${issuer}${ROUTES.token}`,
    })}\n`,
  );
  console.error(`idp: listening on ${issuer} (kid ${current.key.kid})`);
});
