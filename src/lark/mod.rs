//! Lark's wire protocol: encryption and signatures, envelopes and events of the callback
//! endpoint, and the Open API client. Knows nothing of incidents.

pub mod callback;
pub mod crypto;
pub mod event;
