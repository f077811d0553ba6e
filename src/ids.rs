//! Identifiers and digests: random ids with the prefix that says what they name, and the SHA-256
//! hex digest that stored secrets are compared by. Shared by every domain, depending on none.

/// The prefix of each kind of id this appliance mints; the prefix tells a reader (and a log)
/// what an id names.
pub mod prefix {
    pub const INCIDENT: &str = "inc_";
    pub const MEMBER: &str = "mem_";
    pub const WEBHOOK: &str = "wh_";
    pub const WEBHOOK_EVENT: &str = "evt_";
    pub const INTEGRATION: &str = "int_";
    pub const ALERT_SOURCE: &str = "src_";
    pub const ALERT_SOURCE_KEY: &str = "lkoik_";
    pub const RULE: &str = "rule_";
    pub const BOT_WEBHOOK: &str = "bwh_";
    pub const SCHEDULE: &str = "sch_";
    pub const OVERRIDE: &str = "ovr_";
    pub const FEED: &str = "feed_";
    pub const COVER_REQUEST: &str = "cov_";
    /// The secret in a calendar feed's URL.
    pub const FEED_TOKEN: &str = "lkocal_";
}

/// `bytes` random bytes from the OS, hex-encoded (twice as many characters).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("OS random source");
    hex::encode(buf)
}

/// A new id: `prefix` followed by `bytes` random bytes in hex.
pub fn new_id(prefix: &str, bytes: usize) -> String {
    format!("{prefix}{}", random_hex(bytes))
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_id_is_prefix_then_hex() {
        let id = new_id(prefix::INCIDENT, 8);
        let hex = id.strip_prefix("inc_").expect("prefix");
        assert_eq!(hex.len(), 16);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn sha256_hex_matches_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
