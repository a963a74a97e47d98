//! Listeners, the per-request wrapper, the admin endpoints and graceful shutdown
//! (DESIGN §10).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::attach;
use crate::body::{self, Body, BoxError};
use crate::config::Config;
use crate::error::Error;
use crate::options;
use crate::router::{self, Route};
use crate::state::State;
use crate::upstream::Upstream;

/// Runs both listeners until SIGTERM/SIGINT, then drains in-flight requests for at most
/// `server.shutdown_grace`.
///
/// The CalDAV listener is served by `server.threads` worker threads, each with its own
/// single-threaded runtime and its own upstream connection pool, all accepting on the
/// same socket. A request, its upstream connection and both bodies then stay on one
/// thread: no cross-thread wake-up per hop, which is what a work-stealing runtime pays
/// for a proxy's request/response relay (measured in docs/performance.md). This runtime
/// keeps the signals, the admin listener and the periodic gc.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let listener = std::net::TcpListener::bind(config.server.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    listener.set_nonblocking(true)?;
    let admin = match config.server.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (admin): {e}"))?,
        ),
        None => None,
    };
    let state = Arc::new(State::new(config)?);
    startup_probe(&state).await?;
    tokio::spawn(crate::gc::note_leftovers(state.clone()));
    let threads = state.config.server.threads;
    tracing::info!(
        listen = %listener.local_addr()?,
        threads,
        upstream = %state.config.upstream.url,
        public_url = %state.config.server.public_url,
        "calattach listening"
    );
    if let Some(admin) = admin {
        tracing::info!(admin = %admin.local_addr()?, "admin listening");
        tokio::spawn(serve_admin(admin, state.clone()));
    }
    if let Some(interval) = state.config.gc.interval {
        tracing::info!(?interval, "periodic gc enabled");
        tokio::spawn(crate::gc::periodic(state.clone(), interval));
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(threads);
    for n in 0..threads {
        let listener = listener.try_clone()?;
        let worker_state = Arc::new(state.for_worker()?);
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("calattach-{n}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start a worker runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    tokio::spawn(timer_heartbeat());
                    match TcpListener::from_std(listener) {
                        Ok(listener) => run_until_shutdown(listener, worker_state, stop).await,
                        Err(e) => tracing::error!(error = %e, "cannot register the listener"),
                    }
                });
                drop(done);
            })?;
    }
    drop(done_tx);
    drop(listener);
    shutdown.await;
    let _ = stop_tx.send(true);
    // Every worker drops its sender when it has drained (or its grace ran out).
    while done_rx.recv().await.is_some() {}
    Ok(())
}

/// Keeps a timer due within the next second on a worker's runtime, for as long as it runs.
///
/// Every request sets timers (hyper's header-read timeout for the next request on the
/// connection, the upstream response timeout), and tokio's time driver wakes its own
/// thread through an eventfd — a `write` and an extra `epoll_wait` — whenever a new timer
/// is due before the earliest one it knew of when it last parked. With this tick pending,
/// the per-request timers (seconds away) are never the earliest, and the wake-up happens
/// once a second instead of once per request (docs/performance.md).
async fn timer_heartbeat() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Refuses to run in front of an upstream that offers managed attachments itself; an
/// unreachable upstream is only a warning (it may come up later; `/readyz` tells).
async fn startup_probe(state: &State) -> anyhow::Result<()> {
    match probe_upstream(&state.upstream).await {
        Ok(headers) if options::upstream_has_managed_attachments(&headers) => {
            anyhow::bail!(
                "the upstream {} already advertises calendar-managed-attachments; \
                 calattach must not run in front of a server that manages attachments itself",
                state.config.upstream.url
            )
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(upstream = %state.config.upstream.url, error = %e, "upstream not reachable at start");
            Ok(())
        }
    }
}

/// `OPTIONS /` upstream; returns its headers whatever the status.
pub async fn probe_upstream(upstream: &Upstream) -> Result<http::HeaderMap, Error> {
    let mut req = Request::new(body::empty());
    *req.method_mut() = Method::OPTIONS;
    *req.uri_mut() = upstream.uri_for("/")?;
    let resp = upstream.send(req).await?;
    Ok(resp.headers().clone())
}

