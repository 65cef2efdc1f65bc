//! The token endpoint (RFC 6749 §3.2, OAuth 2.1 §3.2): client
//! authentication, then the authorization code, refresh token and client
//! credentials grants, and token exchange (in `exchange`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use crate::authorize::{self, Redeem};
use crate::clients::Client;
use crate::error::OAuthError;
use crate::refresh::Lookup;
use crate::util::{self, Params};
use crate::{Grant, Issuer, OPERATOR_SUBJECT};

/// How the client identified itself.
struct Presented {
    /// `None`: a `client_secret` in the body without `client_id` (see
    /// [`authenticate`]).
    client_id: Option<String>,
    secret: Option<String>,
    basic: bool,
}

pub(crate) async fn token(
    State(iss): State<Arc<Issuer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&iss, &headers, &body) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = e.code(), "token request refused");
            e.into_response()
        }
    }
}

fn handle(iss: &Issuer, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let params = Params::parse(body).map_err(OAuthError::invalid_request)?;
    let grant_type = params
        .get("grant_type")
        .map_err(OAuthError::invalid_request)?
        .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    let client = authenticate(iss, headers, &params, grant_type)?;
    match grant_type {
        "authorization_code" => authorization_code(iss, &client, &params),
        "refresh_token" => refresh_token(iss, &client, &params),
        "client_credentials" => client_credentials(iss, &client, &params),
        crate::TOKEN_EXCHANGE_GRANT => crate::exchange::token_exchange(iss, &client, &params),
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!(
                "grant_type `{other}` is not supported; use authorization_code, refresh_token, client_credentials or {}",
                crate::TOKEN_EXCHANGE_GRANT
            ),
        )),
    }
}

/// Client authentication: HTTP Basic (`client_secret_basic`), `client_id` +
/// `client_secret` in the body (`client_secret_post`), or `client_id` alone
/// for public clients (`none`). A confidential client may use either secret
/// method whatever it registered.
///
/// Interop: the MCP Python SDK's `ClientCredentialsOAuthProvider` with
/// `client_secret_post` (1.30) sends `client_secret` but no `client_id`.
/// For the `client_credentials` grant only, such a request is matched to the
/// operator-created client holding that secret: the secrets are 256-bit
/// random values, so the secret alone identifies its client.
fn authenticate(
    iss: &Issuer,
    headers: &HeaderMap,
    params: &Params,
    grant_type: &str,
) -> Result<Client, OAuthError> {
    let p = presented(headers, params)?;
    let fail = |d: &str| OAuthError::invalid_client(d).with_basic_challenge(p.basic);
    let Some(client_id) = &p.client_id else {
        let secret = p.secret.as_deref().unwrap_or_default();
        if grant_type != "client_credentials" {
            return Err(fail("client_id is required"));
        }
        return iss
            .clients
            .find_operator_client_by_secret(secret)
            .ok_or_else(|| fail("client authentication failed"));
    };
    let client = iss
        .clients
        .get(client_id)
        .ok_or_else(|| fail("unknown client_id; register again"))?;
    match (&p.secret, client.is_confidential()) {
        (Some(s), true) if client.secret_matches(s) => Ok(client),
        (Some(_), true) => Err(fail("client authentication failed")),
        (None, true) => Err(fail(
            "this client is confidential: authenticate with client_secret_basic or client_secret_post",
        )),
        (Some(_), false) => Err(fail("this is a public client: it has no secret to send")),
        (None, false) => Ok(client),
    }
}

