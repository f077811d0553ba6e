//! The `pbbp2.Frame` message of Lark's long connection (shared/lark-protocol.md §7.2), encoded
//! and decoded by hand: nine proto2 fields are less code than a build-time protobuf compiler,
//! and the byte vectors of §8.4 pin the encoding down.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// `method` of a control frame (ping, pong).
pub const METHOD_CONTROL: i32 = 0;
/// `method` of a data frame (event, card).
pub const METHOD_DATA: i32 = 1;

/// Largest frame either side accepts; Lark fragments bigger payloads.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    pub seq_id: u64,
    pub log_id: u64,
    pub service: i32,
    pub method: i32,
    pub headers: Vec<Header>,
    pub payload_encoding: Option<String>,
    pub payload_type: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub log_id_new: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the frame ends inside a field")]
    Truncated,
    #[error("a varint is longer than 10 bytes")]
    VarintTooLong,
    #[error("field {field} has wire type {wire_type}, which this message does not use")]
    WrongWireType { field: u64, wire_type: u8 },
    #[error("unsupported wire type {0}")]
    UnsupportedWireType(u8),
    #[error("required field {0} is missing")]
    MissingField(&'static str),
    #[error("field {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("the frame is larger than {MAX_FRAME_BYTES} bytes")]
    TooLarge,
}

impl Frame {
    /// A keep-alive ping: CONTROL, SeqID and LogID 0, one header `type=ping` (§7.3).
    pub fn ping(service: i32) -> Frame {
        Frame {
            service,
            method: METHOD_CONTROL,
            headers: vec![Header {
                key: "type".into(),
                value: "ping".into(),
            }],
            ..Frame::default()
        }
    }

    /// The first value of header `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    /// Sets header `key`, replacing an existing one.
    pub fn set_header(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.headers.iter_mut().find(|h| h.key == key) {
            Some(h) => h.value = value,
            None => self.headers.push(Header {
                key: key.to_string(),
                value,
            }),
        }
    }

    /// The `type` header: `ping`, `pong`, `event` or `card`.
    pub fn kind(&self) -> Option<&str> {
        self.header("type")
    }

    /// The acknowledgement of this data frame (§7.4): the same frame with `biz_rt` (handler
    /// time in ms) and a JSON payload `{"code", "data"}`, `data` being the base64 of the
    /// handler's JSON answer when it has one.
    pub fn ack(&self, answer: &AckAnswer, biz_rt_ms: u64) -> Frame {
        let mut ack = self.clone();
        ack.set_header("biz_rt", biz_rt_ms.to_string());
        ack.payload = Some(answer.to_payload());
        ack
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.payload.as_ref().map_or(0, Vec::len));
        put_varint_field(&mut out, 1, self.seq_id);
        put_varint_field(&mut out, 2, self.log_id);
        // int32 is sign-extended to 64 bits on the wire, like protobuf does.
        put_varint_field(&mut out, 3, i64::from(self.service) as u64);
        put_varint_field(&mut out, 4, i64::from(self.method) as u64);
        for h in &self.headers {
            let mut inner = Vec::with_capacity(h.key.len() + h.value.len() + 4);
            put_bytes_field(&mut inner, 1, h.key.as_bytes());
            put_bytes_field(&mut inner, 2, h.value.as_bytes());
            put_bytes_field(&mut out, 5, &inner);
        }
        if let Some(v) = &self.payload_encoding {
            put_bytes_field(&mut out, 6, v.as_bytes());
        }
        if let Some(v) = &self.payload_type {
            put_bytes_field(&mut out, 7, v.as_bytes());
        }
        if let Some(v) = &self.payload {
            put_bytes_field(&mut out, 8, v);
        }
        if let Some(v) = &self.log_id_new {
            put_bytes_field(&mut out, 9, v.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge);
        }
        let mut r = Reader { bytes, at: 0 };
        let mut frame = Frame::default();
        let (mut seq, mut log, mut service, mut method) = (false, false, false, false);
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, 0) => (frame.seq_id, seq) = (r.varint()?, true),
                (2, 0) => (frame.log_id, log) = (r.varint()?, true),
                (3, 0) => (frame.service, service) = (r.varint()? as i32, true),
                (4, 0) => (frame.method, method) = (r.varint()? as i32, true),
                (5, 2) => frame.headers.push(decode_header(r.bytes()?)?),
                (6, 2) => frame.payload_encoding = Some(utf8(r.bytes()?, "payload_encoding")?),
                (7, 2) => frame.payload_type = Some(utf8(r.bytes()?, "payload_type")?),
                (8, 2) => frame.payload = Some(r.bytes()?.to_vec()),
                (9, 2) => frame.log_id_new = Some(utf8(r.bytes()?, "LogIDNew")?),
                (1..=9, wire_type) => return Err(FrameError::WrongWireType { field, wire_type }),
                // Fields a newer Lark may add are skipped, as protobuf does.
                (_, wire_type) => r.skip(wire_type)?,
            }
        }
        for (present, name) in [
            (seq, "SeqID"),
            (log, "LogID"),
            (service, "service"),
            (method, "method"),
        ] {
            if !present {
                return Err(FrameError::MissingField(name));
            }
        }
        Ok(frame)
    }
}

