//! The transparent forwarding path (DESIGN §3) and the upstream client every other
//! route uses for its internal requests.

pub mod hop_by_hop;
pub mod origin;

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use url::Url;

use crate::body::{self, Body};
use crate::config::{ServerConfig, UpstreamConfig};
use crate::error::Error;

/// The upstream CalDAV server: one pooled HTTP/1.1 client, cloned cheaply.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    /// `http://host:port`, no trailing slash.
    origin: String,
    authority: HeaderValue,
    url: Url,
    public: Url,
    public_host: HeaderValue,
    response_timeout: Duration,
    body_idle_timeout: Duration,
    preserve_host: bool,
    x_forwarded: bool,
    forwarded: bool,
}

// === impl Upstream ===

impl Upstream {
    pub fn new(cfg: &UpstreamConfig, server: &ServerConfig) -> Result<Upstream, Error> {
        if cfg.url.scheme() != "http" {
            // TLS to the upstream is left to a sidecar for now; see docs/configuration.md.
            return Err(Error::Config(format!(
                "upstream.url = {:?}: only http:// upstreams are supported",
                cfg.url.as_str()
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        let origin = cfg.url.as_str().trim_end_matches('/').to_owned();
        let authority = authority_of(&cfg.url);
        let public_host = authority_of(&server.public_url);
        Ok(Upstream {
            client,
            origin,
            authority,
            url: cfg.url.clone(),
            public: server.public_url.clone(),
            public_host,
            response_timeout: cfg.response_timeout,
            body_idle_timeout: server.body_idle_timeout,
            preserve_host: cfg.preserve_host,
            x_forwarded: cfg.forwarded_headers.x_forwarded,
            forwarded: cfg.forwarded_headers.forwarded,
        })
    }

    /// The upstream URL for a request path (and query), e.g. `/user1/calendar/a.ics`.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, Error> {
        format!("{}{}", self.origin, path_and_query)
            .parse()
            .map_err(|e| Error::BadRequest(format!("invalid request target: {e}")))
    }

    pub fn public_url(&self) -> &Url {
        &self.public
    }

    /// How long a client request body may stall before it is abandoned.
    pub fn body_idle_timeout(&self) -> Duration {
        self.body_idle_timeout
    }

    /// The upstream's `host[:port]`, the `Host` of internal requests.
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// Sends one request upstream, waiting at most `response_timeout` for the response
    /// head. Unreachable → [`Error::UpstreamUnavailable`], no head in time →
    /// [`Error::UpstreamTimeout`]. The body streams afterwards without a deadline.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, Error> {
        let _timer = crate::metrics::get().upstream_timer();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                tracing::warn!(%method, %path, error = %error_chain(&e), "upstream request failed");
                Err(Error::UpstreamUnavailable)
            }
            Err(_) => {
                tracing::warn!(%method, %path, timeout = ?self.response_timeout, "upstream response timed out");
                Err(Error::UpstreamTimeout)
            }
        }
    }

