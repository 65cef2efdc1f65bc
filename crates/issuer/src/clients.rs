//! Registered OAuth clients, persisted in `<data_dir>/oauth-clients.json`.
//!
//! Both the gateway (dynamic registration) and the CLI (`berth client
//! create`) write this file, possibly at the same time, so every change is a
//! read-modify-write under an exclusive `flock` on a sibling lock file,
//! published by an atomic rename. Readers notice a changed file by its
//! inode/size/mtime and reload it, so a client the CLI adds, replaces or
//! removes takes effect in a running gateway on its next request.
//!
//! Secrets are never stored: only their SHA-256 (hex).

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::IssuerError;
use crate::util;

/// File name of the clients file under the data dir.
pub(crate) const CLIENTS_FILE: &str = "oauth-clients.json";
const LOCK_FILE: &str = ".oauth-clients.lock";

/// At most this many dynamically registered clients are kept; registering
/// one more forgets the oldest. Open registration must not grow the file
/// without bound.
pub(crate) const MAX_DYNAMIC_CLIENTS: usize = 2000;

/// Who created a client, which decides what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Origin {
    /// Open dynamic registration (RFC 7591): authorization_code/refresh_token only.
    Dynamic,
    /// `berth client create`: client_credentials and token exchange.
    Operator,
}

/// One registered client as stored on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Client {
    pub client_id: String,
    /// SHA-256 hex of the secret; `None` for a public client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_sha256: Option<String>,
    pub token_endpoint_auth_method: String,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub response_types: Vec<String>,
    /// Registered scopes, space-separated; `None` = every supported scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    pub client_id_issued_at: u64,
    pub origin: Origin,
}

impl Client {
    pub(crate) fn is_confidential(&self) -> bool {
        self.client_secret_sha256.is_some()
    }

    pub(crate) fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// Whether this client may use `grant`, one of the grants kept for
    /// confidential clients the operator created (client credentials, token
    /// exchange).
    pub(crate) fn may_use_operator_grant(&self, grant: &str) -> bool {
        self.origin == Origin::Operator && self.is_confidential() && self.allows_grant(grant)
    }

    /// Whether `secret` is this client's secret (constant time).
    pub(crate) fn secret_matches(&self, secret: &str) -> bool {
        match &self.client_secret_sha256 {
            Some(stored) => util::secrets_equal(util::sha256_hex(secret.as_bytes()), stored),
            None => false,
        }
    }

    /// The scopes this client may ask for: its registered ones, else all
    /// supported ones.
    pub(crate) fn allowed_scopes(&self, supported: &[String]) -> Vec<String> {
        match &self.scope {
            Some(s) => util::split_scopes(s),
            None => supported.to_vec(),
        }
    }

    /// What the consent page calls this client.
    pub(crate) fn display_name(&self) -> &str {
        self.client_name.as_deref().unwrap_or(&self.client_id)
    }
}

#[derive(Serialize, Deserialize)]
struct ClientsFile {
    version: u32,
    clients: Vec<Client>,
}

/// Identity of one version of the clients file, to notice changes cheaply.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

struct Loaded {
    clients: HashMap<String, Client>,
    stamp: Option<Stamp>,
}

/// The clients file and an in-memory copy of it.
pub(crate) struct ClientStore {
    path: PathBuf,
    lock_path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl ClientStore {
    /// Loads the clients file under `data_dir` (missing = no clients).
    pub(crate) fn open(data_dir: &Path) -> Result<Self, IssuerError> {
        let path = data_dir.join(CLIENTS_FILE);
        let (clients, stamp) = read_file(&path)?;
        Ok(ClientStore {
            lock_path: data_dir.join(LOCK_FILE),
            path,
            loaded: Mutex::new(Loaded { clients, stamp }),
        })
    }

    /// The client `client_id`, reloading the file first if another process
    /// changed it.
    pub(crate) fn get(&self, client_id: &str) -> Option<Client> {
        self.refreshed().clients.get(client_id).cloned()
    }

    /// The in-memory copy, reloaded first if the file changed.
    fn refreshed(&self) -> std::sync::MutexGuard<'_, Loaded> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let current = stamp(&self.path);
        if current != loaded.stamp {
            match read_file(&self.path) {
                Ok((clients, stamp)) => {
                    loaded.clients = clients;
                    loaded.stamp = stamp;
                }
                // Keep serving what we had; a broken hand edit should not
                // lock every client out.
                Err(e) => tracing::warn!(error = %e, "keeping previous OAuth clients"),
            }
        }
        loaded
    }