async fn run_until_shutdown(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let shutdown = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(state.config.server.max_header_bytes)
        .max_headers(state.config.server.max_headers)
        .keep_alive(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn_state = state.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let state = conn_state.clone();
                    async move { Ok::<_, Infallible>(serve_request(req, &state, peer).await) }
                });
                let conn = http.serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = state.config.server.shutdown_grace;
    tracing::info!(?grace, "shutting down: draining in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over, closing remaining connections"),
    }
}

/// Registers the SIGTERM/SIGINT handlers now (synchronously, so a signal that arrives
/// during the startup probe is not lost or fatal) and returns the future that resolves
/// on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// A fresh request id, `<process prefix>-<counter>`: unique per process start (a random
/// 64-bit prefix) and cheap — no random-number system call per request as with UUIDs.
fn mint_request_id() -> HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| format!("{:016x}", rand::random::<u64>()));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(prefix.len() + 21);
    id.push_str(prefix);
    id.push('-');
    id.push_str(itoa::Buffer::new().format(n));
    HeaderValue::from_maybe_shared(Bytes::from(id))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Headers whose values are credentials: marked sensitive before anything could log
/// them (`HeaderValue`'s `Debug` then prints `Sensitive`).
const SENSITIVE: [header::HeaderName; 3] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];

/// One request on a client connection, from the first byte of its head to the response
/// head; the body is relayed afterwards, and the access line is written when it ends.
///
/// Panics become a 500, credentials are marked sensitive, the request id is set and
/// echoed, and a span is opened — inline rather than as tower-http layers, which cost a
/// response-body box and a span for every request, forwarded ones included; measured in
/// docs/performance.md.
pub async fn serve_request(
    mut req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Response<AccessLog> {
    use futures_util::FutureExt;
    use tracing::Instrument;

    let started = Instant::now();
    for name in &SENSITIVE {
        if let Some(v) = req.headers_mut().get_mut(name) {
            v.set_sensitive(true);
        }
    }
    // Keep a client-supplied id (it may come from a proxy in front), else mint one; it
    // goes upstream with the request and back on the response.
    let id = match req.headers().get(X_REQUEST_ID) {
        Some(id) => id.clone(),
        None => {
            let id = mint_request_id();
            req.headers_mut().insert(X_REQUEST_ID, id.clone());
            id
        }
    };
    let method = req.method().clone();
    let uri = req.uri().clone();
    let route = router::route(&method, &uri, &state.config.attachments.prefix);
    let action = (route == Route::Attach).then(|| crate::metrics::Metrics::attach_action(&uri));
    let handled = handle(req, state, peer, route);
    // Forwarded requests log nothing of their own on success, so they skip the span:
    // their few warnings name the path themselves, and the access line carries the id.
    let outcome = if route == Route::Forward {
        std::panic::AssertUnwindSafe(handled).catch_unwind().await
    } else {
        let span = tracing::info_span!(
            "request",
            id = id.to_str().unwrap_or(""),
            method = %method,
            path = uri.path(),
        );
        std::panic::AssertUnwindSafe(handled.instrument(span))
            .catch_unwind()
            .await
    };
    let mut resp = outcome.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("");
        tracing::error!(
            id = id.to_str().unwrap_or(""),
            panic = what,
            "request handler panicked"
        );
        Error::Internal("request handler panicked".into()).into_response()
    });
    if !resp.headers().contains_key(X_REQUEST_ID) {
        resp.headers_mut().insert(X_REQUEST_ID, id.clone());
    }
    crate::metrics::get().attachment_done(action, resp.status());
    AccessLog::wrap(resp, id, method, uri, route, started)
}

