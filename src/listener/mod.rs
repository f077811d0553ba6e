//! The listeners' transport: TLS (certificates, SIGHUP reload) and the accept loop that serves a
//! warp filter over plain or TLS connections with the connection and header bounds. Knows no
//! route and no domain; the web layer hands it a filter and `app` starts it.

pub mod server;
pub mod tls;
