#!/usr/bin/env python3
"""OAuth end-to-end MCP client (official Python SDK) for Berth's built-in issuer.

Usage:
  oauth_client.py --url URL --mode authcode --approval-secret S --tool NAME --args JSON
  oauth_client.py --url URL --mode client-credentials --client-id ID --client-secret SECRET \
                  --tool NAME --args JSON
  (optional: --scope "tools:call tools:read", --issuer URL, --timeout SECONDS)

URL is a Berth Streamable HTTP endpoint, <public_url>/mcp/<name>, protected by
[auth] mode = "oauth" with the built-in authorization server.

Both modes rely on the SDK's own OAuth machinery (an httpx.Auth handed to the
Streamable HTTP transport): the first MCP request gets 401 with
`WWW-Authenticate: Bearer resource_metadata=...`, and the SDK discovers the
Protected Resource Metadata, then the authorization server metadata, then gets
a token and retries.

  authcode            mcp.client.auth.OAuthClientProvider: dynamic client
                      registration, authorization code + PKCE S256 with
                      `resource`. The consent page is answered by this script
                      in the SDK's redirect_handler (GET the authorization URL,
                      fill in the form with the approval secret, POST it
                      without following the redirect, take code and state
                      from Location) and handed back via callback_handler.
  client-credentials  mcp.client.auth.extensions.client_credentials.
                      ClientCredentialsOAuthProvider with a pre-created
                      confidential client (client_secret_basic).

Then: initialize, tools/list, tools/call NAME with the JSON arguments.

Scopes: --scope is what the providers are configured with (OAuthClientMetadata.scope
or ClientCredentialsOAuthProvider(scopes=...)), but SDK 1.30 follows the MCP scope
selection strategy and replaces it with the `scope` of the 401 challenge when there
is one (Berth sends the server's required_scopes there), falling back to the
Protected Resource Metadata's scopes_supported. The granted scopes are reported as
"scopes" (the token's scope claim); a difference from --scope is logged on stderr.

stdout gets exactly one JSON line:
  {"ok": true, "tools": [...], "result": {...}, "token_audience": ..., "scopes": ...}
or {"ok": false, "error": "..."} (exit status 1). Everything else goes to stderr.
The whole run is bounded by --timeout (default 60 s).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import secrets
import sys
import warnings
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import anyio
import httpx
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider, OAuthFlowError, TokenStorage
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

log = logging.getLogger("oauth_client")

DEFAULT_SCOPE = "tools:call tools:read"
# Per-HTTP-request bound (the overall deadline is --timeout).
HTTP_TIMEOUT = httpx.Timeout(15.0, read=30.0)
# Per-MCP-request bound.
MCP_REQUEST_TIMEOUT = timedelta(seconds=20)


class ClientError(Exception):
    """A failure with a message fit for the one-line JSON error."""


# ---- token storage -------------------------------------------------------------


class InMemoryTokenStorage(TokenStorage):
    """The SDK's TokenStorage protocol, kept in memory for this one run."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        log.info("token received: type=%s expires_in=%s scope=%r refresh_token=%s",
                 tokens.token_type, tokens.expires_in, tokens.scope,
                 "yes" if tokens.refresh_token else "no")
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        log.info("client registered: client_id=%s auth_method=%s scope=%r",
                 client_info.client_id, client_info.token_endpoint_auth_method, client_info.scope)
        self.client_info = client_info


# ---- consent page --------------------------------------------------------------