    /// Like [`Upstream::send`] for calattach's own requests, whose bodies can be built
    /// again: a failure to connect is retried (twice, after 50 and 250 ms), since nothing
    /// was sent. A connection that cannot be made at all ends as
    /// [`Error::UpstreamUnreachable`], which tells callers the request was never sent —
    /// unlike [`Error::UpstreamUnavailable`] after a request went out.
    pub async fn send_retrying(
        &self,
        make: impl Fn() -> Result<Request<Body>, Error>,
    ) -> Result<Response<Incoming>, Error> {
        const BACKOFF: [u64; 2] = [50, 250];
        let mut attempt = 0;
        loop {
            let req = make()?;
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let _timer = crate::metrics::get().upstream_timer();
            match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(e)) if e.is_connect() => {
                    if let Some(ms) = BACKOFF.get(attempt) {
                        tracing::info!(%method, %path, attempt, error = %error_chain(&e), "connecting upstream failed, retrying");
                        tokio::time::sleep(Duration::from_millis(*ms)).await;
                        attempt += 1;
                        continue;
                    }
                    tracing::warn!(%method, %path, error = %error_chain(&e), "upstream unreachable");
                    return Err(Error::UpstreamUnreachable);
                }
                Ok(Err(e)) => {
                    tracing::warn!(%method, %path, error = %error_chain(&e), "upstream request failed");
                    return Err(Error::UpstreamUnavailable);
                }
                Err(_) => {
                    tracing::warn!(%method, %path, timeout = ?self.response_timeout, "upstream response timed out");
                    return Err(Error::UpstreamTimeout);
                }
            }
        }
    }

    /// Forwards a client request unchanged but for the documented rewrites, and relays
    /// the response the same way. Bodies stream in both directions.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Response<Body>, Error> {
        let (parts, incoming) = req.into_parts();
        let incoming = body::IdleTimeout::new(incoming, self.body_idle_timeout);
        let mut req = Request::from_parts(parts, body::boxed(incoming));
        self.prepare_request(&mut req, client)?;
        let resp = self.send(req).await?;
        Ok(self.relay_response(resp))
    }

    /// Rewrites a client request for the upstream: target URI, hop-by-hop fields, `Host`,
    /// forwarding headers.
    pub fn prepare_request(
        &self,
        req: &mut Request<Body>,
        client: SocketAddr,
    ) -> Result<(), Error> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .to_owned();
        *req.uri_mut() = self.uri_for(&pq)?;
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        hop_by_hop::strip_request(headers);
        let client_host = headers.get(header::HOST).cloned();
        if !self.preserve_host || client_host.is_none() {
            headers.insert(header::HOST, self.authority.clone());
        }
        let host = client_host.unwrap_or_else(|| self.public_host.clone());
        let proto = self.public.scheme();
        if self.x_forwarded {
            append(headers, "x-forwarded-for", &client.ip().to_string());
            if !headers.contains_key("x-forwarded-proto") {
                headers.insert(
                    "x-forwarded-proto",
                    HeaderValue::from_static(static_proto(proto)),
                );
            }
            if !headers.contains_key("x-forwarded-host") {
                headers.insert("x-forwarded-host", host.clone());
            }
        }
        if self.forwarded {
            let for_ = match client.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
            };
            let host = host.to_str().unwrap_or("");
            let value = if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
                format!("for={for_};proto={proto}")
            } else {
                format!("for={for_};host=\"{host}\";proto={proto}")
            };
            append(headers, "forwarded", &value);
        }
        Ok(())
    }

    /// Relays an upstream response: hop-by-hop fields removed, upstream-origin
    /// `Location`/`Content-Location` mapped to the public origin, body streamed.
    pub fn relay_response(&self, resp: Response<Incoming>) -> Response<Body> {
        let (mut parts, incoming) = resp.into_parts();
        parts.version = Version::HTTP_11;
        hop_by_hop::strip_response(&mut parts.headers);
        self.map_locations(&mut parts.headers);
        Response::from_parts(parts, body::boxed(incoming))
    }

    pub fn map_locations(&self, headers: &mut http::HeaderMap) {
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(v) = headers.get(&name) {
                if let Some(mapped) = origin::map_to_public(v, &self.url, &self.public) {
                    headers.insert(name, mapped);
                }
            }
        }
    }
}

fn static_proto(proto: &str) -> &'static str {
    if proto == "https" {
        "https"
    } else {
        "http"
    }
}

fn authority_of(url: &Url) -> HeaderValue {
    let host = url.host_str().unwrap_or("localhost");
    let text = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// Appends `value` to a list-valued header, keeping what earlier proxies wrote.
fn append(headers: &mut http::HeaderMap, name: &'static str, value: &str) {
    let joined = match headers.get(name).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {value}"),
        _ => value.to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(name, v);
    }
}

/// `a: b: c` for logging an error with its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
