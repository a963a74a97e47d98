//! A fault-injecting TCP proxy between calattach and a real peer (the CalDAV upstream,
//! or moto for S3 storage).
//!
//! Bytes are forwarded both ways unchanged; the peer behind it is the real server, so
//! what calattach sees after a fault (a half-written S3 part, a commit the upstream
//! applied but whose answer never came) is what a real deployment would see — no mock
//! CalDAV server is involved. Only the one `Respond` action answers by itself (a canned
//! status instead of forwarding one request), for "the upstream refused this PUT with a
//! 500", which no real server can be made to do on demand.
//!
//! Two kinds of control:
//!
//! * [`Mode`], per connection, taken when the connection is accepted: forward
//!   ([`Mode::Pass`]), accept and close at once ([`Mode::Refuse`]), accept and never
//!   answer ([`Mode::Hang`]), or forward `n` request bytes and then close
//!   ([`Mode::CloseAfter`]). [`FaultProxy::close_all`] closes every open connection, so
//!   pooled connections from before a mode change do not escape it.
//! * [`Action`], per request: the request direction is parsed as HTTP/1.1
//!   (`Content-Length` or chunked framing), so one request on a kept-alive connection can
//!   be told apart from the next. [`FaultProxy::on`] arms a one-shot rule for the next
//!   request whose request line starts with a prefix (e.g. `"PUT /user1/"`): let it
//!   pass, hold it before it reaches the peer, forward it but hold the peer's response,
//!   or answer it with a status. The returned [`Trigger`] reports when the request
//!   passed and when the peer answered, and releases what it holds.
//!
//! It runs on its own thread with its own tokio runtime, so it keeps working whatever
//! the test's runtime flavour and while a test blocks a thread.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// What happens to connections accepted from now on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Accept, then close without reading.
    Refuse,
    /// Accept, read and discard everything, never answer.
    Hang,
    /// Forward this many request bytes, then close both sides.
    CloseAfter(u64),
}

/// What happens to the next request matching a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Forward it (the trigger still reports it).
    Pass,
    /// Do not forward it until released: [`Release::Deliver`] forwards it,
    /// [`Release::Drop`] closes the connection. Unreleased, it hangs.
    HoldRequest,
    /// Forward it, but keep the peer's response until released: [`Release::Deliver`]
    /// delivers it, [`Release::Drop`] closes the connection without it.
    HoldResponse,
    /// Read it, do not forward it, answer with this status and close.
    Respond(u16),
}

/// How a held request or response is let go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    Deliver,
    Drop,
}

/// The test's end of an armed rule.
pub struct Trigger {
    passed: Option<oneshot::Receiver<String>>,
    answered: Option<oneshot::Receiver<()>>,
    release: Option<oneshot::Sender<Release>>,
}

impl Trigger {
    /// Waits until the matching request arrived (for `HoldRequest`), was forwarded whole
    /// (`Pass`, `HoldResponse`) or was answered (`Respond`); returns its request line.
    pub async fn passed(&mut self, within: Duration) -> String {
        let rx = self.passed.take().expect("passed() awaited twice");
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => panic!("fault proxy: rule dropped before its request passed"),
            Err(_) => panic!("fault proxy: no matching request within {within:?}"),
        }
    }

    /// Waits until the peer's response to the held request began to arrive (the peer
    /// has processed the request). Only for `HoldResponse`.
    pub async fn answered(&mut self, within: Duration) {
        let rx = self.answered.take().expect("answered() awaited twice");
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(())) => (),
            Ok(Err(_)) => panic!("fault proxy: connection closed before the peer answered"),
            Err(_) => panic!("fault proxy: the peer did not answer within {within:?}"),
        }
    }

    /// Lets the held request or response go (a no-op once the connection is gone).
    pub fn release(&mut self, how: Release) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(how);
        }
    }
}

struct Rule {
    prefix: String,
    action: Action,
    passed: oneshot::Sender<String>,
    answered: oneshot::Sender<()>,
    release: oneshot::Receiver<Release>,
}

struct Shared {
    target: SocketAddr,
    mode: Mutex<Mode>,
    rules: Mutex<VecDeque<Rule>>,
    /// Request lines in arrival order.
    seen: Mutex<Vec<String>>,
    /// Bumped by `close_all`; every connection task watches it.
    generation: watch::Sender<u64>,
    /// Connections accepted so far.
    accepted: std::sync::atomic::AtomicUsize,
}

