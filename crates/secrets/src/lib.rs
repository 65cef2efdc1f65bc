//! Berth's secrets store: named values kept encrypted at rest.
//!
//! Each value is sealed with XChaCha20-Poly1305 under a 32-byte master key,
//! with a fresh random 24-byte nonce and the record's key bound in as
//! associated data, so a record copied to another key no longer decrypts.
//! The store is `<data_dir>/secrets.json`:
//!
//! ```json
//! {"version":1,"secrets":{"NAME":{"nonce":"<base64>","ciphertext":"<base64>"},
//!                         "NAME@PRINCIPAL":{"nonce":"<base64>","ciphertext":"<base64>"}}}
//! ```
//!
//! A secret has an optional shared value (key `NAME`) and any number of
//! per-principal values (key `NAME@PRINCIPAL`, see [`SecretStore::set_for`]).
//! Names never contain `@`, so the two kinds of key cannot collide and the
//! first `@` splits a key. Which value a caller gets is the gateway's choice;
//! the store only keeps them apart.
//!
//! The master key comes from `BERTH_MASTER_KEY` (base64 or 64 hex
//! characters) or else from `<data_dir>/master.key`, which is created with
//! mode 0600 on first use and refused if others can read it.
//!
//! Configuration refers to secrets as `${secret:NAME}`; see [`expand`]:
//!
//! ```
//! use berth_secrets::{ExposeSecret, SecretStore, expand};
//!
//! let dir = tempfile::tempdir()?;
//! let store = SecretStore::with_key(dir.path(), [7; 32]);
//! store.set("API_KEY", "abc123")?;
//! let header = expand("Bearer ${secret:API_KEY}", |name| {
//!     let value = store.get(name).ok()??;
//!     Some(value.expose_secret().to_owned())
//! })?;
//! assert_eq!(header, "Bearer abc123");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod key;
mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use secrecy::{ExposeSecret, SecretString};
pub use template::{MissingSecret, expand, references};

use key::{ACCEPTED_KEY_FORMATS, KeySource, MASTER_KEY_ENV};

/// The store file's name inside the data directory.
const STORE_FILE: &str = "secrets.json";

/// Taken around every read-modify-write of the store, and while creating the key file.
const LOCK_FILE: &str = "secrets.lock";

/// The store file format this code reads and writes.
const STORE_VERSION: u64 = 1;

/// Prefixed to the name to form each record's associated data.
const AAD_PREFIX: &[u8] = b"berth-secret/v1/";

const MAX_NAME_LEN: usize = 128;

/// Separates the name from the principal in a per-principal record's key.
const PRINCIPAL_SEPARATOR: char = '@';

const MAX_PRINCIPAL_LEN: usize = 256;

/// How much of a rejected principal an error message repeats.
const SHOWN_PRINCIPAL_LEN: usize = 64;

/// Why a secrets store operation failed.
///
/// Messages say what to do next and never contain a secret value or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The name has characters or a length the store doesn't allow.
    #[error(
        "invalid secret name `{name}`: use 1 to {MAX_NAME_LEN} characters from A-Z, a-z, 0-9, `_`, `.` and `-`"
    )]
    InvalidName { name: String },

    /// The principal is empty, too long, or has control characters.
    #[error(
        "invalid principal {}: use 1 to {MAX_PRINCIPAL_LEN} characters and no control characters; \
         give the caller's subject (an API key's name, a token's `sub`) or its full id as \
         `berth usage` shows it (e.g. `key:alice`)",
        shown_principal(principal)
    )]
    InvalidPrincipal { principal: String },

    /// `BERTH_MASTER_KEY` is set but is not a 32-byte key in an accepted format.
    #[error("{MASTER_KEY_ENV} is not a valid master key: expected {ACCEPTED_KEY_FORMATS}")]
    InvalidMasterKey,

    /// The key file exists but doesn't hold a key.
    #[error("master key file {} is not a valid master key: expected {ACCEPTED_KEY_FORMATS}", path.display())]
    InvalidKeyFile { path: PathBuf },

    /// The key file can be read by the group or others.
    #[error(
        "master key file {path} can be read by other users (mode {mode:o}); restrict it with `chmod 600 {path}`",
        path = path.display()
    )]
    KeyFileTooOpen { path: PathBuf, mode: u32 },

    /// There is a store but no key file, and no `BERTH_MASTER_KEY`.
    #[error(
        "the secrets store {store} exists but its master key file {key} does not: set {MASTER_KEY_ENV} \
         to the key the store was made with, or restore {key} (delete {store} to start over)",
        store = store_path.display(),
        key = key_path.display()
    )]
    KeyFileMissing {
        key_path: PathBuf,
        store_path: PathBuf,
    },

    /// A record did not decrypt: a different key, or an altered record.
    #[error(
        "cannot decrypt secret `{name}`{}: the master key does not match the one it was stored with \
         ({key_source}), or the stored record was altered",
        for_principal(principal.as_deref())
    )]
    KeyMismatch {
        name: String,
        /// `None` for the shared value.
        principal: Option<String>,
        key_source: String,
    },

    /// The store file is not what this code writes.
    #[error("secrets store {} is damaged: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },

    /// The store file was written by a newer Berth.
    #[error(
        "secrets store {} has format version {version}, but this Berth reads version {STORE_VERSION}; upgrade Berth",
        path.display()
    )]
    UnsupportedVersion { path: PathBuf, version: u64 },

    /// The operating system could not provide random bytes.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),

    /// Encryption refused the value (only possible for absurdly large values).
    #[error(
        "cannot encrypt secret `{name}`{}: the value is too large",
        for_principal(principal.as_deref())
    )]
    Encrypt {
        name: String,
        /// `None` for the shared value.
        principal: Option<String>,
    },

    /// A file system operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Builds [`SecretError::Io`].
