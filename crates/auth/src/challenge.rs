//! Refusals and the `WWW-Authenticate` challenges that go with them
//! (RFC 6750 §3, RFC 9728 §5.1).

use axum::http::StatusCode;

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No credential at all: 401 with a bare challenge, so the client starts
    /// discovery from `resource_metadata`.
    Missing,
    /// A credential that is not valid here (expired, for another server,
    /// badly signed...): 401 `invalid_token`.
    InvalidToken(String),
    /// Valid, but without these scopes: 403 `insufficient_scope` (step-up).
    InsufficientScope(Vec<String>),
    /// The issuer's keys or introspection endpoint cannot be reached: 503.
    Unavailable(String),
}

impl Denial {
    pub fn status(&self) -> StatusCode {
        match self {
            Denial::Missing | Denial::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Denial::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Denial::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A sentence for the JSON-RPC error body.
    pub fn message(&self) -> String {
        match self {
            Denial::Missing => "Unauthorized: this server requires a bearer token (Authorization: Bearer ...); see WWW-Authenticate for where to get one".into(),
            Denial::InvalidToken(why) => format!("Unauthorized: invalid token: {why}"),
            Denial::InsufficientScope(scopes) => format!(
                "Forbidden: the token lacks scope(s) {}; request a token with them",
                scopes.join(" ")
            ),
            Denial::Unavailable(why) => format!(
                "Service Unavailable: cannot validate tokens right now ({why}); retry shortly"
            ),
        }
    }

    /// The `WWW-Authenticate` value: where the resource metadata is and
    /// which scopes to ask for.
    pub fn www_authenticate(&self, metadata_url: &str, scopes: &[String]) -> Option<String> {
        let mut value = String::from("Bearer");
        let mut param = |name: &str, v: &str| {
            let sep = if value.len() == "Bearer".len() {
                " "
            } else {
                ", "
            };
            value.push_str(sep);
            value.push_str(name);
            value.push_str("=\"");
            value.push_str(&quoted(v));
            value.push('"');
        };
        match self {
            Denial::Missing => {}
            Denial::InvalidToken(why) => {
                param("error", "invalid_token");
                param("error_description", why);
            }
            Denial::InsufficientScope(_) => param("error", "insufficient_scope"),
            Denial::Unavailable(_) => return None,
        }
        param("resource_metadata", metadata_url);
        if !scopes.is_empty() {
            param("scope", &scopes.join(" "));
        }
        Some(value)
    }
}

/// Makes `text` safe inside a quoted-string of a header: no quotes,
/// backslashes or control characters.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() || !c.is_ascii() => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_name_metadata_and_scopes() {
        let url = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp/github";
        let scopes = vec!["tools:call".to_string(), "github:write".to_string()];
        assert_eq!(
            Denial::Missing.www_authenticate(url, &scopes).unwrap(),
            format!(r#"Bearer resource_metadata="{url}", scope="tools:call github:write""#)
        );
        assert_eq!(
            Denial::InvalidToken("token \"expired\"".into())
                .www_authenticate(url, &[])
                .unwrap(),
            format!(
                r#"Bearer error="invalid_token", error_description="token 'expired'", resource_metadata="{url}""#
            )
        );
        let step_up = Denial::InsufficientScope(vec!["github:write".into()]);
        assert_eq!(step_up.status(), StatusCode::FORBIDDEN);
        assert!(
            step_up
                .www_authenticate(url, &scopes)
                .unwrap()
                .starts_with(r#"Bearer error="insufficient_scope", resource_metadata="#)
        );
    }
}
