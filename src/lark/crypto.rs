//! Lark's body encryption (AES-256-CBC, key = SHA-256 of the Encrypt Key, IV = the first 16 bytes
//! of the base64 blob, PKCS#7) and request signatures (SHA-256 with the Encrypt Key for events and
//! `card.action.trigger`; SHA-1 with the Verification Token for the old card callback).
//! Reference: shared/lark-protocol.md §2.5, §2.6, §3.4.

use aes::cipher::block_padding::{NoPadding, Pkcs7};
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq, ConstantTimeLess};

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the encrypt field is not valid base64")]
    BadBase64,
    #[error("the encrypted blob is {0} bytes; it must be a multiple of 16 and at least 32")]
    BadLength(usize),
    #[error("decryption failed (wrong Encrypt Key or corrupt data: bad padding)")]
    BadPadding,
}

/// An Encrypt Key turned into the AES-256 key once, so each request skips the key hash.
#[derive(Clone)]
pub struct Cipher {
    key: [u8; 32],
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(<redacted>)")
    }
}

impl Cipher {
    pub fn new(encrypt_key: &str) -> Cipher {
        Cipher {
            key: Sha256::digest(encrypt_key.as_bytes()).into(),
        }
    }

    /// Decrypts the `encrypt` field of a Lark body. The PKCS#7 check takes the same time whatever
    /// the padding bytes are, so a refusal cannot be told apart by timing either (issue 12.1).
    pub fn decrypt(&self, encrypted: &str) -> Result<Vec<u8>, CryptoError> {
        let blob = STANDARD
            .decode(encrypted.trim())
            .map_err(|_| CryptoError::BadBase64)?;
        if blob.len() < 32 || blob.len() % 16 != 0 {
            return Err(CryptoError::BadLength(blob.len()));
        }
        let (iv, ciphertext) = blob.split_at(16);
        let mut plain = ciphertext.to_vec();
        Aes256CbcDec::new_from_slices(&self.key, iv)
            .expect("key and IV lengths are fixed")
            .decrypt_padded::<NoPadding>(&mut plain)
            .expect("the length is a multiple of the block size");
        let pad_len = pkcs7_len(&plain);
        if pad_len == 0 {
            return Err(CryptoError::BadPadding);
        }
        plain.truncate(plain.len() - pad_len);
        Ok(plain)
    }

    /// Encrypts as Lark does, with the given IV (tests use fixed ones).
    pub fn encrypt_with_iv(&self, plaintext: &[u8], iv: [u8; 16]) -> String {
        let ciphertext = Aes256CbcEnc::new_from_slices(&self.key, &iv)
            .expect("key and IV lengths are fixed")
            .encrypt_padded_vec::<Pkcs7>(plaintext);
        let mut blob = Vec::with_capacity(16 + ciphertext.len());
        blob.extend_from_slice(&iv);
        blob.extend_from_slice(&ciphertext);
        STANDARD.encode(blob)
    }

    /// Encrypts with a fresh random IV.
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        let mut iv = [0u8; 16];
        getrandom::fill(&mut iv).expect("OS random source");
        self.encrypt_with_iv(plaintext, iv)
    }
}

/// The PKCS#7 padding length (1–16) of a decrypted buffer of whole blocks, or 0 when the padding
/// is malformed; branch-free over the last block.
fn pkcs7_len(plain: &[u8]) -> usize {
    let last_block = &plain[plain.len() - 16..];
    let pad = last_block[15];
    let mut valid = !pad.ct_eq(&0) & pad.ct_lt(&17);
    for (i, byte) in last_block.iter().rev().enumerate() {
        let covered = (i as u8).ct_lt(&pad);
        valid &= !covered | byte.ct_eq(&pad);
    }
    usize::from(u8::conditional_select(&0, &pad, valid))
}

