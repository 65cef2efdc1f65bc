//! The ES256 signing key: created once under the data dir, reused after.
//!
//! The key lives in `<data_dir>/issuer-key.pem` as PKCS#8 PEM, mode 0600.
//! A key file that group or others can read is refused rather than used:
//! whoever can read it can mint tokens for every server on the node.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use p256::SecretKey;
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};

use crate::error::IssuerError;
use crate::util;

/// File name of the signing key under the data dir.
pub(crate) const KEY_FILE: &str = "issuer-key.pem";

/// The issuer's signing key with its public half as a JWK.
pub(crate) struct SigningKey {
    encoding: EncodingKey,
    /// The public half, to verify tokens this issuer signed (token exchange).
    decoding: DecodingKey,
    kid: String,
    jwk: Jwk,
}

impl SigningKey {
    /// Loads `<data_dir>/issuer-key.pem`, creating the data dir (0700) and the
    /// key (0600) if absent.
    pub(crate) fn load_or_create(data_dir: &Path) -> Result<Self, IssuerError> {
        ensure_private_dir(data_dir)?;
        let path = data_dir.join(KEY_FILE);
        let secret = match read_key(&path)? {
            Some(k) => k,
            None => create_key(&path)?,
        };
        Self::from_secret(&secret, &path)
    }

    fn from_secret(secret: &SecretKey, path: &Path) -> Result<Self, IssuerError> {
        let bad = |reason: String| IssuerError::BadKey {
            path: path.to_owned(),
            reason,
        };
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| bad(format!("encoding PKCS#8: {e}")))?;
        let encoding = EncodingKey::from_ec_der(der.as_bytes());

        let point = secret.public_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err(bad("public key is the identity point".into()));
        };
        let kid = kid_for(point.as_bytes());
        let jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::ES256),
                key_id: Some(kid.clone()),
                ..Default::default()
            },
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x: URL_SAFE_NO_PAD.encode(x),
                y: URL_SAFE_NO_PAD.encode(y),
            }),
        };
        let decoding = DecodingKey::from_jwk(&jwk)
            .map_err(|e| bad(format!("building the verification key: {e}")))?;
        Ok(SigningKey {
            encoding,
            decoding,
            kid,
            jwk,
        })
    }

    /// The key id put in every token header and in the JWK.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, for verifying this issuer's own tokens.
    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public key as a one-key JWK set.
    pub(crate) fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// Signs `claims` as an `at+jwt` (RFC 9068) ES256 JWT.
    pub(crate) fn sign<T: serde::Serialize>(&self, claims: &T) -> Result<String, IssuerError> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(crate::ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// `kid` = first 16 characters of base64url(SHA-256(SEC1 uncompressed point)):
/// stable for the key, short, and changes when the key is replaced.
fn kid_for(sec1: &[u8]) -> String {
    let mut kid = URL_SAFE_NO_PAD.encode(util::sha256(sec1));
    kid.truncate(16);
    kid
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist yet. An
/// existing directory is left as the operator made it.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), IssuerError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(IssuerError::io(
            "using as data dir",
            dir,
            std::io::Error::new(ErrorKind::NotADirectory, "not a directory"),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => berth_files::create_private_dir(dir)
            .map_err(|e| IssuerError::io("creating data dir", dir, e)),
        Err(e) => Err(IssuerError::io("inspecting data dir", dir, e)),
    }
}

/// Reads an existing key, `None` if there is none. Refuses a key file that
/// group or others may access.
fn read_key(path: &Path) -> Result<Option<SecretKey>, IssuerError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IssuerError::io("inspecting", path, e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IssuerError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let pem = fs::read_to_string(path).map_err(|e| IssuerError::io("reading", path, e))?;
    SecretKey::from_pkcs8_pem(&pem)
        .map(Some)
        .map_err(|e| IssuerError::BadKey {
            path: path.to_owned(),
            reason: format!(
                "not a P-256 PKCS#8 PEM private key ({e}); move it away to generate a new one"
            ),
        })
}

/// Generates a key and publishes it at `path` atomically (complete or absent,
/// never replacing one), so a concurrent `open` (gateway and CLI) either
/// wins or reads the winner's complete key, never a half-written one.
fn create_key(path: &Path) -> Result<SecretKey, IssuerError> {
    let secret = generate();
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| IssuerError::BadKey {
            path: path.to_owned(),
            reason: format!("encoding new key: {e}"),
        })?;

    match berth_files::create_private_new(path, pem.as_bytes()) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created issuer signing key");
            Ok(secret)
        }
        // Someone else created it first: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_key(path)?.ok_or_else(|| {
            IssuerError::io("reading", path, std::io::Error::from(ErrorKind::NotFound))
        }),
        Err(e) => Err(IssuerError::io("creating", path, e)),
    }
}

/// A fresh P-256 key from 32 CSPRNG bytes (retrying the ~2^-128 chance of an
/// out-of-range scalar). Bytes come from `rand` 0.9 because p256 0.13 wants a
/// rand_core 0.6 RNG, which this crate does not otherwise need.
fn generate() -> SecretKey {
    loop {
        if let Ok(k) = SecretKey::from_slice(&util::random_bytes(32)) {
            return k;
        }
    }
}