fn io_error(action: &'static str, path: &Path, source: io::Error) -> SecretError {
    SecretError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// `" for principal `P`"`, or nothing for a shared value.
fn for_principal(principal: Option<&str>) -> String {
    principal
        .map(|p| format!(" for principal `{p}`"))
        .unwrap_or_default()
}

/// A rejected principal as an error shows it: escaped (it may hold control
/// characters) and cut short (it may be very long).
fn shown_principal(principal: &str) -> String {
    let mut chars = principal.chars();
    let head: String = chars.by_ref().take(SHOWN_PRINCIPAL_LEN).collect();
    let more = if chars.next().is_some() { "..." } else { "" };
    format!("\"{}\"{more}", head.escape_debug())
}

/// One value in the store: a name and, for a per-principal value, whose it is.
///
/// Orders by name, then the shared value (`None`) before principals'.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretEntry {
    pub name: String,
    /// `None` for the shared value.
    pub principal: Option<String>,
}

/// Where a value lives: the name and, for a per-principal value, whose.
/// Only built from a validated name and principal.
#[derive(Clone, Copy)]
struct Slot<'a> {
    name: &'a str,
    principal: Option<&'a str>,
}

impl<'a> Slot<'a> {
    fn new(name: &'a str, principal: Option<&'a str>) -> Result<Slot<'a>, SecretError> {
        validate_name(name)?;
        if let Some(principal) = principal {
            validate_principal(principal)?;
        }
        Ok(Slot { name, principal })
    }

    /// The record's key in the store file, also its associated data.
    fn key(self) -> String {
        match self.principal {
            None => self.name.to_owned(),
            Some(principal) => format!("{}{PRINCIPAL_SEPARATOR}{principal}", self.name),
        }
    }

    /// How messages name it: "`NAME`" or "`NAME` for principal `P`".
    fn label(self) -> String {
        format!("`{}`{}", self.name, for_principal(self.principal))
    }
}

/// An encrypted secrets store in a data directory.
pub struct SecretStore {
    dir: PathBuf,
    path: PathBuf,
    /// Holds the only copy of the key; wiped on drop (`zeroize` feature).
    cipher: XChaCha20Poly1305,
    key_source: KeySource,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStore")
            .field("path", &self.path)
            .field("key_source", &self.key_source.to_string())
            .finish_non_exhaustive()
    }
}

/// The store file as it is on disk.
#[derive(Serialize, Deserialize)]
struct StoreFile {
    version: u64,
    /// A BTreeMap keeps the file's order stable, so diffs and backups stay quiet.
    secrets: BTreeMap<String, Record>,
}

/// One encrypted secret.
#[derive(Serialize, Deserialize)]
struct Record {
    nonce: String,
    ciphertext: String,
}

impl SecretStore {
    /// Opens (does not create the store file until the first set) the store in data_dir.
    ///
    /// The key is `BERTH_MASTER_KEY` if set, else `<data_dir>/master.key`,
    /// which is created (and `data_dir` with mode 0700) if absent.
    pub fn open(data_dir: &Path) -> Result<SecretStore, SecretError> {
        let (key, source) = key::load(data_dir)?;
        Ok(Self::from_key(data_dir, &key, source))
    }

    /// Like open but with an explicit key (tests).
    pub fn with_key(data_dir: &Path, key: [u8; 32]) -> SecretStore {
        let key = Zeroizing::new(key);
        Self::from_key(data_dir, &key, KeySource::Explicit)
    }

