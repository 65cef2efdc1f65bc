//! Reading entries from a registry that speaks the MCP Registry API v0.1:
//! `GET {base}/v0.1/servers?cursor=…&limit=…` pages of
//! `{"servers":[{"server":{…server.json…},"_meta":{…}}],"metadata":{"nextCursor":…}}`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::entry::{Entry, Origin};

/// Pages read at most from one registry (100 servers each): enough for a
/// curated sub-registry, a stop for a registry that never ends its cursor.
pub const MAX_PAGES: usize = 50;
const PAGE_SIZE: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(20);

/// Why a registry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("registry {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("registry {url} did not answer with an MCP Registry v0.1 server list: {reason}")]
    Format { url: String, reason: String },
}

#[derive(Deserialize)]
struct Page {
    servers: Vec<ServerResponse>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize)]
struct ServerResponse {
    server: Value,
    #[serde(default, rename = "_meta")]
    meta: serde_json::Map<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    next_cursor: Option<String>,
}

/// What one registry gave: its usable entries, and what was skipped and why.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub skipped: Vec<String>,
}

/// Reads every server of the registry at `base` (latest versions only where
/// the registry says which is latest).
pub async fn list(base: &str) -> Result<Listing, RegistryError> {
    let base = base.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| RegistryError::Unreachable {
            url: base.to_string(),
            reason: e.to_string(),
        })?;
    let mut listing = Listing::default();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let limit = PAGE_SIZE.to_string();
        let mut params = vec![("limit", limit.as_str())];
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor));
        }
        let url = base.to_string();
        let page_url = reqwest::Url::parse_with_params(&format!("{base}/v0.1/servers"), &params)
            .map_err(|e| RegistryError::Unreachable {
                url: url.clone(),
                reason: format!("not a URL: {e}"),
            })?;
        let response = http
            .get(page_url)
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if !status.is_success() {
            return Err(RegistryError::Status {
                url,
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        let page: Page = serde_json::from_str(&body).map_err(|e| RegistryError::Format {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        for item in page.servers {
            if !is_latest(&item.meta) {
                continue;
            }
            let name = item
                .server
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            match Entry::from_document(item.server, Origin::Registry(url.clone()), None) {
                Ok(entry) => listing.entries.push(entry),
                Err(e) => listing.skipped.push(format!("{name}: {}", e.reason)),
            }
        }
        match page.metadata.next_cursor.filter(|c| !c.is_empty()) {
            Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
            _ => return Ok(listing),
        }
    }
    listing.skipped.push(format!(
        "stopped after {MAX_PAGES} pages of {PAGE_SIZE}: the registry has more"
    ));
    Ok(listing)
}

/// A registry's own metadata may mark older versions; keep the latest, and
/// keep everything when it says nothing.
fn is_latest(meta: &serde_json::Map<String, Value>) -> bool {
    meta.values()
        .filter_map(|v| v.get("isLatest").and_then(Value::as_bool))
        .all(|latest| latest)
}