/// What the handler answered, as the ack frame carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckAnswer {
    /// 200, or 500 when the handler failed.
    pub code: u16,
    /// The handler's JSON answer (a card press's toast and card), base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl AckAnswer {
    pub fn ok(answer: Option<&serde_json::Value>) -> AckAnswer {
        AckAnswer {
            code: 200,
            data: answer.map(|v| base64::engine::general_purpose::STANDARD.encode(v.to_string())),
        }
    }

    pub fn failed() -> AckAnswer {
        AckAnswer {
            code: 500,
            data: None,
        }
    }

    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a plain struct serializes")
    }

    /// The handler's answer decoded from `data` (the simulator's side).
    pub fn answer(&self) -> Option<serde_json::Value> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.data.as_deref()?)
            .ok()?;
        serde_json::from_slice(&raw).ok()
    }
}

fn decode_header(bytes: &[u8]) -> Result<Header, FrameError> {
    let mut r = Reader { bytes, at: 0 };
    let (mut key, mut value) = (None, None);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, 2) => key = Some(utf8(r.bytes()?, "Header.key")?),
            (2, 2) => value = Some(utf8(r.bytes()?, "Header.value")?),
            (1 | 2, wire_type) => return Err(FrameError::WrongWireType { field, wire_type }),
            (_, wire_type) => r.skip(wire_type)?,
        }
    }
    Ok(Header {
        key: key.ok_or(FrameError::MissingField("Header.key"))?,
        value: value.ok_or(FrameError::MissingField("Header.value"))?,
    })
}

