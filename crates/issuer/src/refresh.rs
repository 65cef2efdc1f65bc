//! Refresh tokens: rotating families (OAuth 2.1 §4.3.1), kept across restarts.
//!
//! Only SHA-256 digests of tokens are stored. Every change is appended to a
//! journal, `<data_dir>/oauth-refresh.jsonl` (mode 0600), one JSON record per
//! line, flushed to disk before the token is handed out; the journal is
//! replayed on first use and compacted (rewritten with the live families,
//! atomically) when dead records outnumber live ones. A restart therefore
//! keeps every client's refresh token and every revocation.
//!
//! The journal is opened on first use, so a process that never touches
//! refresh tokens (the CLI minting a token) never reads or rewrites it. One
//! gateway per data directory.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::util;

/// At most this many refresh token families (one per authorization) are kept.
const MAX_REFRESH_FAMILIES: usize = 50_000;
/// Superseded refresh tokens remembered per family, to detect reuse.
const REMEMBERED_ROTATIONS: usize = 8;
/// The journal's file name in the data directory.
pub(crate) const JOURNAL_FILE: &str = "oauth-refresh.jsonl";
/// Compaction happens once the journal has this many records more than
/// twice the live families.
const COMPACT_SLACK: usize = if cfg!(test) { 16 } else { 1024 };

type Digest = [u8; 32];

/// The chain of refresh tokens from one authorization. Only the newest is
/// valid; presenting an older one means a copy leaked, so the whole family
/// is revoked.
struct Family {
    client_id: String,
    subject: String,
    resource: String,
    scopes: Vec<String>,
    current: Digest,
    previous: VecDeque<Digest>,
    /// Unix seconds.
    expires: u64,
}

/// What a family grants, copied out of the store.
pub(crate) struct RefreshGrant {
    pub(crate) family: u64,
    pub(crate) client_id: String,
    pub(crate) subject: String,
    pub(crate) resource: String,
    pub(crate) scopes: Vec<String>,
}

pub(crate) enum Lookup {
    Invalid,
    /// An already-rotated token: the family has been revoked.
    Reused,
    Current(RefreshGrant),
}

/// One journal line.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Create {
        family: u64,
        client_id: String,
        subject: String,
        resource: String,
        scopes: Vec<String>,
        /// base64url SHA-256 of the current token.
        current: String,
        /// Superseded tokens' digests (written by compaction).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        previous: Vec<String>,
        expires: u64,
    },
    Rotate {
        family: u64,
        current: String,
        expires: u64,
    },
    Revoke {
        family: u64,
    },
}

enum Journal {
    /// Not read yet: read on first use.
    Unopened(PathBuf),
    Open {
        path: PathBuf,
        file: File,
        records: usize,
    },
    /// Reading or writing failed; tokens live in memory until restart.
    MemoryOnly,
}

impl Journal {
    /// After an I/O error: logs it once and keeps tokens in memory only.
    fn degraded(what: &str, path: &Path, error: &std::io::Error) -> Journal {
        tracing::error!(
            path = %path.display(),
            %error,
            "cannot {what} the refresh token journal; refresh tokens will not survive a restart"
        );
        Journal::MemoryOnly
    }
}

/// Refresh tokens indexed by SHA-256 (the tokens themselves are never kept).
pub(crate) struct RefreshTokens {
    families: HashMap<u64, Family>,
    index: HashMap<Digest, u64>,
    next_family: u64,
    journal: Journal,
}

impl RefreshTokens {
    /// Tokens journaled under `data_dir` (read on first use).
    pub(crate) fn new(data_dir: &Path) -> Self {
        RefreshTokens {
            families: HashMap::new(),
            index: HashMap::new(),
            next_family: 0,
            journal: Journal::Unopened(data_dir.join(JOURNAL_FILE)),
        }
    }

