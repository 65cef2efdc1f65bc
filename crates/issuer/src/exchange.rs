//! Token exchange (RFC 8693) at the token endpoint.
//!
//! An operator-created client (the gateway, calling a remote upstream on a
//! caller's behalf) presents the caller's access token as `subject_token`
//! and gets a token for another audience. Only tokens this issuer signed are
//! accepted, the new token never outlives or out-scopes the subject token,
//! and its `act` claim names the exchanging client, so the upstream sees
//! both who the caller is and who is calling for them.

use axum::response::Response;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::json;

use crate::clients::{Client, Origin};
use crate::error::OAuthError;
use crate::util::{self, Params};
use crate::{
    ACCESS_TOKEN_TYPE, AccessTokenClaims, Actor, Grant, Issuer, TOKEN_EXCHANGE_GRANT,
    TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT,
};

/// Most actors an exchanged token may name (`act` nested this deep): each
/// exchange adds one, and a token must not grow without bound.
const MAX_ACTOR_DEPTH: usize = 8;

pub(crate) fn token_exchange(
    iss: &Issuer,
    client: &Client,
    params: &Params,
) -> Result<Response, OAuthError> {
    if !client.may_use_operator_grant(TOKEN_EXCHANGE_GRANT) {
        let hint = if client.origin == Origin::Operator {
            // Created before the grant existed: re-creating adds it.
            "; re-create it with `berth client create` (this rotates its secret) to allow it"
        } else {
            ""
        };
        return Err(OAuthError::unauthorized_client(format!(
            "token exchange is only for clients created by the operator with `berth client create`; \
             client `{}` may not use it{hint}",
            client.client_id
        )));
    }
    let get = |n: &str| params.get(n).map_err(OAuthError::invalid_request);
    if get("actor_token")?.is_some() || get("actor_token_type")?.is_some() {
        return Err(OAuthError::invalid_request(
            "actor_token is not supported: the authenticated client is the actor",
        ));
    }
    let subject_token = get("subject_token")?
        .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
    let subject_type = get("subject_token_type")?
        .ok_or_else(|| OAuthError::invalid_request("subject_token_type is required"))?;
    if subject_type != TOKEN_TYPE_ACCESS_TOKEN && subject_type != TOKEN_TYPE_JWT {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type `{subject_type}` is not supported; use \
             {TOKEN_TYPE_ACCESS_TOKEN} or {TOKEN_TYPE_JWT}"
        )));
    }
    if let Some(t) = get("requested_token_type")?
        && t != TOKEN_TYPE_ACCESS_TOKEN
    {
        return Err(OAuthError::invalid_request(format!(
            "requested_token_type `{t}` is not supported; only {TOKEN_TYPE_ACCESS_TOKEN} is issued"
        )));
    }
    let audience = target(iss, params)?;
    let subject = verify_subject(iss, subject_token)?;

    let held = util::split_scopes(&subject.scope);
    let scopes = match get("scope")? {
        None => held,
        Some(s) => {
            let asked = util::split_scopes(s);
            if let Some(bad) = asked.iter().find(|s| !held.contains(s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope `{bad}` exceeds the subject token's scopes ({})",
                    if held.is_empty() {
                        "none".to_owned()
                    } else {
                        held.join(" ")
                    }
                )));
            }
            asked
        }
    };

    let prior = subject.act.map(Box::new);
    if prior.as_ref().is_some_and(|a| a.depth() >= MAX_ACTOR_DEPTH) {
        return Err(OAuthError::invalid_grant(format!(
            "subject_token has already been exchanged {MAX_ACTOR_DEPTH} times; \
             exchange the original token instead"
        )));
    }
    let act = Actor {
        sub: client.client_id.clone(),
        act: prior,
    };
    let grant = Grant {
        subject: subject.sub,
        client_id: client.client_id.clone(),
        audience,
        scopes,
        ttl: iss.access_token_ttl,
    };
    let (token, expires_in) = iss
        .sign_access_token(&grant, Some(act), Some(subject.exp))
        .map_err(|e| {
            tracing::error!(error = %e, "signing exchanged access token");
            OAuthError::server_error("could not sign the access token")
        })?;
    if expires_in == 0 {
        // It expired between the check and the signing.
        return Err(OAuthError::invalid_grant("subject_token has expired"));
    }
    tracing::debug!(
        client_id = %client.client_id,
        audience = %grant.audience,
        "exchanged access token"
    );
    Ok(crate::util::no_store(json!({
        "access_token": token,
        "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": grant.scopes.join(" "),
    })))
}