    fn from_key(data_dir: &Path, key: &[u8; 32], key_source: KeySource) -> SecretStore {
        SecretStore {
            dir: data_dir.to_owned(),
            path: data_dir.join(STORE_FILE),
            cipher: XChaCha20Poly1305::new(key.into()),
            key_source,
        }
    }

    /// The store file, `<data_dir>/secrets.json` (which may not exist yet).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `value` as `name`'s shared value, replacing any previous one.
    pub fn set(&self, name: &str, value: &str) -> Result<(), SecretError> {
        self.set_for(name, None, value)
    }

    /// Stores `value` as `principal`'s own value of `name` (the shared value
    /// when `principal` is `None`), replacing any previous one. The shared
    /// value and each principal's are independent.
    pub fn set_for(
        &self,
        name: &str,
        principal: Option<&str>,
        value: &str,
    ) -> Result<(), SecretError> {
        let slot = Slot::new(name, principal)?;
        create_data_dir(&self.dir)?;
        let _lock = lock_store(&self.dir)?;
        let mut store = self.read()?;
        let record = self.encrypt(slot, value)?;
        store.secrets.insert(slot.key(), record);
        self.write(&store)
    }

    /// The shared value stored under `name`, if any.
    ///
    /// Reads the file each time (the CLI may change it while the gateway
    /// runs). Takes no lock: writes replace the file whole, by rename.
    pub fn get(&self, name: &str) -> Result<Option<SecretString>, SecretError> {
        self.get_slot(Slot::new(name, None)?)
    }

    /// `principal`'s own value of `name`, if any; never the shared value
    /// (falling back to it is the caller's choice).
    ///
    /// A principal that [`validate_principal`] rejects cannot have a value
    /// of its own, so for it this is `Ok(None)`, not an error: a caller with
    /// an odd subject still gets the shared value from a fallback.
    pub fn get_for(
        &self,
        name: &str,
        principal: &str,
    ) -> Result<Option<SecretString>, SecretError> {
        validate_name(name)?;
        if validate_principal(principal).is_err() {
            return Ok(None);
        }
        self.get_slot(Slot {
            name,
            principal: Some(principal),
        })
    }

    fn get_slot(&self, slot: Slot<'_>) -> Result<Option<SecretString>, SecretError> {
        match self.read()?.secrets.get(&slot.key()) {
            Some(record) => self.decrypt(slot, record).map(Some),
            None => Ok(None),
        }
    }

    /// The names that have a value, shared or any principal's: each once, sorted.
    ///
    /// A name listed here may have no shared value ([`get`](Self::get) is
    /// then `None`); [`entries`](Self::entries) tells the values apart.
    pub fn names(&self) -> Result<Vec<String>, SecretError> {
        let names: BTreeSet<String> = self.entries()?.into_iter().map(|e| e.name).collect();
        Ok(names.into_iter().collect())
    }

    /// Every value in the store (never the value itself), sorted by name,
    /// then the shared value before principals' in order.
    pub fn entries(&self) -> Result<Vec<SecretEntry>, SecretError> {
        let mut entries: Vec<SecretEntry> = self
            .read()?
            .secrets
            .into_keys()
            .map(|key| match key.split_once(PRINCIPAL_SEPARATOR) {
                Some((name, principal)) => SecretEntry {
                    name: name.to_owned(),
                    principal: Some(principal.to_owned()),
                },
                None => SecretEntry {
                    name: key,
                    principal: None,
                },
            })
            .collect();
        // The file's key order is not this one: `A.b` sorts before `A@p`.
        entries.sort();
        Ok(entries)
    }

    /// Removes `name`'s shared value, leaving principals' values; `false`
    /// if there was none.
    pub fn remove(&self, name: &str) -> Result<bool, SecretError> {
        self.remove_for(name, None)
    }

    /// Removes `principal`'s own value of `name` (the shared value when
    /// `principal` is `None`), leaving the others; `false` if it was not there.
    pub fn remove_for(&self, name: &str, principal: Option<&str>) -> Result<bool, SecretError> {
        let slot = Slot::new(name, principal)?;
        let exists = self
            .path
            .try_exists()
            .map_err(|e| io_error("read the secrets store", &self.path, e))?;
        if !exists {
            // Nothing to remove, and no reason to create the data directory.
            return Ok(false);
        }
        let _lock = lock_store(&self.dir)?;
        let mut store = self.read()?;
        if store.secrets.remove(&slot.key()).is_none() {
            return Ok(false);
        }
        self.write(&store)?;
        Ok(true)
    }

