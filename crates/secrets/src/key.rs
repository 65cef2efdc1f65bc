//! The master key: where it comes from, how it is decoded, and the key file.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::{SecretError, io_error};

/// The environment variable that, when set, holds the master key.
pub(crate) const MASTER_KEY_ENV: &str = "BERTH_MASTER_KEY";

/// The key file's name inside the data directory.
pub(crate) const KEY_FILE: &str = "master.key";

/// What a master key must look like, for error messages.
pub(crate) const ACCEPTED_KEY_FORMATS: &str = "32 bytes written as base64 (standard or URL-safe, \
     with or without padding) or as 64 hex characters; `openssl rand -base64 32` makes one";

/// A 32-byte key that is wiped from memory when dropped.
pub(crate) type MasterKey = Zeroizing<[u8; 32]>;

/// Where the key in use came from, so that a mismatch names what to fix.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    Env,
    File(PathBuf),
    Explicit,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => f.write_str(MASTER_KEY_ENV),
            KeySource::File(path) => write!(f, "{}", path.display()),
            KeySource::Explicit => f.write_str("the key given to SecretStore::with_key"),
        }
    }
}

/// Decodes a key written as 64 hex characters or as base64 in any common
/// dialect; surrounding whitespace (a trailing newline) is ignored.
fn decode_key(text: &str) -> Option<MasterKey> {
    let text = text.trim();
    let mut key = MasterKey::default();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        for (byte, pair) in key.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        return Some(key);
    }
    // 64 hex characters are also valid base64 but decode to 48 bytes, so
    // the two formats never both fit.
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(bytes) = engine.decode(text) {
            let bytes = Zeroizing::new(bytes);
            if bytes.len() == key.len() {
                key.copy_from_slice(&bytes);
                return Some(key);
            }
        }
    }
    None
}

/// The value of a digit already checked to be hex.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Parses the value of `BERTH_MASTER_KEY`.
///
/// The error names the accepted formats and never echoes the value.
pub(crate) fn parse_master_key(text: &str) -> Result<[u8; 32], SecretError> {
    decode_key(text)
        .map(|key| *key)
        .ok_or(SecretError::InvalidMasterKey)
}

/// Reads the key from `BERTH_MASTER_KEY`, or else from `<data_dir>/master.key`,
/// creating that file on first use.
pub(crate) fn load(data_dir: &Path) -> Result<(MasterKey, KeySource), SecretError> {
    match std::env::var(MASTER_KEY_ENV) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            Ok((Zeroizing::new(parse_master_key(&text)?), KeySource::Env))
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::InvalidMasterKey),
        Err(std::env::VarError::NotPresent) => {
            let path = data_dir.join(KEY_FILE);
            let key = load_or_create_key_file(data_dir, &path)?;
            Ok((key, KeySource::File(path)))
        }
    }
}

fn load_or_create_key_file(data_dir: &Path, path: &Path) -> Result<MasterKey, SecretError> {
    if let Some(key) = read_key_file(path)? {
        return Ok(key);
    }
    // Two first runs at once must agree on one key: create it under the
    // store lock, and look again once we hold it.
    crate::create_data_dir(data_dir)?;
    let _lock = crate::lock_store(data_dir)?;
    if let Some(key) = read_key_file(path)? {
        return Ok(key);
    }
    // A new key could never decrypt an existing store; say so now rather
    // than on every read.
    let store_path = data_dir.join(crate::STORE_FILE);
    let store_exists = store_path
        .try_exists()
        .map_err(|e| io_error("read the secrets store", &store_path, e))?;
    if store_exists {
        return Err(SecretError::KeyFileMissing {
            key_path: path.to_owned(),
            store_path,
        });
    }
    create_key_file(path)
}