/// The `aud` of the new token, from `audience` and/or `resource`: one target,
/// which must be a configured resource or exchange audience.
fn target(iss: &Issuer, params: &Params) -> Result<String, OAuthError> {
    let Some(wanted) = requested_target(params)? else {
        return Err(OAuthError::invalid_request(
            "audience or resource is required: the URL of the service the token is for",
        ));
    };
    iss.resolve_exchange_target(wanted).ok_or_else(|| {
        let allowed = iss.exchange_audience_list();
        let allowed = if allowed.is_empty() {
            "none configured".to_owned()
        } else {
            allowed.join(", ")
        };
        OAuthError::invalid_target(format!(
            "audience `{wanted}` is not one this issuer mints exchanged tokens for; \
             allowed: {allowed} (or a resource this gateway serves)"
        ))
    })
}

/// The one target a token request names with `audience` (RFC 8693, and what
/// many OAuth clients send for client credentials) and/or `resource` (RFC
/// 8707); both may be given when they name the same. `None` when neither is.
pub(crate) fn requested_target(params: &Params) -> Result<Option<&str>, OAuthError> {
    let audiences = params.get_all("audience");
    let resources = params.get_all("resource");
    if audiences.len() > 1 || resources.len() > 1 {
        return Err(OAuthError::invalid_target(
            "only one audience (or resource) per request is supported",
        ));
    }
    if let Some(r) = resources.first()
        && url::Url::parse(r).is_err()
    {
        return Err(OAuthError::invalid_target(format!(
            "resource `{r}` is not an absolute URI (RFC 8707)"
        )));
    }
    match (audiences.first(), resources.first()) {
        (Some(a), Some(r)) if crate::exchange_key(a) != crate::exchange_key(r) => {
            Err(OAuthError::invalid_target(format!(
                "audience `{a}` and resource `{r}` name different targets; send one, or both naming the same"
            )))
        }
        (Some(a), _) => Ok(Some(*a)),
        (None, r) => Ok(r.copied()),
    }
}

/// The claims of `token` if it is an unexpired access token this issuer
/// signed (for any audience). Errors describe why, never quoting the token.
fn verify_subject(iss: &Issuer, token: &str) -> Result<AccessTokenClaims, OAuthError> {
    let bad = OAuthError::invalid_grant;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| bad("subject_token is not a JWT access token from this issuer"))?;
    // RFC 9068 §4: `at+jwt`, or the full media type.
    let typ = header.typ.as_deref().unwrap_or_default();
    if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
        && !typ.eq_ignore_ascii_case(&format!("application/{ACCESS_TOKEN_TYPE}"))
    {
        return Err(bad(
            "subject_token is not an access token (its JOSE typ is not at+jwt)",
        ));
    }
    let mut v = Validation::new(Algorithm::ES256);
    // Same process, same clock: no leeway, so an expired token is refused
    // and the new one never outlives it.
    v.leeway = 0;
    v.validate_aud = false;
    v.set_issuer(&[iss.issuer()]);
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let claims = match jsonwebtoken::decode::<AccessTokenClaims>(token, iss.key.decoding_key(), &v)
    {
        Ok(d) => d.claims,
        Err(e) => {
            let why = match e.kind() {
                ErrorKind::InvalidSignature => {
                    "subject_token's signature does not verify with this issuer's key \
                     (signed by another key, or altered)"
                        .to_owned()
                }
                ErrorKind::ExpiredSignature => "subject_token has expired".to_owned(),
                ErrorKind::ImmatureSignature => "subject_token is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidIssuer => format!(
                    "subject_token was issued by another issuer (this one is `{}`)",
                    iss.issuer()
                ),
                ErrorKind::InvalidAlgorithm => {
                    "subject_token is not signed with ES256 by this issuer".to_owned()
                }
                _ => "subject_token is not a valid access token from this issuer".to_owned(),
            };
            return Err(OAuthError::invalid_grant(why));
        }
    };
    if claims.exp <= util::unix_now() {
        return Err(bad("subject_token has expired"));
    }
    Ok(claims)
}