    /// Reads the store file; a missing file is an empty store.
    fn read(&self) -> Result<StoreFile, SecretError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(StoreFile {
                    version: STORE_VERSION,
                    secrets: BTreeMap::new(),
                });
            }
            Err(e) => return Err(io_error("read the secrets store", &self.path, e)),
        };
        let corrupt = |e: serde_json::Error| SecretError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        // The version first: a newer format may not parse as this one.
        #[derive(Deserialize)]
        struct Version {
            version: u64,
        }
        let Version { version } = serde_json::from_slice(&bytes).map_err(corrupt)?;
        if version != STORE_VERSION {
            return Err(SecretError::UnsupportedVersion {
                path: self.path.clone(),
                version,
            });
        }
        serde_json::from_slice(&bytes).map_err(corrupt)
    }

    /// Replaces the store file atomically: a reader sees the old file or the
    /// new one, never a partial write, even if we crash midway.
    fn write(&self, store: &StoreFile) -> Result<(), SecretError> {
        let action = "write the secrets store";
        let mut json =
            serde_json::to_vec_pretty(store).map_err(|e| io_error(action, &self.path, e.into()))?;
        json.push(b'\n');
        berth_files::write_private(&self.path, &json).map_err(|e| io_error(action, &self.path, e))
    }

    fn encrypt(&self, slot: Slot<'_>, value: &str) -> Result<Record, SecretError> {
        let mut nonce = XNonce::default();
        fill_random(&mut nonce)?;
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad(&slot.key()),
                },
            )
            .map_err(|_| SecretError::Encrypt {
                name: slot.name.to_owned(),
                principal: slot.principal.map(str::to_owned),
            })?;
        Ok(Record {
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ciphertext),
        })
    }

    fn decrypt(&self, slot: Slot<'_>, record: &Record) -> Result<SecretString, SecretError> {
        let corrupt = |detail: &str| SecretError::Corrupt {
            path: self.path.clone(),
            detail: format!("secret {} {detail}", slot.label()),
        };
        let nonce = STANDARD
            .decode(&record.nonce)
            .map_err(|_| corrupt("has a nonce that is not base64"))?;
        let nonce = XNonce::try_from(nonce.as_slice())
            .map_err(|_| corrupt("has a nonce that is not 24 bytes"))?;
        let ciphertext = STANDARD
            .decode(&record.ciphertext)
            .map_err(|_| corrupt("has a ciphertext that is not base64"))?;
        let plaintext = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &ciphertext,
                    aad: &aad(&slot.key()),
                },
            )
            .map_err(|_| SecretError::KeyMismatch {
                name: slot.name.to_owned(),
                principal: slot.principal.map(str::to_owned),
                key_source: self.key_source.to_string(),
            })?;
        let plaintext = Zeroizing::new(plaintext);
        // Only `set_for` writes records and it takes a &str, so this holds for
        // anything that decrypted.
        let value =
            std::str::from_utf8(&plaintext).map_err(|_| corrupt("does not decrypt to UTF-8"))?;
        Ok(SecretString::from(value))
    }
}

/// The associated data for the record under `key`: binds the ciphertext to
/// its whole key, name and principal, so it cannot move to another of either.
fn aad(key: &str) -> Vec<u8> {
    [AAD_PREFIX, key.as_bytes()].concat()
}

