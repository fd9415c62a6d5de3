//! Tokens. Access tokens are EdDSA (Ed25519) JWTs naming the user, the device and the role,
//! signed by the active key of a [`TokenKeys`] keyset and verified by key id, so several
//! server instances sharing the keyset verify each other's tokens and keys rotate without a
//! flag day. The algorithm is pinned: `none`, HMAC and anything else are refused.
//!
//! A token only says who is calling. What they may touch is resolved per request from the
//! server's own data (device not revoked, user's role and units): see `routes::authenticate` (`routes/mod.rs`).

use crate::error::ApiError;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use posync_model::{DeviceId, Role, Scope, UserId};
use posync_proto::{AccessToken, ErrorCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

pub const ISSUER: &str = "posync";
pub const AUDIENCE: &str = "posync-sync";
/// Clock skew tolerated on `exp` and `nbf`: phones' clocks drift.
pub const LEEWAY_SECONDS: i64 = 60;
/// Lifetime of an access token: a revoked device stops within this even on a server that
/// could not look it up (every request here does look it up).
pub const ACCESS_TTL_SECONDS: i64 = 15 * 60;
/// A refresh credential unused for this long expires; every use slides it forward. Long, so
/// that a phone offline for weeks still syncs what it captured.
pub const REFRESH_IDLE_SECONDS: i64 = 180 * 24 * 3600;
/// Keyset file format tag.
pub const KEYS_FORMAT: &str = "posync-keys/1";

/// Who is calling, after the token verified and the device and user were looked up.
/// Everything downstream trusts this.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: UserId,
    pub device: DeviceId,
    pub role: Role,
    pub scope: Scope,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The device id the token is bound to.
    pub dev: String,
    pub role: Role,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

/// A verified token, before the server's own data is consulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSubject {
    pub user: UserId,
    pub device: DeviceId,
    pub role: Role,
}