const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// Routes one request (DESIGN §2) and turns errors into responses.
pub async fn handle(
    req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
    route: Route,
) -> Response<Body> {
    // Only calattach's own routes answer 401 themselves (see below).
    let path = (route != Route::Forward).then(|| req.uri().path().to_owned());
    // calattach's own routes are boxed: their futures are kilobytes large, and a plain
    // `match` would make every request's future — forwarded ones included — as large
    // as the largest of them, moved and touched on every request.
    let result = match route {
        Route::Forward => state.upstream.forward(req, peer).await,
        Route::Options => forward_options(req, state, peer).await,
        Route::AttachmentOptions => Ok(attachment_options()),
        Route::AttachmentWrite => {
            // Refused before the body: read it on so the client hears the 405.
            let (parts, incoming) = req.into_parts();
            drop(body::Lingering::new(incoming, &parts.headers));
            Err(Error::MethodNotAllowed {
                allow: ATTACHMENT_ALLOW,
            })
        }
        Route::Attach => Box::pin(attach::post::handle(req, state)).await,
        Route::Download => Box::pin(attach::download::handle(req, state)).await,
        Route::Page => Box::pin(crate::web::handle(req, state)).await,
        Route::Guard => Box::pin(attach::guard::handle(req, state, peer)).await,
        Route::Props => Box::pin(crate::props::http::handle(req, state, peer)).await,
    };
    match result {
        Ok(resp) => resp,
        // RFC 9110 §11.6.1: a 401 carries a challenge; calattach's own are the
        // upstream's, so a client answers them as it would the upstream's.
        Err(Error::Unauthorized { message, challenge }) if challenge.is_empty() => {
            let path = path.as_deref().unwrap_or("/");
            Error::Unauthorized {
                message,
                challenge: attach::challenge_for(state, path).await,
            }
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

const ATTACHMENT_ALLOW: &str = "GET, HEAD, OPTIONS";

async fn forward_options(
    req: Request<Incoming>,
    state: &State,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let mut resp = state.upstream.forward(req, peer).await?;
    if options::upstream_has_managed_attachments(resp.headers()) {
        tracing::error!("upstream advertises calendar-managed-attachments itself; not adding ours");
    } else {
        options::add_dav_tokens(resp.headers_mut(), state.config.attachments.no_recurrence);
    }
    Ok(resp)
}

fn attachment_options() -> Response<Body> {
    let mut resp = Response::new(body::empty());
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(ATTACHMENT_ALLOW));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

// === admin listener ===

async fn serve_admin(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(admin(req, &state).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn admin(req: Request<Incoming>, state: &State) -> Response<Body> {
    let (status, text) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/metrics" => return metrics_response(),
        "/readyz" => match probe_upstream(&state.upstream).await {
            Ok(_) => (StatusCode::OK, "ready\n".to_owned()),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: upstream: {e}\n"),
            ),
        },
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `GET /metrics`: the Prometheus text exposition (src/metrics.rs).
fn metrics_response() -> Response<Body> {
    let mut resp = Response::new(body::full(crate::metrics::get().encode()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    resp
}

// === access log ===

/// Counts response body bytes and writes one access log line when the body ends or is
/// dropped (client gone). The line names the request itself (`id`, `method`, `path`), so
/// it needs no span. It is the body type of every response on the CalDAV listener (not
/// boxed again).
pub struct AccessLog {
    inner: Body,
    id: HeaderValue,
    method: Method,
    uri: Uri,
    route: Route,
    status: StatusCode,
    bytes: u64,
    started: Instant,
    done: bool,
}

impl AccessLog {
    fn wrap(
        resp: Response<Body>,
        id: HeaderValue,
        method: Method,
        uri: Uri,
        route: Route,
        started: Instant,
    ) -> Response<AccessLog> {
        let status = resp.status();
        resp.map(|inner| AccessLog {
            inner,
            id,
            method,
            uri,
            route,
            status,
            bytes: 0,
            started,
            done: false,
        })
    }

    fn finish(&mut self, complete: bool) {
        if self.done {
            return;
        }
        self.done = true;
        crate::metrics::get().request_done(
            self.route.as_str(),
            &self.method,
            self.status,
            self.bytes,
        );
        tracing::info!(
            id = self.id.to_str().unwrap_or(""),
            method = self.method.as_str(),
            path = self.uri.path(),
            status = self.status.as_u16(),
            bytes = self.bytes,
            duration_us = self.started.elapsed().as_micros() as u64,
            route = self.route.as_str(),
            complete,
            "access"
        );
    }
}

impl http_body::Body for AccessLog {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        if let Poll::Ready(None) = polled {
            return Poll::Ready(None);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let complete = http_body::Body::is_end_stream(&self.inner);
        self.finish(complete);
    }
}
