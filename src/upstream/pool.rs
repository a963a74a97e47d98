//! calattach's HTTP/1.1 connections to the upstream, plain or over TLS (`tls.rs`): a
//! small LIFO pool of idle keep-alive connections, one per worker thread.
//!
//! Each worker thread runs its own single-threaded runtime (src/server.rs), so a pool
//! belongs to one thread: the connections it holds are driven by tasks on that thread,
//! and the lock around the idle list is never contended. Compared with hyper-util's
//! general-purpose pooled client, a request costs no pool-key hashing, no checkout
//! future and no extra task to put the connection back (docs/performance.md): the
//! response body hands its connection back itself when it ends.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::tls::{HandshakeError, Tls};
use crate::body::{Body, BoxError};

/// Where the upstream listens.
#[derive(Clone, Debug)]
pub enum Target {
    /// An IP address: connected to directly.
    Addr(SocketAddr),
    /// A host name, resolved on every new connection (a container's address may change).
    Name(String, u16),
}

/// Why a request did not get a response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: nothing was sent, the request may be sent again.
    #[error("connecting to the upstream failed: {0}")]
    Connect(std::io::Error),
    /// The upstream's certificate (or TLS protocol) was refused: nothing was sent, and
    /// sending again will not help.
    #[error(transparent)]
    Tls(HandshakeError),
    /// The request (or part of it) may have reached the upstream.
    #[error(transparent)]
    Request(#[from] hyper::Error),
}

/// The idle upstream connections of one worker thread. Cloning shares the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// `Some` for an `https://` upstream.
    tls: Option<Tls>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Pool {
    pub fn new(
        target: Target,
        tls: Option<Tls>,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                target,
                tls,
                connect_timeout,
                idle_timeout,
                max_idle,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection, or on a new one.
    ///
    /// An upstream may close an idle keep-alive connection at any moment (its keep-alive
    /// timeout), and a request sent on it just then fails although the upstream never
    /// saw it. On a reused connection such a request is sent again, on the next idle
    /// connection and finally on a fresh one:
    /// - always when it failed before being written (hyper hands it back);
    /// - when it was written but the connection closed without an answer, if it can be
    ///   sent twice safely: a safe method (`GET`, `HEAD`, `OPTIONS`, `PROPFIND`,
    ///   `REPORT`) without a body.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<PooledBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.checkout().await {
                Some(sender) => (sender, true),
                // Boxed: connecting (name resolution, handshake) is a large future that
                // would otherwise enlarge every request's, though most reuse a connection.
                None => (Box::pin(self.connect()).await?, false),
            };
            let again = if reused { replayable_copy(&req) } else { None };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    return Ok(resp.map(|inner| PooledBody {
                        inner,
                        sender: Some(sender),
                        pool: self.inner.clone(),
                    }))
                }
                Err(mut e) => match (e.take_message(), again) {
                    (Some(unsent), _) if reused => {
                        tracing::debug!(error = %e.error(), "idle upstream connection was closed; sending on another");
                        req = unsent;
                    }
                    (_, Some(copy)) if e.error().is_incomplete_message() => {
                        tracing::debug!(error = %e.error(), "upstream closed a reused connection without answering; sending again");
                        req = copy;
                    }
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection that is ready for a request. Connections
    /// closed or idle too long are dropped on the way; one that is not ready yet (its
    /// previous exchange still finishing) is kept for later.
    async fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut not_ready = Vec::new();
        let found = loop {
            let Some(mut idle) = self.inner.lock().pop() else {
                break None;
            };
            if idle.sender.is_closed() || idle.since.elapsed() > self.inner.idle_timeout {
                continue;
            }
            match std::future::poll_fn(|cx| Poll::Ready(idle.sender.poll_ready(cx))).await {
                Poll::Ready(Ok(())) => break Some(idle.sender),
                Poll::Ready(Err(_)) => continue,
                Poll::Pending => not_ready.push(idle),
            }
        };
        if !not_ready.is_empty() {
            // Back at the cold end, in their order, behind the ones still to try.
            self.inner.lock().splice(0..0, not_ready);
        }
        found
    }

    /// Opens a connection (TCP, then TLS for an `https://` upstream) without sending
    /// anything, for `check-config`: the negotiated TLS parameters, or `None` over plain
    /// TCP.
    pub async fn probe(&self) -> Result<Option<String>, SendError> {
        match self.open().await? {
            Stream::Plain(_) => Ok(None),
            Stream::Tls(tls) => Ok(Some(Tls::describe(&tls))),
        }
    }

    /// TCP connect and, for `https://`, the TLS handshake, together within
    /// `connect_timeout`.
    async fn open(&self) -> Result<Stream, SendError> {
        let connect = async {
            let stream = match &self.inner.target {
                Target::Addr(addr) => TcpStream::connect(addr).await,
                Target::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await,
            }
            .map_err(SendError::Connect)?;
            stream.set_nodelay(true).map_err(SendError::Connect)?;
            match &self.inner.tls {
                None => Ok(Stream::Plain(stream)),
                Some(tls) => match tls.handshake(stream).await {
                    Ok(s) => Ok(Stream::Tls(Box::new(s))),
                    // A connection broken mid-handshake is like a failed connect: nothing
                    // was sent, and another attempt may succeed.
                    Err(HandshakeError::Io { source, .. }) => Err(SendError::Connect(
                        std::io::Error::new(source.kind(), format!("TLS handshake: {source}")),
                    )),
                    Err(e) => Err(SendError::Tls(e)),
                },
            }
        };
        match tokio::time::timeout(self.inner.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {:?}", self.inner.connect_timeout),
            ))),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        match self.open().await? {
            Stream::Plain(tcp) => handshake(TokioIo::new(tcp)).await,
            Stream::Tls(tls) => handshake(TokioIo::new(*tls)).await,
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// HTTP/1.1 on an open connection; the connection is driven by a task of this thread.
async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Body>, SendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(SendError::Request)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The list stays valid whatever a panicking holder did: it only pushes and pops.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn put_back(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

/// A copy of `req` to send again, for a safe method without a body (RFC 9110 §9.2.1;
/// `PROPFIND` and `REPORT` are safe too, RFC 4918 §9.1, RFC 3253 §3.6); `None` otherwise.
fn replayable_copy(req: &Request<Body>) -> Option<Request<Body>> {
    let safe = matches!(
        req.method().as_str(),
        "GET" | "HEAD" | "OPTIONS" | "PROPFIND" | "REPORT"
    );
    if !safe || !http_body::Body::is_end_stream(req.body()) {
        return None;
    }
    let mut copy = Request::new(crate::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// A response body from the upstream. When it has been read to its end, its connection
/// goes back to the pool; dropped before the end (a client that went away), the
/// connection is closed with it, since the rest of the response is still on the wire.
pub struct PooledBody {
    inner: Incoming,
    sender: Option<SendRequest<Body>>,
    pool: Arc<Inner>,
}

impl PooledBody {
    fn release_if_ended(&mut self) {
        if http_body::Body::is_end_stream(&self.inner) {
            if let Some(sender) = self.sender.take() {
                self.pool.put_back(sender);
            }
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(sender) = this.sender.take() {
                    this.pool.put_back(sender);
                }
            }
            Poll::Ready(Some(Ok(_))) => this.release_if_ended(),
            Poll::Ready(Some(Err(_))) => this.sender = None,
            Poll::Pending => {}
        }
        polled.map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        self.release_if_ended();
    }
}