#[derive(Clone)]
struct Key {
    kid: String,
    created_at: i64,
    secret: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn from_secret(secret: [u8; 32], created_at: i64) -> Result<Self, KeysError> {
        let signing = SigningKey::from_bytes(&secret);
        let der = signing.to_pkcs8_der().map_err(|e| KeysError::Format(format!("pkcs8: {e}")))?;
        let public = signing.verifying_key().to_bytes();
        let digest = Sha256::digest(public);
        Ok(Self {
            kid: format!("ed-{}", hex::encode(&digest[..8])),
            created_at,
            secret,
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            decoding: DecodingKey::from_ed_der(&public),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("keyset file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("keyset: {0}")]
    Format(String),
}

#[derive(Serialize, Deserialize)]
struct KeysFile {
    format: String,
    active: String,
    keys: Vec<KeyFileEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyFileEntry {
    kid: String,
    created_at: i64,
    /// The Ed25519 secret seed, hex. This file is a secret: mode 0600.
    secret_hex: String,
}

/// Signing and verification keys. The newest key signs; every key in the set verifies.
#[derive(Clone)]
pub struct TokenKeys {
    keys: Vec<Key>,
    validation: Validation,
    verified: Verified,
}

/// Most tokens kept verified; when full the memory starts over (each entry is a token of
/// about 400 bytes and its subject).
const VERIFIED_TOKENS_MAX: usize = 4_096;

/// Tokens whose signature and claims already checked out, by their exact text, with their
/// subject and validity. A phone presents one access token for its whole 15 minutes, and an
/// Ed25519 check costs more than the rest of a no-op sync's work: checked once, each later
/// use only compares the text and checks the time. Shared by the keyset's clones; a keyset
/// that changes (rotation, retirement) starts with an empty one.
#[derive(Clone, Default)]
struct Verified {
    tokens: std::sync::Arc<std::sync::Mutex<Memory>>,
}

#[derive(Default)]
struct Memory {
    by_token: std::collections::HashMap<String, Checked>,
    signature_checks: u64,
}

#[derive(Clone)]
struct Checked {
    subject: TokenSubject,
    nbf: i64,
    exp: i64,
}

impl Verified {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic elsewhere while holding it leaves a valid map: keep using it.
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn random_secret() -> [u8; 32] {
    rand::random()
}

impl TokenKeys {
    /// A keyset with one fresh key.
    pub fn generate(now: i64) -> Self {
        let key = Key::from_secret(random_secret(), now);
        Self::from_keys(key.into_iter().collect())
    }

    /// A keyset whose one key derives from `seed` (tests and benchmarks: reproducible).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self::from_keys(Key::from_secret(seed, 0).into_iter().collect())
    }

    fn from_keys(keys: Vec<Key>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Time is checked in `verify` against the server's (injected) clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Self { keys, validation, verified: Verified::default() }
    }

    /// Add a new key and sign with it from now on; older keys keep verifying the tokens they
    /// signed until those expire. Drop old keys with [`TokenKeys::retain_newest`].
    pub fn rotate(&mut self, now: i64) -> Result<String, KeysError> {
        let key = Key::from_secret(random_secret(), now)?;
        let kid = key.kid.clone();
        self.keys.push(key);
        self.verified = Verified::default();
        Ok(kid)
    }

    /// Keep only the newest `n` keys (at least one).
    pub fn retain_newest(&mut self, n: usize) {
        let drop = self.keys.len().saturating_sub(n.max(1));
        self.keys.drain(..drop);
        // A retired key's tokens must stop verifying now, not when they leave the memory.
        self.verified = Verified::default();
    }

    pub fn active_kid(&self) -> &str {
        self.keys.last().map_or("", |k| k.kid.as_str())
    }

    pub fn kids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// Read a keyset file, or create one with a fresh key (mode 0600) if there is none.
    pub fn load_or_create(path: &Path, now: i64) -> Result<Self, KeysError> {
        if path.exists() {
            return Self::load(path);
        }
        let keys = Self::generate(now);
        keys.save(path)?;
        Ok(keys)
    }

    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let io = |source| KeysError::Io { path: path.display().to_string(), source };
        let text = std::fs::read_to_string(path).map_err(io)?;
        let file: KeysFile = serde_json::from_str(&text).map_err(|e| KeysError::Format(e.to_string()))?;
        if file.format != KEYS_FORMAT {
            return Err(KeysError::Format(format!("format {:?}, expected {KEYS_FORMAT:?}", file.format)));
        }
        let mut keys = Vec::with_capacity(file.keys.len());
        for entry in file.keys {
            let bytes =
                hex::decode(&entry.secret_hex).map_err(|_| KeysError::Format(format!("{}: not hex", entry.kid)))?;
            let secret: [u8; 32] =
                bytes.try_into().map_err(|_| KeysError::Format(format!("{}: not 32 bytes", entry.kid)))?;
            let key = Key::from_secret(secret, entry.created_at)?;
            if key.kid != entry.kid {
                return Err(KeysError::Format(format!("{}: kid does not match the key", entry.kid)));
            }
            keys.push(key);
        }
        // The active key signs; keep it last.
        let active = keys
            .iter()
            .position(|k| k.kid == file.active)
            .ok_or_else(|| KeysError::Format(format!("active key {} is not in the set", file.active)))?;
        let key = keys.remove(active);
        keys.push(key);
        Ok(Self::from_keys(keys))
    }

    /// Write the keyset (atomically, mode 0600 on Unix).
    pub fn save(&self, path: &Path) -> Result<(), KeysError> {
        let io = |source| KeysError::Io { path: path.display().to_string(), source };
        let file = KeysFile {
            format: KEYS_FORMAT.into(),
            active: self.active_kid().to_owned(),
            keys: self
                .keys
                .iter()
                .map(|k| KeyFileEntry {
                    kid: k.kid.clone(),
                    created_at: k.created_at,
                    secret_hex: hex::encode(k.secret),
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| KeysError::Format(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        write_private(&tmp, text.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Sign an access token for `user` on `device`, valid from `now` for `ttl_seconds`.
    pub fn issue(&self, user: &UserId, device: DeviceId, role: Role, now: i64, ttl_seconds: i64) -> AccessToken {
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user.to_string(),
            dev: device.to_string(),
            role,
            iat: now,
            nbf: now,
            exp: now + ttl_seconds,
        };
        AccessToken { token: self.sign(&claims), expires_at: claims.exp }
    }

    /// Sign arbitrary claims with the active key (tests forge bad tokens with it).
    pub fn sign(&self, claims: &Claims) -> String {
        let Some(key) = self.keys.last() else { return String::new() };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap_or_default()
    }

    /// Sign any JSON claims with the active key and its kid: tests forge tokens the server
    /// must refuse (missing claims, wrong audience, tampered roles) with it.
    pub fn sign_value(&self, claims: &serde_json::Value) -> String {
        let Some(key) = self.keys.last() else { return String::new() };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap_or_default()
    }

    /// The active key's Ed25519 public key (what a JWKS would publish).
    pub fn public_key(&self) -> [u8; 32] {
        self.keys.last().map_or([0; 32], |k| SigningKey::from_bytes(&k.secret).verifying_key().to_bytes())
    }

    /// Verify algorithm, key id, signature, issuer, audience and validity at `now`. A token
    /// seen before by this keyset is found by its text and only its validity is checked again.
    pub fn verify(&self, token: &str, now: i64) -> Result<TokenSubject, ApiError> {
        let known = self.verified.memory().by_token.get(token).cloned();
        let checked = match known {
            Some(checked) => checked,
            None => {
                let checked = self.check_signature_and_claims(token)?;
                let mut memory = self.verified.memory();
                if memory.by_token.len() >= VERIFIED_TOKENS_MAX {
                    memory.by_token.clear();
                }
                memory.by_token.insert(token.to_owned(), checked.clone());
                checked
            }
        };
        let reject = |why: &str| ApiError::new(ErrorCode::Unauthenticated, format!("token rejected: {why}"));
        if now > checked.exp.saturating_add(LEEWAY_SECONDS) {
            return Err(reject("expired"));
        }
        if now < checked.nbf.saturating_sub(LEEWAY_SECONDS) {
            return Err(reject("not yet valid"));
        }
        Ok(checked.subject)
    }

    /// How many tokens had their signature checked (not found among those already verified).
    pub fn signature_checks(&self) -> u64 {
        self.verified.memory().signature_checks
    }

    /// Algorithm, key id, signature, issuer, audience and the subject's ids; not the time.
    fn check_signature_and_claims(&self, token: &str) -> Result<Checked, ApiError> {
        self.verified.memory().signature_checks += 1;
        let reject = |why: &str| ApiError::new(ErrorCode::Unauthenticated, format!("token rejected: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| reject("malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(reject("algorithm not allowed"));
        }
        let kid = header.kid.ok_or_else(|| reject("no key id"))?;
        let key = self.keys.iter().find(|k| k.kid == kid).ok_or_else(|| reject("unknown key id"))?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map_err(|e| reject(e.kind_name()))?;
        let c = data.claims;
        let user = c.sub.parse().map_err(|_| reject("subject is not a user id"))?;
        let device = c.dev.parse().map_err(|_| reject("dev is not a device id"))?;
        Ok(Checked { subject: TokenSubject { user, device, role: c.role }, nbf: c.nbf, exp: c.exp })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// SHA-256 of a secret (enrolment code, refresh token): what the database keeps.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Crockford base32 without I, L, O, U: readable aloud and typeable on a phone.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters of an enrolment code: 12 x 5 bits = 60 bits, one-time and short-lived.
pub const ENROLMENT_CODE_CHARS: usize = 12;
/// An enrolment code is valid this long after an admin issues it.
pub const ENROLMENT_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// A fresh enrolment code, grouped for reading: `ABCD-EFGH-JKMN`.
pub fn new_enrolment_code() -> String {
    let mut out = String::with_capacity(ENROLMENT_CODE_CHARS + 2);
    for i in 0..ENROLMENT_CODE_CHARS {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(CODE_ALPHABET[usize::from(rand::random::<u8>() & 31)] as char);
    }
    out
}

/// The canonical form of a typed code: upper case, no spaces or dashes, and the letters
/// people confuse with digits read as those digits.
pub fn normalise_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

/// A fresh refresh token: 32 random bytes, hex, with a recognisable prefix (secret scanners).
pub fn new_refresh_token() -> String {
    format!("psr_{}", hex::encode(random_secret()))
}

/// The prefix of a read-only API key's secret (secret scanners, and the server tells a key
/// from an access token by it).
pub const API_KEY_PREFIX: &str = "psk_";

/// A fresh API key secret: 32 random bytes, hex, after [`API_KEY_PREFIX`]. Shown once; the
/// database keeps its [`secret_hash`].
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", hex::encode(random_secret()))
}

/// A fresh API key id, for listing and revoking (it reveals nothing of the secret).
pub fn new_api_key_id() -> String {
    format!("ak-{}", hex::encode(rand::random::<[u8; 6]>()))
}

/// Whether a bearer credential is an API key rather than an access token.
pub fn is_api_key(bearer: &str) -> bool {
    bearer.starts_with(API_KEY_PREFIX)
}

trait KindName {
    fn kind_name(&self) -> &'static str;
}

impl KindName for jsonwebtoken::errors::Error {
    fn kind_name(&self) -> &'static str {
        use jsonwebtoken::errors::ErrorKind as K;
        match self.kind() {
            K::ExpiredSignature => "expired",
            K::ImmatureSignature => "not yet valid",
            K::InvalidAudience => "wrong audience",
            K::InvalidIssuer => "wrong issuer",
            K::InvalidSignature => "bad signature",
            K::InvalidAlgorithm => "algorithm not allowed",
            K::MissingRequiredClaim(_) => "missing claim",
            _ => "malformed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        "kader-0001".parse().expect("id")
    }

    #[test]
    fn a_token_verifies_with_its_keyset_and_not_another() {
        let keys = TokenKeys::from_seed([7; 32]);
        let device = DeviceId::new_random();
        let t = keys.issue(&user(), device, Role::Kader, 1000, 900);
        assert_eq!(
            keys.verify(&t.token, 1000).expect("verifies"),
            TokenSubject { user: user(), device, role: Role::Kader }
        );
        let other = TokenKeys::from_seed([8; 32]);
        assert!(other.verify(&t.token, 1000).is_err(), "unknown kid");
        assert!(keys.verify(&t.token, 1000 + 900 + LEEWAY_SECONDS + 1).is_err(), "expired");
        assert!(keys.verify(&t.token, 1000 - LEEWAY_SECONDS - 1).is_err(), "not yet valid");
    }

    /// A phone's token is checked once; later requests with it are found by its text, its
    /// time still checked. One byte changed is a new token, checked and refused.
    #[test]
    fn a_token_is_checked_once_and_then_known_until_it_expires() {
        let keys = TokenKeys::from_seed([7; 32]);
        let served = keys.clone();
        let t = keys.issue(&user(), DeviceId::new_random(), Role::Kader, 1000, 900);
        for at in [1000, 1100, 1800] {
            assert!(served.verify(&t.token, at).is_ok(), "at {at}");
        }
        assert_eq!(keys.signature_checks(), 1, "one check, shared by the keyset's clones");
        assert!(served.verify(&t.token, 1000 + 900 + LEEWAY_SECONDS + 1).is_err(), "expired, though known");
        let mut forged = t.token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        assert!(served.verify(&forged, 1000).is_err(), "a changed signature is refused");
        assert_eq!(keys.signature_checks(), 2);
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
        let mut keys = TokenKeys::from_seed([7; 32]);
        let old = keys.issue(&user(), DeviceId::new_random(), Role::Kader, 1000, 900);
        let old_kid = keys.active_kid().to_owned();
        let new_kid = keys.rotate(1000).expect("rotate");
        assert_ne!(old_kid, new_kid);
        let new = keys.issue(&user(), DeviceId::new_random(), Role::Kader, 1000, 900);
        assert_eq!(jsonwebtoken::decode_header(&new.token).expect("header").kid.as_deref(), Some(new_kid.as_str()));
        assert!(keys.verify(&old.token, 1000).is_ok());
        keys.retain_newest(1);
        assert!(keys.verify(&old.token, 1000).is_err(), "retired key no longer verifies");
        assert!(keys.verify(&new.token, 1000).is_ok());
    }

    #[test]
    fn keyset_files_round_trip() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys.json");
        let mut keys = TokenKeys::load_or_create(&path, 5).expect("create");
        keys.rotate(6).expect("rotate");
        keys.save(&path).expect("save");
        let again = TokenKeys::load(&path).expect("load");
        assert_eq!(again.kids(), keys.kids());
        assert_eq!(again.active_kid(), keys.active_kid());
    }

    #[test]
    fn codes_are_normalised() {
        let code = new_enrolment_code();
        assert_eq!(code.len(), ENROLMENT_CODE_CHARS + 2);
        assert_eq!(normalise_code(&code.to_lowercase()), code.replace('-', ""));
        assert_eq!(normalise_code(" ab-cd o1l "), "ABCD011");
    }
}