/// A running proxy; dropped → its runtime stops and every connection closes.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let (generation, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            target,
            mode: Mutex::new(Mode::Pass),
            rules: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            generation,
            accepted: std::sync::atomic::AtomicUsize::new(0),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fault proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                tokio::select! {
                    _ = accept_loop(listener, s) => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        FaultProxy {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets the mode for connections accepted from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Closes every connection open now (new ones follow the mode).
    pub fn close_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Arms a one-shot rule for the next request whose request line starts with
    /// `prefix`. Rules match in the order they were armed.
    pub fn on(&self, prefix: &str, action: Action) -> Trigger {
        let (passed_tx, passed) = oneshot::channel();
        let (answered_tx, answered) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        self.shared.rules.lock().unwrap().push_back(Rule {
            prefix: prefix.to_string(),
            action,
            passed: passed_tx,
            answered: answered_tx,
            release: release_rx,
        });
        Trigger {
            passed: Some(passed),
            answered: Some(answered),
            release: Some(release),
        }
    }

    /// Disarms every rule not yet matched.
    pub fn clear_rules(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// How many connections the proxy has accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Request lines seen so far, in order.
    pub fn seen(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let _ = client.set_nodelay(true);
        shared
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mode = *shared.mode.lock().unwrap();
        let closed = shared.generation.subscribe();
        let shared = shared.clone();
        tokio::spawn(async move {
            match mode {
                Mode::Refuse => drop(client),
                Mode::Hang => hang(client, closed).await,
                Mode::Pass => connection(client, shared, None, closed).await,
                Mode::CloseAfter(n) => connection(client, shared, Some(n), closed).await,
            }
        });
    }
}

async fn hang(mut client: TcpStream, mut closed: watch::Receiver<u64>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            r = client.read(&mut buf) => if !matches!(r, Ok(n) if n > 0) { return },
            _ = closed.changed() => return,
        }
    }
}

/// A response hold handed from the request pump to the response pump.
struct Hold {
    answered: oneshot::Sender<()>,
    release: oneshot::Receiver<Release>,
}

async fn connection(
    client: TcpStream,
    shared: Arc<Shared>,
    budget: Option<u64>,
    mut closed: watch::Receiver<u64>,
) {
    let Ok(upstream) = TcpStream::connect(shared.target).await else {
        return; // the client sees the connection close
    };
    let _ = upstream.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (up_r, up_w) = upstream.into_split();
    let client_w = Arc::new(tokio::sync::Mutex::new(client_w));
    let (holds_tx, holds_rx) = mpsc::unbounded_channel::<Hold>();
    let mut requests = Box::pin(request_pump(
        client_r,
        up_w,
        client_w.clone(),
        shared,
        budget,
        holds_tx,
    ));
    let mut responses = Box::pin(response_pump(up_r, client_w, holds_rx));
    tokio::select! {
        ended = &mut requests => {
            if ended {
                // The client finished cleanly: let the last response through.
                tokio::select! {
                    _ = &mut responses => {}
                    _ = closed.changed() => {}
                }
            }
        }
        _ = &mut responses => {}
        _ = closed.changed() => {}
    }
    // Dropping both pumps closes both sockets.
}

/// Forwards requests one by one, applying rules. Returns true on a clean end (client
/// EOF between requests), false when the connection must close.
async fn request_pump(
    mut client: OwnedReadHalf,
    mut up: OwnedWriteHalf,
    client_w: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    shared: Arc<Shared>,
    budget: Option<u64>,
    holds: mpsc::UnboundedSender<Hold>,
) -> bool {
    let mut out = Budgeted {
        up: &mut up,
        left: budget,
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let _ = out.up.shutdown().await;
                    return buf.is_empty();
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head: Vec<u8> = buf.drain(..head_end).collect();
        let text = String::from_utf8_lossy(&head).into_owned();
        let line = text.lines().next().unwrap_or("").to_string();
        shared.seen.lock().unwrap().push(line.clone());
        let framing = Framing::of(&text);
        let rule = {
            let mut rules = shared.rules.lock().unwrap();
            let at = rules.iter().position(|r| line.starts_with(&r.prefix));
            at.and_then(|i| rules.remove(i))
        };
        let Some(rule) = rule else {
            if out.write(&head).await.is_err() {
                return false;
            }
            if forward_body(&mut client, &mut out, &mut buf, framing)
                .await
                .is_err()
            {
                return false;
            }
            continue;
        };
        match rule.action {
            Action::Pass => {
                if out.write(&head).await.is_err()
                    || forward_body(&mut client, &mut out, &mut buf, framing)
                        .await
                        .is_err()
                {
                    return false;
                }
                let _ = rule.passed.send(line);
            }
            Action::Respond(status) => {
                if discard_body(&mut client, &mut buf, framing).await.is_err() {
                    return false;
                }
                let answer = format!(
                    "HTTP/1.1 {status} Injected\r\nContent-Type: text/plain\r\n\
                     Content-Length: 9\r\nConnection: close\r\n\r\ninjected\n"
                );
                let mut w = client_w.lock().await;
                let _ = w.write_all(answer.as_bytes()).await;
                let _ = w.shutdown().await;
                let _ = rule.passed.send(line);
                // Keep the connection until the client closes it, so the answer is read.
                let mut sink = [0u8; 1024];
                while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
                return false;
            }
            Action::HoldRequest => {
                let _ = rule.passed.send(line);
                match rule.release.await {
                    Ok(Release::Deliver) => {
                        if out.write(&head).await.is_err()
                            || forward_body(&mut client, &mut out, &mut buf, framing)
                                .await
                                .is_err()
                        {
                            return false;
                        }
                    }
                    _ => return false,
                }
            }
            Action::HoldResponse => {
                let _ = holds.send(Hold {
                    answered: rule.answered,
                    release: rule.release,
                });
                if out.write(&head).await.is_err()
                    || forward_body(&mut client, &mut out, &mut buf, framing)
                        .await
                        .is_err()
                {
                    return false;
                }
                let _ = rule.passed.send(line);
            }
        }
    }
}