    /// Starts a family; returns its id and first token, `None` if full.
    pub(crate) fn create(
        &mut self,
        client_id: &str,
        subject: &str,
        resource: &str,
        scopes: &[String],
        ttl: Duration,
    ) -> Option<(u64, String)> {
        self.load();
        let now = util::unix_now();
        if self.families.len() >= MAX_REFRESH_FAMILIES {
            let expired: Vec<u64> = self
                .families
                .iter()
                .filter(|(_, f)| f.expires <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                self.forget(id);
            }
            self.compact();
            if self.families.len() >= MAX_REFRESH_FAMILIES {
                return None;
            }
        }
        let token = util::random_token(32);
        let hash = util::sha256(token.as_bytes());
        let id = self.next_family;
        let family = Family {
            client_id: client_id.to_owned(),
            subject: subject.to_owned(),
            resource: resource.to_owned(),
            scopes: scopes.to_vec(),
            current: hash,
            previous: VecDeque::new(),
            expires: now.saturating_add(ttl.as_secs()),
        };
        self.append(&create_record(id, &family));
        self.next_family += 1;
        self.families.insert(id, family);
        self.index.insert(hash, id);
        Some((id, token))
    }

    pub(crate) fn lookup(&mut self, token: &str) -> Lookup {
        self.load();
        let hash = util::sha256(token.as_bytes());
        let Some(&id) = self.index.get(&hash) else {
            return Lookup::Invalid;
        };
        let Some(f) = self.families.get(&id) else {
            self.index.remove(&hash);
            return Lookup::Invalid;
        };
        if f.expires <= util::unix_now() {
            self.revoke(id);
            return Lookup::Invalid;
        }
        if f.current != hash {
            self.revoke(id);
            return Lookup::Reused;
        }
        Lookup::Current(RefreshGrant {
            family: id,
            client_id: f.client_id.clone(),
            subject: f.subject.clone(),
            resource: f.resource.clone(),
            scopes: f.scopes.clone(),
        })
    }

    /// Replaces the family's token with a new one (lifetime renewed).
    pub(crate) fn rotate(&mut self, id: u64, ttl: Duration) -> Option<String> {
        self.load();
        let token = util::random_token(32);
        let hash = util::sha256(token.as_bytes());
        let expires = util::unix_now().saturating_add(ttl.as_secs());
        if !self.families.contains_key(&id) {
            return None;
        }
        self.append(&Record::Rotate {
            family: id,
            current: encode(&hash),
            expires,
        });
        let f = self.families.get_mut(&id)?;
        let forgotten = apply_rotation(f, hash, expires);
        if let Some(old) = forgotten {
            self.index.remove(&old);
        }
        self.index.insert(hash, id);
        Some(token)
    }

    /// Revokes every token of family `id`.
    pub(crate) fn revoke(&mut self, id: u64) {
        self.load();
        if self.families.contains_key(&id) {
            self.append(&Record::Revoke { family: id });
            self.forget(id);
        }
    }

    /// Removes family `id` from memory (the journal is the caller's concern).
    fn forget(&mut self, id: u64) {
        if let Some(f) = self.families.remove(&id) {
            self.index.remove(&f.current);
            for h in f.previous {
                self.index.remove(&h);
            }
        }
    }

    /// Replays the journal once, then compacts it.
    fn load(&mut self) {
        let Journal::Unopened(path) = &self.journal else {
            return;
        };
        let path = path.clone();
        match replay(&path) {
            Ok(replayed) => {
                let now = util::unix_now();
                for (id, f) in replayed.families {
                    if f.expires > now {
                        for h in f.previous.iter().chain([&f.current]) {
                            self.index.insert(*h, id);
                        }
                        self.families.insert(id, f);
                    }
                }
                self.next_family = replayed.next_family;
                if replayed.skipped > 0 {
                    tracing::warn!(
                        path = %path.display(),
                        skipped = replayed.skipped,
                        "refresh token journal had unreadable lines (a crash mid-write?); they were skipped"
                    );
                }
                // Rewriting now drops expired and revoked families and any
                // torn line, and leaves an open handle to append to.
                self.rewrite(path);
            }
            Err(e) => {
                self.journal = Journal::degraded("read", &path, &e);
            }
        }
    }