class ConsentFormParser(HTMLParser):
    """Collects the consent form of Berth's /oauth/authorize page (crates/issuer/src/consent.rs):

        <form method="post" action="/oauth/authorize">
          <input type="hidden" name="request" value="...">
          <input type="password" name="approval_secret" ...>
          <button type="submit" name="decision" value="approve">
          <button type="submit" name="decision" value="deny">
        </form>

    plus any `<p class="error">` message (shown e.g. after a wrong secret).
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self._form: dict[str, Any] | None = None
        self.errors: list[str] = []
        self._in_error = False
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._form = {
                "method": a.get("method", "get").lower(),
                "action": a.get("action", ""),
                "hidden": [],
                "passwords": [],
                "buttons": [],
            }
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            kind = a.get("type", "text").lower()
            if kind == "hidden" and a.get("name"):
                self._form["hidden"].append((a["name"], a.get("value", "")))
            elif kind == "password" and a.get("name"):
                self._form["passwords"].append(a["name"])
            elif kind == "submit" and a.get("name"):
                self._form["buttons"].append((a["name"], a.get("value", "")))
        elif tag == "button" and self._form is not None:
            if a.get("type", "submit").lower() == "submit" and a.get("name"):
                self._form["buttons"].append((a["name"], a.get("value", "")))
        elif tag == "p" and "error" in a.get("class", "").split():
            self._in_error = True
            self.errors.append("")
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "p":
            self._in_error = False
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_error and self.errors:
            self.errors[-1] += data
        if self._in_title:
            self.title += data


def page_summary(html: str) -> str:
    p = ConsentFormParser()
    p.feed(html)
    errors = [" ".join(e.split()) for e in p.errors if e.strip()]
    title = " ".join(p.title.split())
    return "; ".join(errors) or title or html[:200]


class ConsentAutomation:
    """The SDK's redirect_handler / callback_handler pair, answering consent itself.

    redirect_handler(authorization_url): GET the consent page, POST the form
    with approval_secret and decision=approve (no redirect following), and keep
    code and state from the Location header. callback_handler() hands them to
    the SDK, which checks the state and exchanges the code.
    """

    def __init__(self, approval_secret: str, redirect_uri: str) -> None:
        self.approval_secret = approval_secret
        self.redirect_uri = redirect_uri
        self.provider: OAuthClientProvider | None = None  # set once constructed (for the issuer check)
        self._result: tuple[str, str | None] | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        self._result = None
        shown = urlparse(authorization_url)
        params = parse_qs(shown.query)
        log.info("authorization request: %s://%s%s resource=%s scope=%s code_challenge_method=%s",
                 shown.scheme, shown.netloc, shown.path, params.get("resource"), params.get("scope"),
                 params.get("code_challenge_method"))
        if "resource" not in params:
            raise ClientError("the SDK's authorization request carries no resource parameter")

        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
            page = await http.get(authorization_url, headers={"Accept": "text/html"})
            if page.status_code != 200:
                raise ClientError(
                    f"consent page: HTTP {page.status_code}"
                    + (f" to {page.headers.get('location')}" if page.is_redirect else "")
                    + f": {page_summary(page.text)}"
                )
            form = self._consent_form(page.text)
            action = urljoin(str(page.url), form["action"] or str(page.url))
            data = dict(form["hidden"])
            data[form["passwords"][0]] = self.approval_secret
            data["decision"] = "approve"
            log.info("submitting consent form to %s (fields: %s)", action, ", ".join(sorted(data)))
            answer = await http.post(action, data=data)  # form-encoded; redirects not followed

        location = answer.headers.get("location")
        if answer.status_code not in (301, 302, 303, 307, 308) or not location:
            raise ClientError(f"consent refused: HTTP {answer.status_code}: {page_summary(answer.text)}")
        self._result = self._parse_callback(urljoin(action, location))

    def _consent_form(self, html: str) -> dict[str, Any]:
        parser = ConsentFormParser()
        parser.feed(html)
        for form in parser.forms:
            decisions = {v for n, v in form["buttons"] if n == "decision"}
            if form["method"] == "post" and form["passwords"] and "approve" in decisions:
                if form["passwords"] != ["approval_secret"]:
                    log.warning("consent form password field(s) %s (expected approval_secret)", form["passwords"])
                return form
        raise ClientError(f"no consent form (POST, password field, decision=approve) on the page: {page_summary(html)}")

    def _parse_callback(self, location: str) -> tuple[str, str | None]:
        loc = urlparse(location)
        want = urlparse(self.redirect_uri)
        if (loc.scheme, loc.netloc, loc.path) != (want.scheme, want.netloc, want.path):
            raise ClientError(f"consent redirected to {loc.scheme}://{loc.netloc}{loc.path}, not to {self.redirect_uri}")
        q = parse_qs(loc.query)
        one = lambda k: (q.get(k) or [None])[0]  # noqa: E731
        if one("error"):
            raise ClientError(f"authorization error {one('error')}: {one('error_description') or ''}".strip())
        # RFC 9207 (Berth advertises authorization_response_iss_parameter_supported; the SDK's
        # OAuthMetadata model does not keep that field, so check `iss` whenever it is sent).
        metadata = self.provider.context.oauth_metadata if self.provider else None
        iss = one("iss")
        if iss is None:
            log.warning("the authorization response carries no iss (RFC 9207)")
        elif metadata is not None and iss.rstrip("/") != str(metadata.issuer).rstrip("/"):
            raise ClientError(f"authorization response iss {iss!r} != issuer {metadata.issuer}")
        code = one("code")
        if not code:
            raise ClientError("the redirect carries no code")
        log.info("authorization code received (state %s)", "present" if one("state") else "absent")
        return code, one("state")

    async def callback_handler(self) -> tuple[str, str | None]:
        if self._result is None:
            raise ClientError("no authorization response was captured")
        result, self._result = self._result, None
        return result


# ---- helpers ------------------------------------------------------------------


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, decoded without verification."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except Exception as e:  # noqa: BLE001
        raise ClientError(f"the access token is not a decodable JWT: {e}") from e


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out.extend(leaf_exceptions(e))
        return out
    return [exc]


def describe(exc: BaseException) -> str:
    leaves = [e for e in leaf_exceptions(exc) if not isinstance(e, asyncio.CancelledError)]
    if not leaves:
        leaves = leaf_exceptions(exc)
    # The most specific cause first: our own errors, then OAuth, then HTTP.
    rank = lambda e: (0 if isinstance(e, ClientError) else 1 if isinstance(e, OAuthFlowError) else 2)  # noqa: E731
    parts = []
    for e in sorted(leaves, key=rank):
        text = f"{type(e).__name__}: {e}" if not isinstance(e, ClientError) else str(e)
        if text not in parts:
            parts.append(text)
    return " | ".join(parts)[:2000]


def origin(url: str) -> str:
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc}"


# ---- main flow ----------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    storage = InMemoryTokenStorage()
    provider: OAuthClientProvider
    issuer = args.issuer or origin(args.url)  # Berth's built-in issuer is its public_url

    if args.mode == "authcode":
        if not args.approval_secret:
            raise ClientError("--approval-secret is required for --mode authcode")
        redirect_uri = f"http://127.0.0.1:{secrets.randbelow(20000) + 40000}/callback"
        consent = ConsentAutomation(args.approval_secret, redirect_uri)
        provider = OAuthClientProvider(
            server_url=args.url,
            client_metadata=OAuthClientMetadata(
                client_name="berth-python-oauth-e2e",
                redirect_uris=[redirect_uri],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                scope=args.scope,
            ),
            storage=storage,
            redirect_handler=consent.redirect_handler,
            callback_handler=consent.callback_handler,
        )
        consent.provider = provider
    else:
        if not (args.client_id and args.client_secret):
            raise ClientError("--client-id and --client-secret are required for --mode client-credentials")
        provider = ClientCredentialsOAuthProvider(
            server_url=args.url,
            storage=storage,
            client_id=args.client_id,
            client_secret=args.client_secret,
            token_endpoint_auth_method="client_secret_basic",
            scopes=args.scope,
            issuer=issuer,
        )

    try:
        tool_args = json.loads(args.args)
    except json.JSONDecodeError as e:
        raise ClientError(f"--args is not JSON: {e}") from e
    if not isinstance(tool_args, dict):
        raise ClientError("--args must be a JSON object")

    http_client = create_mcp_http_client(timeout=HTTP_TIMEOUT, auth=provider)
    async with http_client:
        async with streamable_http_client(args.url, http_client=http_client) as (read, write, _sid):
            async with ClientSession(read, write, read_timeout_seconds=MCP_REQUEST_TIMEOUT) as session:
                init = await session.initialize()
                log.info("initialized: server %s %s, protocol %s", init.serverInfo.name,
                         init.serverInfo.version, init.protocolVersion)
                listed = await session.list_tools()
                names = [t.name for t in listed.tools]
                log.info("tools/list: %s", names)
                if args.tool not in names:
                    raise ClientError(f"tool {args.tool!r} is not listed (tools: {names})")
                result = await session.call_tool(args.tool, tool_args)
                log.info("tools/call %s: isError=%s", args.tool, result.isError)

    tokens = storage.tokens
    if tokens is None:
        raise ClientError("the MCP session succeeded but no OAuth token was ever obtained")
    claims = jwt_claims(tokens.access_token)
    log.info("access token claims: %s", {k: claims.get(k) for k in ("iss", "sub", "aud", "scope", "client_id")})
    if args.scope and set(args.scope.split()) != set(str(claims.get("scope", "")).split()):
        log.warning("asked for scope %r but the SDK chose %r (MCP scope selection: the WWW-Authenticate "
                    "scope wins over the configured one)", args.scope, claims.get("scope"))
    return {
        "ok": True,
        "tools": names,
        "result": result.model_dump(mode="json", by_alias=True, exclude_none=True),
        "token_audience": claims.get("aud"),
        "scopes": claims.get("scope"),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="MCP endpoint, <public_url>/mcp/<name>")
    p.add_argument("--mode", required=True, choices=["authcode", "client-credentials"])
    p.add_argument("--approval-secret", help="authcode: what to type on the consent page (the admin token)")
    p.add_argument("--client-id", help="client-credentials: the client id")
    p.add_argument("--client-secret", help="client-credentials: the client secret")
    p.add_argument("--scope", default=DEFAULT_SCOPE, help=f"scopes to configure (default {DEFAULT_SCOPE!r}); the SDK prefers the 401 challenge's scope")
    p.add_argument("--issuer", help="client-credentials: expected issuer (default: the URL's origin)")
    p.add_argument("--tool", required=True)
    p.add_argument("--args", default="{}", help="tool arguments as a JSON object")
    p.add_argument("--timeout", type=float, default=60.0, help="overall deadline in seconds (default 60)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.INFO)
    warnings.simplefilter("default")
    try:
        args = parse_args(argv)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        print(json.dumps({"ok": False, "error": "bad command line (see stderr)"}), flush=True)
        return 1

    async def bounded() -> dict[str, Any]:
        with anyio.fail_after(args.timeout):
            return await run(args)

    try:
        out = anyio.run(bounded)
    except TimeoutError:
        out = {"ok": False, "error": f"timed out after {args.timeout:g} s"}
    except BaseException as e:  # noqa: BLE001 - ExceptionGroups from the transport's task group
        if isinstance(e, KeyboardInterrupt):
            raise
        if any(isinstance(x, TimeoutError) for x in leaf_exceptions(e)):
            out = {"ok": False, "error": f"timed out after {args.timeout:g} s: {describe(e)}"}
        else:
            out = {"ok": False, "error": describe(e)}
        log.debug("failure", exc_info=e)
    print(json.dumps(out), flush=True)
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
