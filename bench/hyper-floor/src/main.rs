//! `hyper-floor <listen> <upstream host:port>`: forwards every request to one origin and
//! nothing else — no logging, no forwarding headers, no hop-by-hop clean-up, no timeouts,
//! no metrics. It is not a usable proxy; it measures what hyper and tokio cost per request
//! on calattach's architecture (one single-threaded runtime per core sharing the
//! listening socket, upstream connections on the same thread), so that
//! `bench/cpu-per-request` can tell calattach's own costs from its libraries'.
//!
//! Each client connection keeps one upstream connection, opened on its first request.

use std::cell::RefCell;
use std::rc::Rc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Slot = Rc<RefCell<Option<SendRequest<Incoming>>>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream] = &args[..] else {
        eprintln!("usage: hyper-floor <listen addr> <upstream host:port>");
        std::process::exit(64);
    };
    let upstream: &'static str = upstream.clone().leak();
    let listener = std::net::TcpListener::bind(listen).expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let listener = listener.try_clone().expect("clone listener");
            std::thread::spawn(move || worker(listener, upstream))
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

fn worker(listener: std::net::TcpListener, upstream: &'static str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(async move {
                let slot: Slot = Rc::new(RefCell::new(None));
                let svc = hyper::service::service_fn(move |req| forward(req, slot.clone(), upstream));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

async fn forward(
    mut req: Request<Incoming>,
    slot: Slot,
    upstream: &'static str,
) -> Result<Response<Incoming>, std::io::Error> {
    let reusable = slot.borrow_mut().take().filter(|s| s.is_ready());
    let mut sender = match reusable {
        Some(sender) => sender,
        None => {
            let stream = tokio::net::TcpStream::connect(upstream).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            tokio::task::spawn_local(conn);
            sender
        }
    };
    let target = req.uri().path_and_query().cloned();
    let mut parts = hyper::http::uri::Parts::default();
    parts.path_and_query = target;
    *req.uri_mut() = Uri::from_parts(parts).map_err(std::io::Error::other)?;
    let resp = sender.send_request(req).await.map_err(std::io::Error::other)?;
    *slot.borrow_mut() = Some(sender);
    Ok(resp)
}
