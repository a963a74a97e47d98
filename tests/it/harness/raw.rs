//! Hand-written HTTP/1.1 over TCP, for what real servers cannot show.
//!
//! Each upstream here runs on its own std threads with blocking I/O, so it
//! works the same under any tokio runtime flavour and stays out of the way
//! of the code under test.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// === blocking client helpers (readiness probes, setup) ===

/// Sends a raw request and returns the response status, or None when the
/// connection fails or the answer is not HTTP.
pub fn blocking_request(addr: SocketAddr, request: &str) -> Option<u16> {
    blocking_exchange(addr, request).map(|(status, _)| status)
}

/// Sends a raw request (with `Connection: close`) and returns the body of a
/// 2xx answer as text.
pub fn blocking_get_body(addr: SocketAddr, request: &str) -> Option<String> {
    match blocking_exchange(addr, request)? {
        (200..=299, body) => Some(String::from_utf8_lossy(&body).into_owned()),
        _ => None,
    }
}

fn blocking_exchange(addr: SocketAddr, request: &str) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader).ok()??;
    let status = head.start.split(' ').nth(1).and_then(|s| s.parse().ok())?;
    let mut body = Vec::new();
    if head.content_length().is_some() || head.is_chunked() {
        read_body(&mut reader, &head, |chunk| body.extend_from_slice(chunk)).ok()?;
    } else {
        reader.read_to_end(&mut body).ok()?;
    }
    Some((status, body))
}

// === message parsing ===

/// A request or response head.
#[derive(Debug, Clone)]
pub struct Head {
    /// Request line or status line.
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }
}

/// Reads a head; Ok(None) on a clean EOF before any byte.
pub fn read_head<R: BufRead>(reader: &mut R) -> io::Result<Option<Head>> {
    let mut start = String::new();
    if reader.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    Ok(Some(Head {
        start: start.trim_end().to_string(),
        headers,
    }))
}

/// Reads a request body framed by Content-Length or chunked encoding,
/// handing each piece to `sink`; returns the number of body bytes.
pub fn read_body<R: BufRead>(
    reader: &mut R,
    head: &Head,
    mut sink: impl FnMut(&[u8]),
) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    if head.is_chunked() {
        loop {
            let mut size_line = String::new();
            if reader.read_line(&mut size_line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let size_text = size_line.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers (if any) end with an empty line.
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        return Ok(total);
                    }
                }
            }
            let mut left = size;
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                sink(&buf[..n]);
                left -= n as u64;
                total += n as u64;
            }
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
        }
    } else {
        let mut left = head.content_length().unwrap_or(0);
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = reader.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            sink(&buf[..n]);
            left -= n as u64;
            total += n as u64;
        }
        Ok(total)
    }
}

// === upstreams ===

/// An origin URL where nothing listens (the port was free a moment ago).
pub fn down_origin() -> String {
    format!("http://127.0.0.1:{}", super::free_port())
}

/// A listener that runs `handle` for each connection on its own thread.
/// It stops accepting when dropped (the accept thread then exits on the
/// next connection attempt or at process end).
pub struct RawServer {
    port: u16,
    stopped: Arc<AtomicBool>,
    /// Requests seen so far (method and target of each head).
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl RawServer {
    pub fn spawn<F>(handle: F) -> RawServer
    where
        F: Fn(TcpStream, &Arc<Mutex<Vec<String>>>) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw upstream");
        let port = listener.local_addr().expect("local addr").port();
        let stopped = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handle = Arc::new(handle);
        {
            let stopped = stopped.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let handle = handle.clone();
                    let seen = seen.clone();
                    std::thread::spawn(move || handle(stream, &seen));
                }
            });
        }
        RawServer {
            port,
            stopped,
            seen,
        }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(super::loopback(self.port));
    }
}

/// Reads every request to its end, discards the body, answers `201 Created`.
/// Counts body bytes, so a test can prove what arrived.
pub struct Sink {
    pub server: RawServer,
    pub bytes: Arc<AtomicU64>,
    pub requests: Arc<AtomicUsize>,
}

