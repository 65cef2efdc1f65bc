#!/usr/bin/env node
// Logging HTTP pass-through proxy, for seeing what an MCP client sends on the wire.
//
//   node tests/node-modern/wire_proxy.mjs LISTEN_PORT TARGET_BASE_URL [LOG_FILE]
//   e.g. node wire_proxy.mjs 18800 http://127.0.0.1:8765   (then point a client at http://127.0.0.1:18800/mcp)
//
// Streams request and response bodies through unchanged (SSE stays live) and writes one
// JSON line per event to LOG_FILE (default: stderr):
//   {"ev":"req", "n", "method", "path", "headers": {mcp-*, accept, content-type, last-event-id}, "body"}
//   {"ev":"res", "n", "status", "contentType"}
//   {"ev":"chunk", "n", "data"}            response body data (each chunk, truncated to 400 chars)
//   {"ev":"end", "n", "ms"}                response finished normally
//   {"ev":"client-closed", "n", "ms"}      client closed the connection before the response ended
// Prints `READY http://127.0.0.1:LISTEN_PORT` on stdout once listening. Only meant for 127.0.0.1.
import http from 'node:http';
import fs from 'node:fs';

const [port, target, logFile] = process.argv.slice(2);
if (!port || !target) {
  console.error('usage: wire_proxy.mjs LISTEN_PORT TARGET_BASE_URL [LOG_FILE]');
  process.exit(2);
}
const out = logFile ? fs.createWriteStream(logFile, { flags: 'a' }) : process.stderr;
const log = (o) => out.write(JSON.stringify(o) + '\n');
const cut = (s, n = 400) => (s.length > n ? s.slice(0, n) + `…(+${s.length - n})` : s);
const t = new URL(target);
let counter = 0;

http
  .createServer((req, res) => {
    const n = ++counter;
    const t0 = Date.now();
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const headers = {};
      for (const [k, v] of Object.entries(req.headers)) {
        if (k.startsWith('mcp-') || ['accept', 'content-type', 'last-event-id'].includes(k)) headers[k] = v;
      }
      log({ ev: 'req', n, method: req.method, path: req.url, headers, body: cut(body.toString('utf8'), 1500) });
      const fwdHeaders = { ...req.headers, host: t.host };
      delete fwdHeaders['content-length'];
      if (body.length) fwdHeaders['content-length'] = String(body.length);
      const up = http.request(
        { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: fwdHeaders },
        (upRes) => {
          log({ ev: 'res', n, status: upRes.statusCode, contentType: upRes.headers['content-type'] ?? null });
          res.writeHead(upRes.statusCode, upRes.headers);
          upRes.on('data', (c) => {
            log({ ev: 'chunk', n, data: cut(c.toString('utf8')) });
            res.write(c);
          });
          upRes.on('end', () => {
            log({ ev: 'end', n, ms: Date.now() - t0 });
            res.end();
          });
          upRes.on('error', () => res.destroy());
        },
      );
      up.on('error', (e) => {
        log({ ev: 'upstream-error', n, error: String(e) });
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
      res.on('close', () => {
        if (!res.writableFinished) {
          log({ ev: 'client-closed', n, ms: Date.now() - t0 });
          up.destroy();
        }
      });
      up.end(body);
    });
  })
  .listen(Number(port), '127.0.0.1', () => console.log(`READY http://127.0.0.1:${port}`));