/// Reads an existing key file; `None` if there is none.
fn read_key_file(path: &Path) -> Result<Option<MasterKey>, SecretError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read the master key file", path, e)),
    };
    // Checked on the open file, so it is the mode of what we read.
    let mode = file
        .metadata()
        .map_err(|e| io_error("read the master key file", path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SecretError::KeyFileTooOpen {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    // Room for any sane key file up front, so the string never reallocates
    // and leaves an unwiped copy of the key behind.
    const LIMIT: usize = 1024;
    let mut text = Zeroizing::new(String::with_capacity(LIMIT));
    file.take(LIMIT as u64)
        .read_to_string(&mut text)
        .map_err(|e| io_error("read the master key file", path, e))?;
    decode_key(&text)
        .map(Some)
        .ok_or_else(|| SecretError::InvalidKeyFile {
            path: path.to_owned(),
        })
}

/// Creates a key file holding a new random key as one base64 line.
fn create_key_file(path: &Path) -> Result<MasterKey, SecretError> {
    let mut key = MasterKey::default();
    crate::fill_random(&mut key[..])?;
    let mut text = Zeroizing::new(String::with_capacity(64));
    STANDARD.encode_string(&key[..], &mut text);
    text.push('\n');

    // Never overwrites a key; private from the start and complete or absent,
    // so a half-written key file is never refused on a later start.
    berth_files::create_private_new(path, text.as_bytes())
        .map_err(|e| io_error("create the master key file", path, e))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [
        0x00, 0x01, 0x02, 0x03, 0xfb, 0xfc, 0xfd, 0xfe, 0xff, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60,
        0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x3e, 0x3f, 0x7e, 0x7f, 0xbe, 0xbf,
        0xfe, 0xff,
    ];

    #[test]
    fn accepts_every_base64_dialect_and_hex() {
        let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
        let texts = [
            STANDARD.encode(KEY),
            STANDARD_NO_PAD.encode(KEY),
            URL_SAFE.encode(KEY),
            URL_SAFE_NO_PAD.encode(KEY),
            hex.clone(),
            hex.to_uppercase(),
            format!("  {}\n", STANDARD.encode(KEY)),
        ];
        // The key has bytes that differ between the standard and URL-safe
        // alphabets, so each dialect is really exercised.
        assert_ne!(STANDARD.encode(KEY), URL_SAFE.encode(KEY));
        for text in texts {
            assert_eq!(parse_master_key(&text).unwrap(), KEY, "{text}");
        }
    }

    #[test]
    fn rejects_anything_else_without_echoing_it() {
        let short = STANDARD.encode([7u8; 16]);
        let long = STANDARD.encode([7u8; 33]);
        let hex_63 = "a".repeat(63);
        let not_hex = "g".repeat(64);
        for text in [
            "",
            "   ",
            "correct horse battery staple",
            &short,
            &long,
            &hex_63,
            &not_hex,
        ] {
            let err = parse_master_key(text).unwrap_err();
            assert!(matches!(err, SecretError::InvalidMasterKey), "{text}");
            let message = err.to_string();
            assert!(message.contains("BERTH_MASTER_KEY"), "{message}");
            assert!(message.contains("base64"), "{message}");
            assert!(message.contains("64 hex characters"), "{message}");
            if !text.trim().is_empty() {
                assert!(!message.contains(text), "{message}");
            }
        }
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let path = data_dir.join(KEY_FILE);
        let first = load_or_create_key_file(&data_dir, &path).unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&data_dir).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o077, 0, "data dir mode {dir_mode:o}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", STANDARD.encode(*first)));

        let second = load_or_create_key_file(&data_dir, &path).unwrap();
        assert_eq!(*first, *second);
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        load_or_create_key_file(dir.path(), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let err = load_or_create_key_file(dir.path(), &path).unwrap_err();
        assert!(matches!(err, SecretError::KeyFileTooOpen { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        assert!(message.contains("644"), "{message}");
    }

    #[test]
    fn garbage_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_or_create_key_file(dir.path(), &path).unwrap_err();
        assert!(matches!(err, SecretError::InvalidKeyFile { .. }), "{err:?}");
        assert!(!err.to_string().contains("not a key"));
    }

    #[test]
    fn no_new_key_for_an_existing_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(crate::STORE_FILE),
            r#"{"version":1,"secrets":{}}"#,
        )
        .unwrap();
        let path = dir.path().join(KEY_FILE);
        let err = load_or_create_key_file(dir.path(), &path).unwrap_err();
        assert!(matches!(err, SecretError::KeyFileMissing { .. }), "{err:?}");
        assert!(!path.exists());
    }
}