fn utf8(bytes: &[u8], field: &'static str) -> Result<String, FrameError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::NotUtf8(field))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3);
    put_varint(out, v);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, v: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn key(&mut self) -> Result<Option<(u64, u8)>, FrameError> {
        if self.at == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, (key & 7) as u8)))
    }

    fn varint(&mut self) -> Result<u64, FrameError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.bytes.get(self.at).ok_or(FrameError::Truncated)?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(FrameError::VarintTooLong)
    }

    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let len = usize::try_from(self.varint()?).map_err(|_| FrameError::Truncated)?;
        let end = self.at.checked_add(len).ok_or(FrameError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(FrameError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn skip(&mut self, wire_type: u8) -> Result<(), FrameError> {
        match wire_type {
            0 => self.varint().map(drop),
            1 => self.advance(8),
            2 => self.bytes().map(drop),
            5 => self.advance(4),
            other => Err(FrameError::UnsupportedWireType(other)),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), FrameError> {
        if self.bytes.len() - self.at < n {
            return Err(FrameError::Truncated);
        }
        self.at += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PING_12345: &str = "0800100018b96020002a0c0a0474797065120470696e67";
    const DATA_FRAME: &str = "0801100218b96020012a0d0a047479706512056576656e742a130a0a6d6573736167655f696412056d73672d312a080a0373756d1201312a080a037365711201302a130a0874726163655f6964120774726163652d31424b7b22736368656d61223a22322e30222c22686561646572223a7b226576656e745f74797065223a22696d2e6d6573736167652e726563656976655f7631227d2c226576656e74223a7b7d7d";

    fn data_frame() -> Frame {
        let mut f = Frame {
            seq_id: 1,
            log_id: 2,
            service: 12345,
            method: METHOD_DATA,
            payload: Some(
                br#"{"schema":"2.0","header":{"event_type":"im.message.receive_v1"},"event":{}}"#.to_vec(),
            ),
            ..Frame::default()
        };
        for (k, v) in [
            ("type", "event"),
            ("message_id", "msg-1"),
            ("sum", "1"),
            ("seq", "0"),
            ("trace_id", "trace-1"),
        ] {
            f.set_header(k, v);
        }
        f
    }

    #[test]
    fn ping_matches_the_sdk_bytes() {
        assert_eq!(hex::encode(Frame::ping(12345).encode()), PING_12345);
        let decoded = Frame::decode(&hex::decode(PING_12345).unwrap()).unwrap();
        assert_eq!(decoded, Frame::ping(12345));
        assert_eq!(decoded.kind(), Some("ping"));
    }

    #[test]
    fn data_frame_matches_the_sdk_bytes_both_ways() {
        assert_eq!(hex::encode(data_frame().encode()), DATA_FRAME);
        assert_eq!(
            Frame::decode(&hex::decode(DATA_FRAME).unwrap()).unwrap(),
            data_frame()
        );
    }

    #[test]
    fn optional_fields_and_negative_ints_round_trip() {
        let f = Frame {
            seq_id: u64::MAX,
            log_id: 300,
            service: -1,
            method: METHOD_CONTROL,
            payload_encoding: Some("".into()),
            payload_type: Some("json".into()),
            payload: Some(Vec::new()),
            log_id_new: Some("log-新".into()),
            ..Frame::ping(-1)
        };
        assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
    }

    #[test]
    fn broken_frames_are_errors_not_panics() {
        let good = hex::decode(DATA_FRAME).unwrap();
        for cut in 0..good.len() {
            let _ = Frame::decode(&good[..cut]);
        }
        assert_eq!(Frame::decode(&[]), Err(FrameError::MissingField("SeqID")));
        assert_eq!(Frame::decode(&[0x08]), Err(FrameError::Truncated));
        let mut long = vec![0x08];
        long.extend_from_slice(&[0xff; 10]);
        assert_eq!(Frame::decode(&long), Err(FrameError::VarintTooLong));
        assert_eq!(
            Frame::decode(&[0x0a, 0x00]),
            Err(FrameError::WrongWireType {
                field: 1,
                wire_type: 2
            })
        );
        // An unknown field is skipped.
        let mut extended = hex::decode(PING_12345).unwrap();
        extended.extend_from_slice(&[0x50, 0x07]);
        assert_eq!(Frame::decode(&extended).unwrap(), Frame::ping(12345));
    }

    #[test]
    fn ack_is_the_same_frame_with_biz_rt_and_base64_data() {
        let card = serde_json::json!({"toast": {"type": "success", "content": "ok approve"}});
        let ack = data_frame().ack(&AckAnswer::ok(Some(&card)), 42);
        assert_eq!(
            (ack.seq_id, ack.log_id, ack.service, ack.method),
            (1, 2, 12345, METHOD_DATA)
        );
        assert_eq!(ack.header("biz_rt"), Some("42"));
        assert_eq!(ack.header("message_id"), Some("msg-1"));
        let payload: serde_json::Value = serde_json::from_slice(ack.payload.as_ref().unwrap()).unwrap();
        assert_eq!(payload["code"], 200);
        let data = base64::engine::general_purpose::STANDARD
            .decode(payload["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&data).unwrap(), card);
        let decoded: AckAnswer = serde_json::from_slice(ack.payload.as_ref().unwrap()).unwrap();
        assert_eq!(decoded.answer(), Some(card));
        // Nothing to return: `{"code":200}`, as the Python SDK writes.
        let empty = data_frame().ack(&AckAnswer::ok(None), 0);
        assert_eq!(empty.payload.as_deref(), Some(&br#"{"code":200}"#[..]));
        assert_eq!(AckAnswer::failed().to_payload(), br#"{"code":500}"#);
    }
}