impl Sink {
    pub fn spawn() -> Sink {
        let bytes = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (b, r) = (bytes.clone(), requests.clone());
        let server = RawServer::spawn(move |stream, seen| {
            let mut writer = match stream.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            let mut reader = BufReader::with_capacity(256 * 1024, stream);
            while let Ok(Some(head)) = read_head(&mut reader) {
                seen.lock().unwrap().push(head.start.clone());
                let Ok(n) = read_body(&mut reader, &head, |_| {}) else {
                    return;
                };
                b.fetch_add(n, Ordering::SeqCst);
                r.fetch_add(1, Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nX-Sink-Bytes: {n}\r\n\r\n"
                );
                if writer.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
        });
        Sink {
            server,
            bytes,
            requests,
        }
    }
}

/// Accepts connections, reads whatever arrives, never answers.
pub fn hang() -> RawServer {
    RawServer::spawn(|mut stream, seen| {
        seen.lock().unwrap().push("connection".into());
        let mut buf = [0u8; 64 * 1024];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    })
}

/// Answers requests for `path` with `200` and `body`, but only after the
/// test sends on `release`; `arrived` reports each such request first.
/// Other requests (calattach probes its upstream with `OPTIONS /` at start)
/// get an immediate `200` with a CalDAV `DAV:` header.
pub struct Held {
    pub server: RawServer,
    pub arrived: mpsc::Receiver<String>,
    pub release: mpsc::Sender<()>,
}

impl Held {
    pub fn spawn(path: &'static str, body: &'static str) -> Held {
        let (arrived_tx, arrived) = mpsc::channel::<String>();
        let (release, release_rx) = mpsc::channel::<()>();
        let arrived_tx = Mutex::new(arrived_tx);
        let release_rx = Mutex::new(release_rx);
        let server = RawServer::spawn(move |stream, seen| {
            let Ok(mut writer) = stream.try_clone() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            while let Ok(Some(head)) = read_head(&mut reader) {
                if read_body(&mut reader, &head, |_| {}).is_err() {
                    return;
                }
                seen.lock().unwrap().push(head.start.clone());
                if head.target() != path {
                    let answer = "HTTP/1.1 200 OK\r\nDAV: 1, 2, 3, calendar-access\r\nContent-Length: 0\r\n\r\n";
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                    continue;
                }
                let _ = arrived_tx.lock().unwrap().send(head.start.clone());
                if release_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(60))
                    .is_err()
                {
                    return;
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if writer.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
        });
        Held {
            server,
            arrived,
            release,
        }
    }
}

/// Answers every request with `200`, `Content-Type: application/octet-stream`
/// and the request body as received, byte for byte.
pub fn echo() -> RawServer {
    RawServer::spawn(|stream, seen| {
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        while let Ok(Some(head)) = read_head(&mut reader) {
            seen.lock().unwrap().push(head.start.clone());
            let mut body = Vec::new();
            if read_body(&mut reader, &head, |c| body.extend_from_slice(c)).is_err() {
                return;
            }
            let mut answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            answer.extend_from_slice(&body);
            if writer.write_all(&answer).is_err() {
                return;
            }
        }
    })
}

/// Answers the first request with a chunked body in two chunks: `first`,
/// then (only after the test sends on `go`) `second` and the last chunk.
/// A proxy that buffers responses cannot deliver `first` before `go`.
pub struct GatedResponse {
    pub server: RawServer,
    pub go: mpsc::Sender<()>,
}

impl GatedResponse {
    pub fn spawn(first: &'static str, second: &'static str) -> GatedResponse {
        let (go, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let server = RawServer::spawn(move |stream, seen| {
            let Ok(mut writer) = stream.try_clone() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let Ok(Some(head)) = read_head(&mut reader) else {
                return;
            };
            seen.lock().unwrap().push(head.start.clone());
            if read_body(&mut reader, &head, |_| {}).is_err() {
                return;
            }
            let start = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n",
                first.len()
            );
            if writer.write_all(start.as_bytes()).is_err() {
                return;
            }
            let _ = writer.flush();
            // Without `go` (the proxy held `first` back) the response ends
            // anyway after the timeout, so the test fails instead of hanging.
            let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
            let rest = format!("{:x}\r\n{second}\r\n0\r\n\r\n", second.len());
            let _ = writer.write_all(rest.as_bytes());
        });
        GatedResponse { server, go }
    }
}

/// Reads one chunked request and reports each body piece as it arrives on
/// `pieces`; answers `201` with the total length once the body ends.
pub struct ReportingSink {
    pub server: RawServer,
    pub pieces: mpsc::Receiver<Vec<u8>>,
    pub head: mpsc::Receiver<Head>,
}

impl ReportingSink {
    pub fn spawn() -> ReportingSink {
        let (piece_tx, pieces) = mpsc::channel::<Vec<u8>>();
        let (head_tx, head) = mpsc::channel::<Head>();
        let piece_tx = Mutex::new(piece_tx);
        let head_tx = Mutex::new(head_tx);
        let server = RawServer::spawn(move |stream, seen| {
            let Ok(mut writer) = stream.try_clone() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let Ok(Some(h)) = read_head(&mut reader) else {
                return;
            };
            seen.lock().unwrap().push(h.start.clone());
            let _ = head_tx.lock().unwrap().send(h.clone());
            let tx = piece_tx.lock().unwrap().clone();
            let Ok(n) = read_body(&mut reader, &h, |c| {
                let _ = tx.send(c.to_vec());
            }) else {
                return;
            };
            let answer =
                format!("HTTP/1.1 201 Created\r\nContent-Length: 0\r\nX-Body-Bytes: {n}\r\n\r\n");
            let _ = writer.write_all(answer.as_bytes());
        });
        ReportingSink {
            server,
            pieces,
            head,
        }
    }
}