/// Copies the peer's bytes to the client; when a hold is registered, the next bytes
/// (the held request's response) wait for its release.
async fn response_pump(
    mut up: OwnedReadHalf,
    client_w: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    mut holds: mpsc::UnboundedReceiver<Hold>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match up.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Ok(hold) = holds.try_recv() {
            let _ = hold.answered.send(());
            match hold.release.await {
                Ok(Release::Deliver) => {}
                _ => return,
            }
        }
        if client_w.lock().await.write_all(&chunk[..n]).await.is_err() {
            return;
        }
    }
}

/// The upstream write half with an optional byte budget ([`Mode::CloseAfter`]).
struct Budgeted<'a> {
    up: &'a mut OwnedWriteHalf,
    left: Option<u64>,
}

impl Budgeted<'_> {
    /// Writes `bytes`, or as many as the budget allows and then fails.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), ()> {
        match self.left {
            None => self.up.write_all(bytes).await.map_err(|_| ()),
            Some(left) => {
                let n = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                self.up.write_all(&bytes[..n]).await.map_err(|_| ())?;
                self.left = Some(left - n as u64);
                if n < bytes.len() {
                    let _ = self.up.flush().await;
                    return Err(());
                }
                Ok(())
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

impl Framing {
    fn of(head: &str) -> Framing {
        let mut framing = Framing::None;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
            {
                return Framing::Chunked;
            }
            if name.eq_ignore_ascii_case("content-length") {
                if let Ok(n) = value.parse() {
                    framing = Framing::Length(n);
                }
            }
        }
        framing
    }
}

/// Moves the body described by `framing` from `buf` (already read) and `client` to `out`.
async fn forward_body(
    client: &mut OwnedReadHalf,
    out: &mut Budgeted<'_>,
    buf: &mut Vec<u8>,
    framing: Framing,
) -> Result<(), ()> {
    match framing {
        Framing::None => Ok(()),
        Framing::Length(mut n) => {
            while n > 0 {
                if buf.is_empty() {
                    fill(client, buf).await?;
                }
                let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                let part: Vec<u8> = buf.drain(..take).collect();
                out.write(&part).await?;
                n -= take as u64;
            }
            Ok(())
        }
        Framing::Chunked => loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i + 2;
                }
                fill(client, buf).await?;
            };
            let line: Vec<u8> = buf.drain(..line_end).collect();
            out.write(&line).await?;
            let size_text = String::from_utf8_lossy(&line);
            let size_text = size_text.trim().split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16).map_err(|_| ())?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find(buf, b"\r\n") {
                            break i + 2;
                        }
                        fill(client, buf).await?;
                    };
                    let t: Vec<u8> = buf.drain(..end).collect();
                    out.write(&t).await?;
                    if t.len() == 2 {
                        return Ok(());
                    }
                }
            }
            let mut n = size + 2; // data and its CRLF
            while n > 0 {
                if buf.is_empty() {
                    fill(client, buf).await?;
                }
                let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                let part: Vec<u8> = buf.drain(..take).collect();
                out.write(&part).await?;
                n -= take as u64;
            }
        },
    }
}

/// Reads and drops the body described by `framing`.
async fn discard_body(
    client: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
    framing: Framing,
) -> Result<(), ()> {
    match framing {
        Framing::None => Ok(()),
        Framing::Length(mut n) => {
            while n > 0 {
                if buf.is_empty() {
                    fill(client, buf).await?;
                }
                let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                buf.drain(..take);
                n -= take as u64;
            }
            Ok(())
        }
        Framing::Chunked => {
            // Until the terminating `0\r\n\r\n` (no trailers expected from calattach).
            loop {
                if let Some(i) = find(buf, b"0\r\n\r\n") {
                    buf.drain(..i + 5);
                    return Ok(());
                }
                fill(client, buf).await?;
            }
        }
    }
}

async fn fill(client: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> Result<(), ()> {
    let mut chunk = vec![0u8; 64 * 1024];
    match client.read(&mut chunk).await {
        Ok(0) | Err(_) => Err(()),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