    /// Appends `record`, flushes it to disk, and compacts the journal when
    /// it has grown well past the live families.
    fn append(&mut self, record: &Record) {
        let Journal::Open {
            file,
            records,
            path,
        } = &mut self.journal
        else {
            return;
        };
        let mut line = serde_json::to_vec(record).expect("records serialise");
        line.push(b'\n');
        match file.write_all(&line).and_then(|()| file.sync_data()) {
            Ok(()) => {
                *records += 1;
                self.compact();
            }
            Err(e) => {
                self.journal = Journal::degraded("write", path, &e);
            }
        }
    }

    /// Rewrites the journal with only the live families when it has grown
    /// well past them.
    fn compact(&mut self) {
        let Journal::Open { records, path, .. } = &self.journal else {
            return;
        };
        if *records <= self.families.len() * 2 + COMPACT_SLACK {
            return;
        }
        let path = path.clone();
        self.rewrite(path);
    }

    /// Writes every live family to a private temp file, fsyncs it and
    /// renames it over the journal, then appends to the new file.
    fn rewrite(&mut self, path: PathBuf) {
        let now = util::unix_now();
        let mut ids: Vec<u64> = self
            .families
            .iter()
            .filter(|(_, f)| f.expires > now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let mut body = Vec::new();
        for id in &ids {
            let record = create_record(*id, &self.families[id]);
            serde_json::to_writer(&mut body, &record).expect("records serialise");
            body.push(b'\n');
        }
        let result = berth_files::write_private(&path, &body)
            .and_then(|()| OpenOptions::new().append(true).open(&path));
        match result {
            Ok(file) => {
                self.journal = Journal::Open {
                    path,
                    file,
                    records: ids.len(),
                };
            }
            Err(e) => {
                self.journal = Journal::degraded("write", &path, &e);
            }
        }
    }
}

/// Moves `f` to token `hash`; returns the digest that fell out of memory.
fn apply_rotation(f: &mut Family, hash: Digest, expires: u64) -> Option<Digest> {
    f.previous.push_back(f.current);
    f.current = hash;
    f.expires = expires;
    if f.previous.len() > REMEMBERED_ROTATIONS {
        f.previous.pop_front()
    } else {
        None
    }
}

fn create_record(id: u64, f: &Family) -> Record {
    Record::Create {
        family: id,
        client_id: f.client_id.clone(),
        subject: f.subject.clone(),
        resource: f.resource.clone(),
        scopes: f.scopes.clone(),
        current: encode(&f.current),
        previous: f.previous.iter().map(encode).collect(),
        expires: f.expires,
    }
}

fn encode(digest: &Digest) -> String {
    URL_SAFE_NO_PAD.encode(digest)
}

fn decode(text: &str) -> Option<Digest> {
    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()
}

struct Replayed {
    families: HashMap<u64, Family>,
    next_family: u64,
    /// Lines that did not parse.
    skipped: usize,
}

/// Reads the journal; a missing file is an empty store.
fn replay(path: &Path) -> std::io::Result<Replayed> {
    let mut out = Replayed {
        families: HashMap::new(),
        next_family: 0,
        skipped: 0,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<Record>(&line) else {
            out.skipped += 1;
            continue;
        };
        match record {
            Record::Create {
                family,
                client_id,
                subject,
                resource,
                scopes,
                current,
                previous,
                expires,
            } => {
                let (Some(current), Some(previous)) = (
                    decode(&current),
                    previous.iter().map(|p| decode(p)).collect::<Option<_>>(),
                ) else {
                    out.skipped += 1;
                    continue;
                };
                out.next_family = out.next_family.max(family.saturating_add(1));
                out.families.insert(
                    family,
                    Family {
                        client_id,
                        subject,
                        resource,
                        scopes,
                        current,
                        previous,
                        expires,
                    },
                );
            }
            Record::Rotate {
                family,
                current,
                expires,
            } => match (out.families.get_mut(&family), decode(&current)) {
                (Some(f), Some(hash)) => {
                    apply_rotation(f, hash, expires);
                }
                (None, _) => {}
                (_, None) => out.skipped += 1,
            },
            Record::Revoke { family } => {
                out.families.remove(&family);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const TTL: Duration = Duration::from_secs(3600);

    fn scopes() -> Vec<String> {
        vec!["tools:call".into()]
    }

    #[test]
    fn tokens_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (id, first) = {
            let mut store = RefreshTokens::new(dir.path());
            let (id, first) = store
                .create("c", "s", "http://r/mcp/a", &scopes(), TTL)
                .unwrap();
            (id, first)
        };
        let mut store = RefreshTokens::new(dir.path());
        let Lookup::Current(grant) = store.lookup(&first) else {
            panic!("token lost across restart");
        };
        assert_eq!(grant.family, id);
        assert_eq!(grant.client_id, "c");
        assert_eq!(grant.resource, "http://r/mcp/a");
        assert_eq!(grant.scopes, scopes());
        let second = store.rotate(id, TTL).unwrap();
        drop(store);

        // The rotation was journaled: the old token is now a replay, and a
        // replay revokes the family for good, across a restart too.
        let mut store = RefreshTokens::new(dir.path());
        assert!(matches!(store.lookup(&first), Lookup::Reused));
        drop(store);
        let mut store = RefreshTokens::new(dir.path());
        assert!(matches!(store.lookup(&second), Lookup::Invalid));
        // Family ids are never reused after a restart.
        let (next, _) = store.create("c", "s", "r", &scopes(), TTL).unwrap();
        assert!(next > id);
    }

    #[test]
    fn the_journal_is_private_and_holds_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RefreshTokens::new(dir.path());
        let (id, token) = store.create("c", "s", "r", &scopes(), TTL).unwrap();
        let rotated = store.rotate(id, TTL).unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&token) && !text.contains(&rotated), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "journal mode {mode:o}");
    }

