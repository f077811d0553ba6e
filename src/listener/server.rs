//! The accept loop shared by plain and TLS listeners: hyper-util's auto (HTTP/1.1 + h2) builder
//! over a warp service, the peer address handed to filters, and graceful draining on shutdown.
//!
//! Everything a client controls is bounded here (issue 12.3): at most `max_connections` open
//! connections per listener (new ones are shed, accepted ones keep being served), the request
//! head within [`HEADER_READ_TIMEOUT`] and [`MAX_HEAD_BYTES`], and no connection waits longer
//! than [`READ_IDLE_TIMEOUT`] for a client that sends nothing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// The client address of a request, as the accept loop saw it.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request line and headers must arrive within this; it also closes idle keep-alive
/// HTTP/1.1 connections, since hyper waits for the next head under the same timer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers; more is answered 431 (hyper's smallest read buffer is 8 KiB).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A connection whose client sends nothing for this long while we wait to read is closed
/// (HTTP/2 connections, and request bodies that stall).
pub const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_H2_STREAMS: u32 = 128;
/// How long in-flight requests get to finish after SIGTERM.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves `routes` on `listener` until `shutdown` turns true, then drains open connections.
pub async fn run(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    routes: BoxedFilter<(Response,)>,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = warp::service(routes);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(max_connections));
    let mut shed = ShedLog::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE; back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            // Over the cap: close the new connection at once so the open ones keep their share.
            drop(stream);
            shed.note(max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let handler =
                hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    let mut service = service.clone();
                    async move { service.call(req).await }
                });
            let builder = connection_builder();
            let result = match acceptor {
                None => {
                    let io = TokioIo::new(ReadIdle::new(stream));
                    let conn = builder.serve_connection_with_upgrades(io, handler);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let io = TokioIo::new(ReadIdle::new(tls));
                            let conn = builder.serve_connection_with_upgrades(io, handler);
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// Descriptors kept free of client connections: the state file, outbound calls to Lark and
/// webhooks, logs.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The connection cap of each of `listeners` listeners: `configured`, lowered so that all of
/// them together stay inside the process's open-file limit (a full table makes `accept` fail and
/// starves everyone, which is what the cap is for).
pub fn connection_cap(configured: usize, listeners: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return configured;
    };
    let fits = (soft.saturating_sub(RESERVED_DESCRIPTORS) / listeners.max(1) as u64).max(1);
    let cap = configured.min(usize::try_from(fits).unwrap_or(usize::MAX));
    if cap < configured {
        tracing::warn!(
            configured,
            cap,
            open_file_limit = soft,
            "server.max_connections lowered to fit the open-file limit (raise LimitNOFILE / ulimit -n)"
        );
    }
    cap
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_concurrent_streams(MAX_H2_STREAMS);
    builder
}

/// Warns about shed connections at most once a second, with how many were shed.
#[derive(Default)]
struct ShedLog {
    last: Option<std::time::Instant>,
    since_last: u64,
}

impl ShedLog {
    fn note(&mut self, cap: usize) {
        self.since_last += 1;
        if self.last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        tracing::warn!(
            shed = self.since_last,
            max_connections = cap,
            "connection limit reached; closing new connections (server.max_connections)"
        );
        self.last = Some(std::time::Instant::now());
        self.since_last = 0;
    }
}

/// A stream whose reads fail once nothing has moved for [`READ_IDLE_TIMEOUT`] while the server
/// was waiting for the client. The clock runs only while a read is pending, and a response the
/// client is still taking in (a long download) counts as movement.
struct ReadIdle<T> {
    inner: T,
    deadline: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl<T> ReadIdle<T> {
    fn new(inner: T) -> Self {
        ReadIdle {
            inner,
            deadline: Box::pin(tokio::time::sleep(READ_IDLE_TIMEOUT)),
            armed: false,
        }
    }
}

impl<T> ReadIdle<T> {
    fn note_progress(&mut self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.armed = false;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadIdle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !this.armed {
                    this.armed = true;
                    let at = tokio::time::Instant::now() + READ_IDLE_TIMEOUT;
                    this.deadline.as_mut().reset(at);
                }
                match this.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing for too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadIdle<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_progress(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_progress(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
