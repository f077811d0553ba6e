//! Integration secrets at rest: sealed with AES-256-CBC and an HMAC-SHA256 tag (encrypt-then-MAC)
//! under a key kept in its own file beside the state file (mode 0600), never in the store, so a
//! copied state file or backup leaks no App Secret, Verification Token or Encrypt Key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

/// Name of the key file in the state directory.
pub const KEY_FILE: &str = "secret.key";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read or create the secret key file {path}: {source}")]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error("the secret key file {path} is malformed (expected 128 hex characters)")]
    MalformedKey { path: PathBuf },
    #[error(
        "the state file holds integration secrets but the key file {path} is missing; restore it from where you keep it next to your backups, or start with a fresh state file"
    )]
    KeyMissing { path: PathBuf },
    #[error("a stored secret does not open with this key file (was the key file replaced?)")]
    Tampered,
}

/// A secret as stored: base64 of IV ‖ ciphertext ‖ tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed(String);

/// The key that seals and opens stored secrets.
#[derive(Clone)]
pub struct SecretBox {
    enc: [u8; 32],
    mac: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<redacted>)")
    }
}

impl SecretBox {
    /// Loads the key file in `state_dir`, creating it when absent and `may_create` (a state file
    /// with sealed secrets must never get a fresh key: those secrets would be lost silently).
    pub fn load_or_create(state_dir: &Path, may_create: bool) -> Result<SecretBox, SecretError> {
        let path = state_dir.join(KEY_FILE);
        let key_err = |source| SecretError::KeyFile {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .ok()
                    .filter(|b| b.len() == 64)
                    .ok_or_else(|| SecretError::MalformedKey { path: path.clone() })?;
                Ok(SecretBox::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !may_create {
                    return Err(SecretError::KeyMissing { path });
                }
                let mut bytes = [0u8; 64];
                getrandom::fill(&mut bytes).expect("OS random source");
                write_private(&path, &hex::encode(bytes)).map_err(key_err)?;
                Ok(SecretBox::from_bytes(&bytes))
            }
            Err(e) => Err(key_err(e)),
        }
    }

    fn from_bytes(bytes: &[u8]) -> SecretBox {
        let mut enc = [0u8; 32];
        let mut mac = [0u8; 32];
        enc.copy_from_slice(&bytes[..32]);
        mac.copy_from_slice(&bytes[32..64]);
        SecretBox { enc, mac }
    }

    fn tag(&self, data: &[u8]) -> [u8; 32] {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.mac).expect("any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    }

    pub fn seal(&self, plaintext: &str) -> Sealed {
        let mut iv = [0u8; 16];
        getrandom::fill(&mut iv).expect("OS random source");
        let ciphertext = cbc::Encryptor::<aes::Aes256>::new_from_slices(&self.enc, &iv)
            .expect("fixed key and IV lengths")
            .encrypt_padded_vec::<Pkcs7>(plaintext.as_bytes());
        let mut blob = iv.to_vec();
        blob.extend_from_slice(&ciphertext);
        let tag = self.tag(&blob);
        blob.extend_from_slice(&tag);
        Sealed(STANDARD.encode(blob))
    }

    pub fn open(&self, sealed: &Sealed) -> Result<String, SecretError> {
        let blob = STANDARD.decode(&sealed.0).map_err(|_| SecretError::Tampered)?;
        if blob.len() < 16 + 16 + 32 {
            return Err(SecretError::Tampered);
        }
        let (body, tag) = blob.split_at(blob.len() - 32);
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.mac).expect("any key length");
        m.update(body);
        m.verify_slice(tag).map_err(|_| SecretError::Tampered)?;
        let (iv, ciphertext) = body.split_at(16);
        let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&self.enc, iv)
            .expect("fixed key and IV lengths")
            .decrypt_padded_vec::<Pkcs7>(ciphertext)
            .map_err(|_| SecretError::Tampered)?;
        String::from_utf8(plain).map_err(|_| SecretError::Tampered)
    }
}

/// Writes `contents` to `path` readable by the owner only, atomically (temp file, fsync, rename).
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load_or_create(dir.path(), true).unwrap();
        let sealed = a.seal("app-secret-123");
        assert!(!sealed.0.contains("app-secret"));
        assert_eq!(a.open(&sealed).unwrap(), "app-secret-123");
        // The same key file opens it again; the file is private.
        let again = SecretBox::load_or_create(dir.path(), false).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "app-secret-123");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A flipped byte or another key fails closed.
        let mut raw = STANDARD.decode(&sealed.0).unwrap();
        raw[20] ^= 1;
        assert!(matches!(
            a.open(&Sealed(STANDARD.encode(raw))),
            Err(SecretError::Tampered)
        ));
        let other = tempfile::tempdir().unwrap();
        let b = SecretBox::load_or_create(other.path(), true).unwrap();
        assert!(matches!(b.open(&sealed), Err(SecretError::Tampered)));
    }

    #[test]
    fn a_missing_key_is_not_recreated_when_secrets_exist() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            SecretBox::load_or_create(dir.path(), false),
            Err(SecretError::KeyMissing { .. })
        ));
        std::fs::write(dir.path().join(KEY_FILE), "abc").unwrap();
        assert!(matches!(
            SecretBox::load_or_create(dir.path(), true),
            Err(SecretError::MalformedKey { .. })
        ));
    }
}