fn presented(headers: &HeaderMap, params: &Params) -> Result<Presented, OAuthError> {
    let body_id = params
        .get("client_id")
        .map_err(OAuthError::invalid_request)?;
    let body_secret = params
        .get("client_secret")
        .map_err(OAuthError::invalid_request)?;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let basic_fail = |d: &str| OAuthError::invalid_client(d).with_basic_challenge(true);
        let value = value
            .to_str()
            .map_err(|_| basic_fail("malformed Authorization header"))?;
        let (scheme, creds) = value.trim().split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(basic_fail(
                "unsupported Authorization scheme; use Basic or send client_id in the body",
            ));
        }
        let decoded = STANDARD
            .decode(creds.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| basic_fail("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| basic_fail("malformed Basic credentials"))?;
        // RFC 6749 §2.3.1: both halves are form-urlencoded first.
        let (id, secret) = match (form_decode(id), form_decode(secret)) {
            (Some(i), Some(s)) if !i.is_empty() => (i, s),
            _ => return Err(basic_fail("malformed Basic credentials")),
        };
        if body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method: HTTP Basic or client_secret in the body, not both",
            ));
        }
        if body_id.is_some_and(|b| b != id) {
            return Err(basic_fail(
                "client_id in the body differs from the one in HTTP Basic",
            ));
        }
        return Ok(Presented {
            client_id: Some(id),
            secret: Some(secret),
            basic: true,
        });
    }
    if body_id.is_none() && body_secret.is_none() {
        return Err(OAuthError::invalid_client(
            "client authentication required: send client_id (and client_secret) or use HTTP Basic",
        ));
    }
    Ok(Presented {
        client_id: body_id.map(str::to_owned),
        secret: body_secret.map(str::to_owned),
        basic: false,
    })
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a
/// space, `%XX` a byte; `None` unless the result is UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The single `resource` parameter, if any, resolved against the configured
/// resources.
fn requested_resource(iss: &Issuer, params: &Params) -> Result<Option<String>, OAuthError> {
    match params.get_all("resource").as_slice() {
        [] => Ok(None),
        [one] => iss.resolve_resource(one).map(Some).ok_or_else(|| {
            OAuthError::invalid_target(format!("resource `{one}` is not served by this gateway"))
        }),
        _ => Err(OAuthError::invalid_target(
            "only one resource per request is supported",
        )),
    }
}

/// Requested scopes: must be a subset of `allowed`; absent = all of `allowed`.
fn requested_scopes(params: &Params, allowed: &[String]) -> Result<Vec<String>, OAuthError> {
    match params.get("scope").map_err(OAuthError::invalid_request)? {
        None => Ok(allowed.to_vec()),
        Some(s) => {
            let asked = util::split_scopes(s);
            match asked.iter().find(|s| !allowed.contains(s)) {
                Some(bad) => Err(OAuthError::invalid_scope(format!(
                    "scope `{bad}` exceeds what was granted (granted: {})",
                    allowed.join(" ")
                ))),
                None => Ok(asked),
            }
        }
    }
}

fn authorization_code(
    iss: &Issuer,
    client: &Client,
    params: &Params,
) -> Result<Response, OAuthError> {
    let get = |n: &str| params.get(n).map_err(OAuthError::invalid_request);
    if !client.allows_grant("authorization_code") {
        return Err(OAuthError::unauthorized_client(
            "this client is not registered for the authorization_code grant",
        ));
    }
    let code = get("code")?.ok_or_else(|| OAuthError::invalid_request("code is required"))?;
    let verifier = get("code_verifier")?
        .ok_or_else(|| OAuthError::invalid_request("code_verifier is required (PKCE)"))?;
    let redirect_uri = get("redirect_uri")?;
    let resource = requested_resource(iss, params);

    let outcome = iss
        .codes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .redeem(code);
    let req = match outcome {
        Redeem::Invalid => {
            return Err(OAuthError::invalid_grant(
                "authorization code is invalid or expired",
            ));
        }
        Redeem::Replayed(family) => {
            if let Some(f) = family {
                iss.refresh
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .revoke(f);
            }
            tracing::warn!(client_id = %client.client_id, "authorization code replayed; revoked tokens issued from it");
            return Err(OAuthError::invalid_grant(
                "authorization code was already used; tokens issued from it are revoked",
            ));
        }
        Redeem::Fresh(req) => req,
    };
    if req.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "authorization code was issued to another client",
        ));
    }
    let redirect_ok = match redirect_uri {
        Some(r) => r == req.redirect_uri,
        None => !req.redirect_uri_given,
    };
    if !redirect_ok {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    if !authorize::is_pkce_string(verifier) {
        return Err(OAuthError::invalid_grant(
            "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]",
        ));
    }
    let computed = URL_SAFE_NO_PAD.encode(util::sha256(verifier.as_bytes()));
    if !util::secrets_equal(&computed, &req.code_challenge) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge (PKCE S256)",
        ));
    }
    // `resource` is resolved only now so that a wrong one still spends the code.
    let audience = match resource? {
        Some(r) if r != req.resource => {
            return Err(OAuthError::invalid_target(
                "resource differs from the one that was authorized",
            ));
        }
        _ => iss.resolve_resource(&req.resource).ok_or_else(|| {
            OAuthError::invalid_target(format!("resource `{}` is no longer served", req.resource))
        })?,
    };

    let refresh = if client.allows_grant("refresh_token") {
        let created = iss
            .refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .create(
                &client.client_id,
                OPERATOR_SUBJECT,
                &audience,
                &req.scopes,
                iss.refresh_token_ttl,
            );
        match created {
            Some((family, token)) => {
                iss.codes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .set_family(code, family);
                Some(token)
            }
            // Degrade to an access token only rather than failing the grant.
            None => {
                tracing::warn!("refresh token store is full; issuing no refresh token");
                None
            }
        }
    } else {
        None
    };
    respond(
        iss,
        Grant {
            subject: OPERATOR_SUBJECT.into(),
            client_id: client.client_id.clone(),
            audience,
            scopes: req.scopes,
            ttl: iss.access_token_ttl,
        },
        refresh,
    )
}