    /// The operator-created (`client_credentials`) client whose secret is
    /// `secret`, if any. Every candidate is compared, in constant time.
    pub(crate) fn find_operator_client_by_secret(&self, secret: &str) -> Option<Client> {
        let loaded = self.refreshed();
        let hash = util::sha256_hex(secret.as_bytes());
        let mut found = None;
        for c in loaded.clients.values() {
            let matches = c
                .client_secret_sha256
                .as_deref()
                .is_some_and(|h| util::secrets_equal(h, &hash));
            if matches && c.origin == Origin::Operator && found.is_none() {
                found = Some(c.clone());
            }
        }
        found
    }

    /// Adds or replaces `client`, then trims dynamic clients to
    /// [`MAX_DYNAMIC_CLIENTS`]. `may_replace` decides whether an existing
    /// client with the same id may be overwritten. Blocking file I/O.
    pub(crate) fn upsert(
        &self,
        client: Client,
        may_replace: impl FnOnce(&Client) -> Result<(), IssuerError>,
    ) -> Result<(), IssuerError> {
        let _lock = berth_files::lock_exclusive(&self.lock_path)
            .map_err(|e| IssuerError::io("locking", &self.lock_path, e))?;
        let (mut clients, _) = read_file(&self.path)?;
        if let Some(existing) = clients.get(&client.client_id) {
            may_replace(existing)?;
        }
        clients.insert(client.client_id.clone(), client);
        evict_dynamic(&mut clients);
        self.write(&clients)?;
        let stamp = stamp(&self.path);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.clients = clients;
        loaded.stamp = stamp;
        Ok(())
    }

    /// Writes `clients` atomically: private temp file, fsync, rename, fsync dir.
    fn write(&self, clients: &HashMap<String, Client>) -> Result<(), IssuerError> {
        let mut list: Vec<Client> = clients.values().cloned().collect();
        list.sort_by(|a, b| {
            (a.client_id_issued_at, &a.client_id).cmp(&(b.client_id_issued_at, &b.client_id))
        });
        let body = serde_json::to_vec_pretty(&ClientsFile {
            version: 1,
            clients: list,
        })
        .map_err(|e| IssuerError::BadClientsFile {
            path: self.path.clone(),
            reason: format!("serialising: {e}"),
        })?;
        let mut body = body;
        body.push(b'\n');
        berth_files::write_private(&self.path, &body)
            .map_err(|e| IssuerError::io("writing", &self.path, e))?;
        Ok(())
    }
}

/// Forgets the oldest dynamically registered clients beyond the cap.
fn evict_dynamic(clients: &mut HashMap<String, Client>) {
    let mut dynamic: Vec<(u64, String)> = clients
        .values()
        .filter(|c| c.origin == Origin::Dynamic)
        .map(|c| (c.client_id_issued_at, c.client_id.clone()))
        .collect();
    if dynamic.len() <= MAX_DYNAMIC_CLIENTS {
        return;
    }
    dynamic.sort();
    let excess = dynamic.len() - MAX_DYNAMIC_CLIENTS;
    for (_, id) in dynamic.into_iter().take(excess) {
        tracing::info!(client_id = %id, "forgetting oldest dynamically registered OAuth client");
        clients.remove(&id);
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

type ClientMap = HashMap<String, Client>;

fn read_file(path: &Path) -> Result<(ClientMap, Option<Stamp>), IssuerError> {
    // Stamp first: if the file changes while we read, the next `get` sees a
    // newer stamp and reads again.
    let st = stamp(path);
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((HashMap::new(), None)),
        Err(e) => return Err(IssuerError::io("reading", path, e)),
    };
    let file: ClientsFile =
        serde_json::from_slice(&bytes).map_err(|e| IssuerError::BadClientsFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let clients = file
        .clients
        .into_iter()
        .map(|c| (c.client_id.clone(), c))
        .collect();
    Ok((clients, st))
}