/// `X-Lark-Signature` of events and `card.action.trigger`:
/// hex SHA-256 of timestamp + nonce + Encrypt Key + raw body.
pub fn event_signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(encrypt_key.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

/// `X-Lark-Signature` of the old `card.action.trigger_v1` request:
/// hex SHA-1 of timestamp + nonce + Verification Token + raw body.
pub fn card_v1_signature(timestamp: &str, nonce: &str, verification_token: &str, body: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(verification_token.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

/// Compares secrets or signatures in constant time (for equal lengths; length is not secret).
/// Hex signatures are compared case-insensitively.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Compares a received hex signature with the computed one, ignoring hex case, in constant time.
pub fn signature_matches(received: &str, computed: &str) -> bool {
    let received = received.trim().to_ascii_lowercase();
    constant_time_eq(&received, computed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::block_padding::Padding;
    use proptest::prelude::*;

    #[test]
    fn official_doc_vector() {
        let plain = Cipher::new("test key")
            .decrypt("P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=")
            .unwrap();
        assert_eq!(plain, b"hello world");
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn go_sdk_vector() {
        let blob = "bZ3L7yh6m3Fkuffl4g+3uGjIHnhOm5fVZbKVuyT8t7tcd5ABMYm8l28/X900ZL3knZ7n+sCREu/H2WnIzft0amC7+xWqNH8o25IU63N4BnZWfHh+4hyG76QPd19vkw2bPJCx9aqxK8Nz+xqFNbk0RdgyWhmgd30jSxHtcQXAllkI7FMpGpOCteJad3bLXPDBQIV/xkCtKICCS7Z63gakpxZCLaRZ3qCXP1fapHh+LBIupxenrU6ysc7I3nHmjmKie41IiWwS5puG4zQHhVbq6KWLcgWm/3NBZOPQy53ucMu75SXA55I7jarVLZXWUcqBGrcgE3vouWbtwgZuzmoTQl0GSh5VYSVvpW992BuGxUWj0XjPYdICJm6Cr7xouNXwMcdb7N8caVdkdSZeEnswG19qSyDoQhklwzNGW0yiaayulBqJNjfge/G5V3401c2XaIuAeEIo+QQ4RSNpRGfnHkbu/j55FGQAGWjpuBNaIwZbaUoVP3NkGP+vM5rpEDe3sL2GN+Xsd+g9yBs7FqdMV8mXTGgLjCqjrPrke5/km76Q3Pe6KPs2YexMRG4MkSx3xUTzZnNn7zIzShPcjeSwBd2pxk6ht5N+fzueZdxl6Oo=";
        let plain = Cipher::new("1212121212").decrypt(blob).unwrap();
        assert_eq!(plain.len(), 432);
        assert_eq!(
            sha256_hex(&plain),
            "7667cdc5638a16dab7690ac4866e6afad8f7e53ce8207b334fd85159e1a99e92"
        );
        assert!(
            plain.starts_with(br#"{"schema":"2.0","header":{"event_id":"f7984f25108f8137722bb63cee927e66""#)
        );
    }

    #[test]
    fn java_sdk_vector() {
        let blob = "4T4ivT/PR2APX9OYkhRKtu54s1rtIpj9xJU69Hs1yWQ/1RutbufsBs9xjx5YC3u/0hMRF49sN0kevQiEL8iB3bVEdpfyJXzXGDfKUjvKQTmG64GbMdTW6qRpadVPem3f32jHuT6fc+4TRg4BigwoUId+l/D+vcIwu3mDgAEbaqzWfmvccmpiRMfQbh9JhdK/akmrRjo/CXPLM+hZciFXJMSpKueV3SjZJoSls5y0ZTHC8zak/Mp/DSl1wa4mYe5laP367Lnl4ylGiXBKx3Ku29oWv79rYcO/5QT63H4rkl8bwYmAzScpb2KNnV11L3xiDzJp3hFdfXczUvm93FXu4Lw8eDAsRzIWCccKrqHh0UvtDJD95tNn6LvYew4+Xbk1RD4k7UzWJS9AMobOK778NLNxfQ+Kn7MKzBHilXnSIVY5V+dcsOOdfqJviW4yWmT73JHYKq1qJip7Cw7lbkmRMUmettUwdVFWxeXH6iTex3YXCgqoriCx/MzeQhdNEycipooB/vHItRt1CF44uFWj9tf8n3TdbdH4dNMD0hw8ejHJSbEHb9HAGCugUniN8BzL9wxE959JU4cu3BKjDuIk5oS9hLR1mSc3vKBuSa3VKOE=";
        let plain = Cipher::new("1212121212").decrypt(blob).unwrap();
        assert_eq!(plain.len(), 433);
        assert_eq!(
            sha256_hex(&plain),
            "1c134cf6f843011b8e1c56f94cd2cb637908c074fff0c01b554ad084ce27c9e1"
        );
    }

    #[test]
    fn python_sdk_encrypted_challenge_vector() {
        let plain =
            br#"{"challenge":"ajls384kdj","token":"test-verification-token","type":"url_verification"}"#;
        let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
        let expected = "AAECAwQFBgcICQoLDA0ODw9mLTIAZS9jAmGTQ1wAhHr2K2c4pSoIiYBFkqtMS3Sqnlmc4hUCPezYa4EJ2Oui0dGeyz2Fdc2fWjIHm30FqlWadyarSXVs9SYCpA01zevdrG79+JJR2rB3TcCAXPy/gQ==";
        let cipher = Cipher::new("test key");
        assert_eq!(cipher.encrypt_with_iv(plain, iv), expected);
        assert_eq!(cipher.decrypt(expected).unwrap(), plain);
    }

    #[test]
    fn signature_vectors() {
        let body = br#"{"schema":"2.0","header":{"event_id":"e1","event_type":"im.message.receive_v1","token":"v"},"event":{}}"#;
        assert_eq!(
            event_signature("1609459200", "abc", "encrypt_key_demo", body),
            "7e4cc6b52aada163322297906fa7837efd3e2e5ec07c1481746760f0aefb1449"
        );
        assert_eq!(
            event_signature("timestamp", "nonce", "1212121212", br#"{"schema":"2.0"}"#),
            "f904c474d37b096e3f4daeef59591724d7d691299626805560cc229791978824"
        );
        // SHA-1 variant: same concatenation, checked against an independent SHA-1 of the bytes.
        let v1 = card_v1_signature("1700000000", "nonce-123", "test-verification-token", b"{}");
        assert_eq!(
            v1,
            hex::encode(Sha1::digest(b"1700000000nonce-123test-verification-token{}"))
        );
        assert!(signature_matches(&v1.to_uppercase(), &v1));
        assert!(!signature_matches(&v1[..39], &v1));
    }

    #[test]
    fn malformed_blobs_are_errors() {
        let c = Cipher::new("k");
        assert_eq!(c.decrypt("not base64!!"), Err(CryptoError::BadBase64));
        assert_eq!(c.decrypt("AAAA"), Err(CryptoError::BadLength(3)));
        assert_eq!(
            c.decrypt(&STANDARD.encode([0u8; 33])),
            Err(CryptoError::BadLength(33))
        );
        // Right length, wrong key: this fixed blob fails the PKCS#7 check.
        let blob = Cipher::new("other").encrypt_with_iv(b"hello world", [7; 16]);
        assert_eq!(c.decrypt(&blob), Err(CryptoError::BadPadding));
    }

    proptest! {
        #[test]
        fn round_trip(key in ".{0,64}", body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let c = Cipher::new(&key);
            prop_assert_eq!(c.decrypt(&c.encrypt(&body)).unwrap(), body);
        }

        #[test]
        fn decrypt_never_panics(key in ".{0,16}", blob in ".{0,300}") {
            let _ = Cipher::new(&key).decrypt(&blob);
        }

        #[test]
        fn the_constant_time_padding_check_agrees_with_pkcs7(
            block in proptest::collection::vec(any::<u8>(), 16),
            pad in 0u8..20,
            fill in 0usize..17,
        ) {
            // Mostly near-valid paddings, where a wrong check would show.
            let mut plain = block;
            for byte in plain.iter_mut().rev().take(fill) {
                *byte = pad;
            }
            let expected = Pkcs7::raw_unpad(&plain).map(|rest| 16 - rest.len()).unwrap_or(0);
            prop_assert_eq!(pkcs7_len(&plain), expected);
        }

        #[test]
        fn decrypt_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Cipher::new("k").decrypt(&STANDARD.encode(bytes));
        }
    }
}
