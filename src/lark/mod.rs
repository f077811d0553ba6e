//! Lark's wire protocol: encryption and signatures, envelopes and events of the callback
//! endpoint, and the Open API client with its token cache. Knows nothing of incidents.

pub mod api;
pub mod callback;
pub mod client;
pub mod config;
pub mod crypto;
pub mod error;
pub mod event;
pub mod long_connection;
pub mod token;

pub use api::{
    AddedMembers, Chat, Message, MessageContent, NewChat, ReceiveIdType, UserIdMatch, UserInfo, UserStatus,
    UserToken,
};
pub use client::{CallObserver, LarkClient};
pub use config::{ClientConfig, Domain, Secret};
pub use error::{Answer, LarkError};