fn refresh_token(iss: &Issuer, client: &Client, params: &Params) -> Result<Response, OAuthError> {
    if !client.allows_grant("refresh_token") {
        return Err(OAuthError::unauthorized_client(
            "this client is not registered for the refresh_token grant",
        ));
    }
    let token = params
        .get("refresh_token")
        .map_err(OAuthError::invalid_request)?
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
    let resource = requested_resource(iss, params)?;

    // One lock across lookup and rotation: two concurrent uses of the same
    // token cannot both succeed.
    let mut store = iss.refresh.lock().unwrap_or_else(|p| p.into_inner());
    let grant = match store.lookup(token) {
        Lookup::Invalid => {
            return Err(OAuthError::invalid_grant(
                "refresh token is invalid or expired",
            ));
        }
        Lookup::Reused => {
            tracing::warn!(client_id = %client.client_id, "superseded refresh token reused; revoked its family");
            return Err(OAuthError::invalid_grant(
                "refresh token was already used; all tokens of this authorization are revoked",
            ));
        }
        Lookup::Current(g) => g,
    };
    if grant.client_id != client.client_id {
        // A token in the wrong hands: treat as compromised.
        store.revoke(grant.family);
        return Err(OAuthError::invalid_grant(
            "refresh token was issued to another client",
        ));
    }
    if resource.as_ref().is_some_and(|r| *r != grant.resource) {
        return Err(OAuthError::invalid_target(
            "resource differs from the one that was authorized",
        ));
    }
    if iss.resolve_resource(&grant.resource).is_none() {
        store.revoke(grant.family);
        return Err(OAuthError::invalid_grant(format!(
            "resource `{}` is no longer served",
            grant.resource
        )));
    }
    // Narrowing applies to this access token only; the refresh token keeps
    // the original grant (RFC 6749 §6).
    let scopes = requested_scopes(params, &grant.scopes)?;
    let new_refresh = store
        .rotate(grant.family, iss.refresh_token_ttl)
        .ok_or_else(|| OAuthError::invalid_grant("refresh token is invalid or expired"))?;
    drop(store);
    respond(
        iss,
        Grant {
            subject: grant.subject,
            client_id: client.client_id.clone(),
            audience: grant.resource,
            scopes,
            ttl: iss.access_token_ttl,
        },
        Some(new_refresh),
    )
}

fn client_credentials(
    iss: &Issuer,
    client: &Client,
    params: &Params,
) -> Result<Response, OAuthError> {
    if !client.may_use_operator_grant("client_credentials") {
        return Err(OAuthError::unauthorized_client(
            "client_credentials is only for clients created by the operator with `berth client create`",
        ));
    }
    // `audience` too: what many client-credentials clients send for the
    // target (Berth's own `[servers.NAME.oauth] audience` among them).
    let wanted = crate::exchange::requested_target(params)?.ok_or_else(|| {
        OAuthError::invalid_target(
            "resource (or audience) is required: the URL of the MCP server the token is for",
        )
    })?;
    let audience = iss.resolve_resource(wanted).ok_or_else(|| {
        OAuthError::invalid_target(format!(
            "`{wanted}` is not an MCP server this gateway serves (resource or audience must name one of its /mcp/ URLs)"
        ))
    })?;
    let scopes = requested_scopes(params, &client.allowed_scopes(&iss.scopes_supported))?;
    respond(
        iss,
        Grant {
            subject: client.client_id.clone(),
            client_id: client.client_id.clone(),
            audience,
            scopes,
            ttl: iss.access_token_ttl,
        },
        None,
    )
}

/// The RFC 6749 §5.1 success response.
fn respond(iss: &Issuer, grant: Grant, refresh: Option<String>) -> Result<Response, OAuthError> {
    let access = iss.mint(&grant).map_err(|e| {
        tracing::error!(error = %e, "signing access token");
        OAuthError::server_error("could not sign the access token")
    })?;
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": grant.ttl.as_secs().max(1),
        "scope": grant.scopes.join(" "),
    });
    if let Some(r) = refresh {
        body["refresh_token"] = json!(r);
    }
    Ok(util::no_store(body))
}