/// Checks that `name` is 1 to 128 characters from `[A-Za-z0-9_.-]`.
pub fn validate_name(name: &str) -> Result<(), SecretError> {
    let valid_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    if (1..=MAX_NAME_LEN).contains(&name.len()) && name.bytes().all(valid_char) {
        Ok(())
    } else {
        Err(SecretError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Checks that `principal` is 1 to 256 characters, none of them a control
/// character; any other UTF-8 is allowed (`alice`, `key:alice`, `https://idp|sub`).
pub fn validate_principal(principal: &str) -> Result<(), SecretError> {
    let mut count = 0;
    for c in principal.chars() {
        count += 1;
        if c.is_control() || count > MAX_PRINCIPAL_LEN {
            return Err(SecretError::InvalidPrincipal {
                principal: principal.to_owned(),
            });
        }
    }
    if count == 0 {
        return Err(SecretError::InvalidPrincipal {
            principal: String::new(),
        });
    }
    Ok(())
}

/// Creates the data directory (mode 0700) if absent; an existing one is left as it is.
fn create_data_dir(dir: &Path) -> Result<(), SecretError> {
    berth_files::create_private_dir(dir).map_err(|e| io_error("create the data directory", dir, e))
}

/// Takes the store's advisory lock, blocking until it is free; the lock is
/// released when the returned file is dropped. It keeps two CLI runs from
/// each reading the store and the second write losing the first's change.
fn lock_store(dir: &Path) -> Result<berth_files::LockFile, SecretError> {
    let path = dir.join(LOCK_FILE);
    berth_files::lock_exclusive(&path).map_err(|e| io_error("lock the lock file", &path, e))
}

/// Fills `buf` from the operating system's random number generator.
fn fill_random(buf: &mut [u8]) -> Result<(), SecretError> {
    getrandom::fill(buf).map_err(|e| SecretError::Random(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KEY: [u8; 32] = [7; 32];
    const OTHER_KEY: [u8; 32] = [8; 32];
    /// Distinctive enough that finding it in a file means it leaked.
    const VALUE: &str = "sk-live-PLAINTEXT-CANARY-4f1c9e2a";

    fn store_in(dir: &Path) -> SecretStore {
        SecretStore::with_key(dir, KEY)
    }

    fn raw_file(store: &SecretStore) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap()
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        assert!(!store.path().exists(), "open must not create the file");
        assert_eq!(store.names().unwrap(), Vec::<String>::new());
        assert!(store.get("API_TOKEN").unwrap().is_none());

        store.set("API_TOKEN", VALUE).unwrap();
        store.set("db.password", "").unwrap();
        store.set("Z-9_.x", "ünïcödé ✓").unwrap();
        let get = |name| store.get(name).unwrap().unwrap().expose_secret().to_owned();
        assert_eq!(get("API_TOKEN"), VALUE);
        assert_eq!(get("db.password"), "");
        assert_eq!(get("Z-9_.x"), "ünïcödé ✓");
        assert_eq!(
            store.names().unwrap(),
            ["API_TOKEN", "Z-9_.x", "db.password"]
        );

        store.set("API_TOKEN", "rotated").unwrap();
        assert_eq!(get("API_TOKEN"), "rotated");

        // A second handle sees the first one's writes: nothing is cached.
        let other = store_in(dir.path());
        assert_eq!(
            other.get("API_TOKEN").unwrap().unwrap().expose_secret(),
            "rotated"
        );

        assert!(store.remove("API_TOKEN").unwrap());
        assert!(!store.remove("API_TOKEN").unwrap());
        assert!(other.get("API_TOKEN").unwrap().is_none());
        assert_eq!(store.names().unwrap(), ["Z-9_.x", "db.password"]);
    }

    #[test]
    fn file_has_the_documented_shape_and_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store.set("API_TOKEN", VALUE).unwrap();

        let bytes = std::fs::read(store.path()).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains(VALUE));
        assert!(!text.contains("CANARY"));

        let json = raw_file(&store);
        assert_eq!(json["version"], 1);
        let record = &json["secrets"]["API_TOKEN"];
        let nonce = STANDARD.decode(record["nonce"].as_str().unwrap()).unwrap();
        assert_eq!(nonce.len(), 24);
        let ciphertext = STANDARD
            .decode(record["ciphertext"].as_str().unwrap())
            .unwrap();
        assert_eq!(ciphertext.len(), VALUE.len() + 16, "value plus the tag");

        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Only the store and its lock: no temp file left behind.
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, [STORE_FILE, LOCK_FILE]);
    }

    #[test]
    fn nonces_are_fresh_per_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store.set("A", VALUE).unwrap();
        let first = raw_file(&store)["secrets"]["A"].clone();
        store.set("A", VALUE).unwrap();
        let second = raw_file(&store)["secrets"]["A"].clone();
        assert_ne!(first["nonce"], second["nonce"]);
        assert_ne!(first["ciphertext"], second["ciphertext"]);
    }

    #[test]
    fn wrong_key_fails_with_mismatch_and_no_leak() {
        let dir = tempfile::tempdir().unwrap();
        store_in(dir.path()).set("API_TOKEN", VALUE).unwrap();

        let other = SecretStore::with_key(dir.path(), OTHER_KEY);
        let err = other.get("API_TOKEN").unwrap_err();
        assert!(matches!(err, SecretError::KeyMismatch { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(
                "cannot decrypt secret `API_TOKEN`: the master key does not match the one it was stored with"
            ),
            "{message}"
        );
        for shown in [message, format!("{err:?}"), format!("{other:?}")] {
            assert!(!shown.contains(VALUE), "{shown}");
            assert!(!shown.contains("CANARY"), "{shown}");
            assert!(!shown.contains(&STANDARD.encode(KEY)), "{shown}");
            assert!(!shown.contains(&STANDARD.encode(OTHER_KEY)), "{shown}");
        }
        // Names are not secret and still list under the wrong key.
        assert_eq!(other.names().unwrap(), ["API_TOKEN"]);
    }

    #[test]
    fn mismatch_names_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::from_key(
            dir.path(),
            &KEY,
            KeySource::File(dir.path().join("master.key")),
        );
        store.set("A", VALUE).unwrap();
        let other = SecretStore::from_key(
            dir.path(),
            &OTHER_KEY,
            KeySource::File(dir.path().join("master.key")),
        );
        let message = other.get("A").unwrap_err().to_string();
        assert!(
            message.contains(&format!("({})", dir.path().join("master.key").display())),
            "{message}"
        );
        let env = SecretStore::from_key(dir.path(), &OTHER_KEY, KeySource::Env);
        let message = env.get("A").unwrap_err().to_string();
        assert!(message.contains("(BERTH_MASTER_KEY)"), "{message}");
    }

    /// Rewrites one record's field in the store file.
    fn edit_record(store: &SecretStore, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut json = raw_file(store);
        edit(&mut json["secrets"]);
        std::fs::write(store.path(), serde_json::to_vec(&json).unwrap()).unwrap();
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store.set("API_TOKEN", VALUE).unwrap();
        edit_record(&store, |secrets| {
            let field = &mut secrets["API_TOKEN"]["ciphertext"];
            let mut bytes = STANDARD.decode(field.as_str().unwrap()).unwrap();
            bytes[0] ^= 1;
            *field = STANDARD.encode(bytes).into();
        });
        let err = store.get("API_TOKEN").unwrap_err();
        assert!(matches!(err, SecretError::KeyMismatch { .. }), "{err:?}");
        assert!(!err.to_string().contains(VALUE));
    }

    #[test]
    fn record_moved_to_another_name_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store.set("GITHUB_TOKEN", VALUE).unwrap();
        store.set("PUBLIC_LABEL", "harmless").unwrap();
        // Someone with write access to the file swaps the records.
        edit_record(&store, |secrets| {
            let token = secrets["GITHUB_TOKEN"].clone();
            secrets["PUBLIC_LABEL"] = token;
        });
        let err = store.get("PUBLIC_LABEL").unwrap_err();
        assert!(matches!(err, SecretError::KeyMismatch { .. }), "{err:?}");
        assert!(!err.to_string().contains(VALUE));
        // The record still decrypts under its own name.
        assert_eq!(
            store.get("GITHUB_TOKEN").unwrap().unwrap().expose_secret(),
            VALUE
        );
    }

    #[test]
    fn malformed_records_and_files_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store.set("A", VALUE).unwrap();
        edit_record(&store, |secrets| {
            secrets["A"]["nonce"] = STANDARD.encode([0u8; 12]).into();
        });
        let err = store.get("A").unwrap_err();
        assert!(matches!(err, SecretError::Corrupt { .. }), "{err:?}");

        std::fs::write(store.path(), "{not json").unwrap();
        let err = store.names().unwrap_err();
        assert!(matches!(err, SecretError::Corrupt { .. }), "{err:?}");

        std::fs::write(store.path(), r#"{"version":2,"whatever":[]}"#).unwrap();
        let err = store.get("A").unwrap_err();
        assert!(
            matches!(err, SecretError::UnsupportedVersion { version: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn names_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        let longest = "a".repeat(128);
        for good in ["A", "a.b-c_d", "0", "...", &longest] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(129);
        for bad in ["", "has space", "a/b", "ä", "a:b", "${x}", "a\n", &too_long] {
            let err = validate_name(bad).unwrap_err();
            assert!(err.to_string().contains("`_`, `.` and `-`"), "{bad}: {err}");
            assert!(matches!(
                store.set(bad, "v"),
                Err(SecretError::InvalidName { .. })
            ));
            assert!(matches!(
                store.get(bad),
                Err(SecretError::InvalidName { .. })
            ));
            assert!(matches!(
                store.remove(bad),
                Err(SecretError::InvalidName { .. })
            ));
        }
        assert!(!store.path().exists());
    }

    #[test]
    fn set_creates_a_private_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested/data");
        let store = SecretStore::with_key(&data_dir, KEY);
        assert!(!store.remove("A").unwrap());
        assert!(
            !data_dir.exists(),
            "remove on an empty store creates nothing"
        );
        store.set("A", VALUE).unwrap();
        let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }

    #[test]
    fn concurrent_sets_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let dir = dir.path();
                scope.spawn(move || {
                    // A handle per thread, like separate CLI processes.
                    let store = SecretStore::with_key(dir, KEY);
                    for i in 0..10 {
                        store.set(&format!("T{thread}_{i}"), "v").unwrap();
                    }
                });
            }
        });
        assert_eq!(store_in(dir.path()).names().unwrap().len(), 40);
    }

    fn entry(name: &str, principal: Option<&str>) -> SecretEntry {
        SecretEntry {
            name: name.to_owned(),
            principal: principal.map(str::to_owned),
        }
    }

    #[test]
    fn shared_and_per_principal_values_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        let shown = |v: Option<SecretString>| v.map(|v| v.expose_secret().to_owned());

        store
            .set_for("github_pat", Some("alice"), "alice-pat")
            .unwrap();
        // Her own value only: no shared value to be confused with yet.
        assert!(store.get("github_pat").unwrap().is_none());
        assert_eq!(
            shown(store.get_for("github_pat", "alice").unwrap()).as_deref(),
            Some("alice-pat")
        );
        assert!(store.get_for("github_pat", "bob").unwrap().is_none());

        store.set("github_pat", "shared-pat").unwrap();
        store.set_for("github_pat", None, "shared-pat-2").unwrap();
        store
            .set_for("github_pat", Some("key:alice"), "key-alice-pat")
            .unwrap();
        // A principal may itself contain `@`: the first one splits the key.
        store
            .set_for("github_pat", Some("bob@idp"), "bob-pat")
            .unwrap();
        store.set_for("github_pat.v2", Some("alice"), "v2").unwrap();
        store.set("A", "a").unwrap();

        assert_eq!(
            shown(store.get("github_pat").unwrap()).as_deref(),
            Some("shared-pat-2")
        );
        for (principal, value) in [
            ("alice", "alice-pat"),
            ("key:alice", "key-alice-pat"),
            ("bob@idp", "bob-pat"),
        ] {
            assert_eq!(
                shown(store.get_for("github_pat", principal).unwrap()).as_deref(),
                Some(value),
                "{principal}"
            );
        }
        // No fallback to the shared value, and no prefix matching.
        assert!(store.get_for("github_pat", "bob").unwrap().is_none());
        assert!(store.get_for("github_pat", "alic").unwrap().is_none());
        assert!(store.get_for("github_pat.v2", "bob").unwrap().is_none());
        assert!(store.get("github_pat.v2").unwrap().is_none());

        // Sorted by name, then shared first, then principals; `github_pat.v2`
        // comes after every `github_pat` value though `.` sorts before `@`.
        assert_eq!(
            store.entries().unwrap(),
            [
                entry("A", None),
                entry("github_pat", None),
                entry("github_pat", Some("alice")),
                entry("github_pat", Some("bob@idp")),
                entry("github_pat", Some("key:alice")),
                entry("github_pat.v2", Some("alice")),
            ]
        );
        assert_eq!(store.names().unwrap(), ["A", "github_pat", "github_pat.v2"]);

        // Removing the shared value leaves the principals' values, and back.
        assert!(store.remove("github_pat").unwrap());
        assert!(!store.remove_for("github_pat", None).unwrap());
        assert!(store.get("github_pat").unwrap().is_none());
        assert_eq!(
            shown(store.get_for("github_pat", "alice").unwrap()).as_deref(),
            Some("alice-pat")
        );
        store.set("github_pat", "shared-again").unwrap();
        assert!(store.remove_for("github_pat", Some("alice")).unwrap());
        assert!(!store.remove_for("github_pat", Some("alice")).unwrap());
        assert!(!store.remove_for("github_pat", Some("nobody")).unwrap());
        assert!(store.get_for("github_pat", "alice").unwrap().is_none());
        assert_eq!(
            shown(store.get("github_pat").unwrap()).as_deref(),
            Some("shared-again")
        );
        assert_eq!(
            shown(store.get_for("github_pat", "key:alice").unwrap()).as_deref(),
            Some("key-alice-pat")
        );

        // A name with only principals' values is still a name.
        assert!(store.remove("A").unwrap());
        assert!(store.remove("github_pat").unwrap());
        assert_eq!(store.names().unwrap(), ["github_pat", "github_pat.v2"]);
        assert!(store.get("github_pat").unwrap().is_none());
    }

    #[test]
    fn per_principal_records_are_keyed_and_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store.set_for("TOKEN", Some("alice"), VALUE).unwrap();
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(VALUE) && !text.contains("CANARY"), "{text}");
        let json = raw_file(&store);
        assert_eq!(json["version"], 1, "the format version is unchanged");
        let keys: Vec<&String> = json["secrets"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["TOKEN@alice"]);
        let ciphertext = STANDARD
            .decode(
                json["secrets"]["TOKEN@alice"]["ciphertext"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(ciphertext.len(), VALUE.len() + 16);
        // `get` cannot reach it: `@` is not allowed in a name.
        assert!(matches!(
            store.get("TOKEN@alice"),
            Err(SecretError::InvalidName { .. })
        ));
    }

    #[test]
    fn per_principal_record_moved_to_another_key_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        store.set_for("TOKEN", Some("alice"), VALUE).unwrap();
        store.set_for("TOKEN", Some("bob"), "bobs").unwrap();
        store.set("TOKEN", "shared").unwrap();
        store.set("OTHER", "other").unwrap();
        edit_record(&store, |secrets| {
            let alice = secrets["TOKEN@alice"].clone();
            // To another principal, to the shared value, to another name.
            secrets["TOKEN@bob"] = alice.clone();
            secrets["TOKEN@mallory"] = alice.clone();
            secrets["TOKEN"] = alice.clone();
            secrets["OTHER@alice"] = alice;
        });
        for (name, principal) in [
            ("TOKEN", Some("bob")),
            ("TOKEN", Some("mallory")),
            ("TOKEN", None),
            ("OTHER", Some("alice")),
        ] {
            let err = match principal {
                Some(p) => store.get_for(name, p).unwrap_err(),
                None => store.get(name).unwrap_err(),
            };
            assert!(matches!(err, SecretError::KeyMismatch { .. }), "{err:?}");
            let message = err.to_string();
            assert!(!message.contains(VALUE), "{message}");
            let expected = match principal {
                Some(p) => format!("cannot decrypt secret `{name}` for principal `{p}`: "),
                None => format!("cannot decrypt secret `{name}`: "),
            };
            assert!(message.starts_with(&expected), "{message}");
        }
        // A shared record moved onto a principal fails too.
        edit_record(&store, |secrets| {
            secrets["OTHER@carol"] = secrets["OTHER"].clone();
        });
        assert!(matches!(
            store.get_for("OTHER", "carol"),
            Err(SecretError::KeyMismatch { .. })
        ));
        // The original still decrypts where it was stored.
        assert_eq!(
            store
                .get_for("TOKEN", "alice")
                .unwrap()
                .unwrap()
                .expose_secret(),
            VALUE
        );
        assert_eq!(
            store.get("OTHER").unwrap().unwrap().expose_secret(),
            "other"
        );
    }

    #[test]
    fn principals_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        let longest = "é".repeat(256);
        for good in [
            "alice",
            "key:alice",
            "https://idp.example|sub-123",
            "a@b",
            " spaced out ",
            "ünïcödé ✓",
            &longest,
        ] {
            assert!(validate_principal(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(257);
        for bad in [
            "",
            "a\nb",
            "tab\there",
            "nul\0",
            "del\u{7f}",
            "c1\u{85}",
            &too_long,
        ] {
            let err = validate_principal(bad).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("use 1 to 256 characters and no control characters")
                    && message.contains("`key:alice`"),
                "{message}"
            );
            assert!(
                !message.contains('\n') && !message.contains('\0'),
                "{message}"
            );
            assert!(matches!(
                store.set_for("A", Some(bad), "v"),
                Err(SecretError::InvalidPrincipal { .. })
            ));
            assert!(matches!(
                store.remove_for("A", Some(bad)),
                Err(SecretError::InvalidPrincipal { .. })
            ));
            // No value can be stored for it, so it has none.
            assert!(store.get_for("A", bad).unwrap().is_none());
        }
        assert!(!store.path().exists(), "nothing was written");

        // The message escapes and shortens what it repeats.
        let message = validate_principal(&too_long).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("invalid principal \"{}\"...: ", "a".repeat(64))),
            "{message}"
        );
        let message = validate_principal("a\nb").unwrap_err().to_string();
        assert!(
            message.starts_with(r#"invalid principal "a\nb": "#),
            "{message}"
        );
        // Names are still checked first, and with their own message.
        assert!(matches!(
            store.get_for("bad name", "alice"),
            Err(SecretError::InvalidName { .. })
        ));
        assert!(matches!(
            store.set_for("a@b", Some("alice"), "v"),
            Err(SecretError::InvalidName { .. })
        ));
    }

    #[test]
    fn open_uses_the_key_file() {
        // Only when the environment doesn't supply a key; tests never set it.
        if std::env::var_os(MASTER_KEY_ENV).is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::open(dir.path()).unwrap();
        store.set("A", VALUE).unwrap();
        let reopened = SecretStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("A").unwrap().unwrap().expose_secret(), VALUE);
        let key_file = std::fs::read_to_string(dir.path().join(key::KEY_FILE)).unwrap();
        assert!(
            !std::fs::read_to_string(store.path())
                .unwrap()
                .contains(key_file.trim())
        );
    }
}