    #[test]
    fn a_torn_line_loses_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RefreshTokens::new(dir.path());
        let (_, kept) = store.create("c", "s", "r", &scopes(), TTL).unwrap();
        drop(store);
        let path = dir.path().join(JOURNAL_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"op":"create","family":7,"client"#)
            .unwrap();
        drop(f);
        let mut store = RefreshTokens::new(dir.path());
        assert!(matches!(store.lookup(&kept), Lookup::Current(_)));
        // Loading compacted the torn line away.
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(serde_json::from_str::<serde_json::Value>(text.trim()).is_ok());
    }

    #[test]
    fn expired_and_revoked_families_are_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RefreshTokens::new(dir.path());
        let (gone, _) = store.create("c", "s", "r", &scopes(), TTL).unwrap();
        let (_, expired) = store
            .create("c", "s", "r", &scopes(), Duration::ZERO)
            .unwrap();
        let (_, live) = store.create("c", "s", "r", &scopes(), TTL).unwrap();
        store.revoke(gone);
        drop(store);
        let mut store = RefreshTokens::new(dir.path());
        assert!(matches!(store.lookup(&expired), Lookup::Invalid));
        assert!(matches!(store.lookup(&live), Lookup::Current(_)));
        let text = fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn rotations_do_not_grow_the_journal_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = RefreshTokens::new(dir.path());
        let (id, _) = store.create("c", "s", "r", &scopes(), TTL).unwrap();
        let mut token = String::new();
        for _ in 0..200 {
            token = store.rotate(id, TTL).unwrap();
        }
        let text = fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
        assert!(
            text.lines().count() <= 2 + COMPACT_SLACK + 1,
            "{} records for one family",
            text.lines().count()
        );
        drop(store);
        // Compaction kept the current token and the superseded ones.
        let mut store = RefreshTokens::new(dir.path());
        assert!(matches!(store.lookup(&token), Lookup::Current(_)));
    }

    #[test]
    fn an_unreadable_journal_degrades_to_memory() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the journal should be: reading fails.
        fs::create_dir(dir.path().join(JOURNAL_FILE)).unwrap();
        let mut store = RefreshTokens::new(dir.path());
        let (_, token) = store.create("c", "s", "r", &scopes(), TTL).unwrap();
        assert!(matches!(store.lookup(&token), Lookup::Current(_)));
    }
}
