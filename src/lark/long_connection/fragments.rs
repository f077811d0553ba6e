//! Reassembly of payloads Lark splits over several data frames (§7.4): fragments share a
//! `message_id`, carry `sum` (how many) and `seq` (0-based index), and may arrive in any order.
//! Incomplete messages are dropped after [`FRAGMENT_TTL`], as the SDKs do; Lark redelivers
//! what was never acknowledged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long the fragments of an incomplete message are kept (the SDKs: 5 s).
pub const FRAGMENT_TTL: Duration = Duration::from_secs(5);
/// A stranger's `sum` cannot make us hold more than this many fragments per message.
pub const MAX_FRAGMENTS: usize = 64;
/// Nor more than this many bytes in all incomplete messages together.
pub const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("sum {0} is not between 1 and {MAX_FRAGMENTS}")]
    BadSum(usize),
    #[error("seq {seq} is not below sum {sum}")]
    BadSeq { seq: usize, sum: usize },
    #[error("fragment {seq} of {message_id} arrived with sum {sum}, earlier ones said {first_sum}")]
    SumChanged {
        message_id: String,
        seq: usize,
        sum: usize,
        first_sum: usize,
    },
    #[error("more than {MAX_BUFFERED_BYTES} bytes of incomplete messages")]
    TooMuchBuffered,
}

struct Partial {
    first_seen: Instant,
    parts: Vec<Option<Vec<u8>>>,
    received: usize,
    bytes: usize,
}

/// Incomplete messages of one connection.
#[derive(Default)]
pub struct Reassembler {
    partial: HashMap<String, Partial>,
    buffered: usize,
}

impl Reassembler {
    /// Takes one fragment; returns the whole payload once every fragment is in.
    pub fn push(
        &mut self,
        message_id: &str,
        sum: usize,
        seq: usize,
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, FragmentError> {
        if sum == 0 || sum > MAX_FRAGMENTS {
            return Err(FragmentError::BadSum(sum));
        }
        if seq >= sum {
            return Err(FragmentError::BadSeq { seq, sum });
        }
        if sum == 1 {
            return Ok(Some(payload));
        }
        self.expire(now);
        if self.buffered + payload.len() > MAX_BUFFERED_BYTES {
            return Err(FragmentError::TooMuchBuffered);
        }
        let partial = self
            .partial
            .entry(message_id.to_string())
            .or_insert_with(|| Partial {
                first_seen: now,
                parts: vec![None; sum],
                received: 0,
                bytes: 0,
            });
        if partial.parts.len() != sum {
            return Err(FragmentError::SumChanged {
                message_id: message_id.to_string(),
                seq,
                sum,
                first_sum: partial.parts.len(),
            });
        }
        let slot = &mut partial.parts[seq];
        // A repeated fragment replaces the earlier copy.
        if let Some(old) = slot.take() {
            partial.received -= 1;
            partial.bytes -= old.len();
            self.buffered -= old.len();
        }
        partial.received += 1;
        partial.bytes += payload.len();
        self.buffered += payload.len();
        *slot = Some(payload);
        if partial.received < sum {
            return Ok(None);
        }
        let done = self.partial.remove(message_id).expect("present above");
        self.buffered -= done.bytes;
        Ok(Some(done.parts.into_iter().flatten().flatten().collect()))
    }

    /// Drops messages whose first fragment is older than [`FRAGMENT_TTL`]; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.partial.len();
        let mut freed = 0;
        self.partial.retain(|_, p| {
            let keep = now.saturating_duration_since(p.first_seen) < FRAGMENT_TTL;
            if !keep {
                freed += p.bytes;
            }
            keep
        });
        self.buffered -= freed;
        before - self.partial.len()
    }

    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(payload: &[u8], n: usize) -> Vec<Vec<u8>> {
        payload
            .chunks(payload.len().div_ceil(n))
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn fragments_in_any_order_give_the_payload_back() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let parts = split(&payload, 4);
        let now = Instant::now();
        let orders = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]];
        for order in orders {
            let mut r = Reassembler::default();
            let mut out = None;
            for (i, &seq) in order.iter().enumerate() {
                let got = r.push("m1", 4, seq, parts[seq].clone(), now).unwrap();
                if i < 3 {
                    assert_eq!(got, None);
                } else {
                    out = got;
                }
            }
            assert_eq!(out.as_deref(), Some(&payload[..]), "order {order:?}");
            assert_eq!(r.pending(), 0);
        }
    }

    #[test]
    fn interleaved_messages_and_repeated_fragments() {
        let mut r = Reassembler::default();
        let now = Instant::now();
        assert_eq!(r.push("a", 2, 1, b"A2".to_vec(), now).unwrap(), None);
        assert_eq!(r.push("b", 2, 0, b"B1".to_vec(), now).unwrap(), None);
        assert_eq!(r.push("a", 2, 1, b"A2".to_vec(), now).unwrap(), None);
        assert_eq!(
            r.push("b", 2, 1, b"B2".to_vec(), now).unwrap(),
            Some(b"B1B2".to_vec())
        );
        assert_eq!(
            r.push("a", 2, 0, b"A1".to_vec(), now).unwrap(),
            Some(b"A1A2".to_vec())
        );
        assert_eq!(
            r.push("c", 1, 0, b"whole".to_vec(), now).unwrap(),
            Some(b"whole".to_vec())
        );
    }

    #[test]
    fn incomplete_messages_are_dropped_after_the_ttl() {
        let mut r = Reassembler::default();
        let start = Instant::now();
        r.push("a", 3, 0, b"x".to_vec(), start).unwrap();
        assert_eq!(r.expire(start + FRAGMENT_TTL - Duration::from_millis(1)), 0);
        assert_eq!(r.expire(start + FRAGMENT_TTL), 1);
        // The late fragments start a new message that never completes from them alone.
        assert_eq!(
            r.push("a", 3, 1, b"y".to_vec(), start + FRAGMENT_TTL).unwrap(),
            None
        );
        assert_eq!(
            r.push("a", 3, 2, b"z".to_vec(), start + FRAGMENT_TTL).unwrap(),
            None
        );
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn bad_counts_are_refused() {
        let mut r = Reassembler::default();
        let now = Instant::now();
        assert_eq!(r.push("a", 0, 0, vec![], now), Err(FragmentError::BadSum(0)));
        assert_eq!(
            r.push("a", 1000, 0, vec![], now),
            Err(FragmentError::BadSum(1000))
        );
        assert_eq!(
            r.push("a", 2, 2, vec![], now),
            Err(FragmentError::BadSeq { seq: 2, sum: 2 })
        );
        r.push("a", 2, 0, vec![1], now).unwrap();
        assert!(matches!(
            r.push("a", 3, 1, vec![], now),
            Err(FragmentError::SumChanged { .. })
        ));
    }
}
