//! The transparent forwarding path (DESIGN §3) and the upstream client every other
//! route uses for its internal requests.

pub mod caller;
mod hop_by_hop;
pub mod origin;
pub mod pool;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use url::Url;

use self::pool::{Pool, PooledBody, SendError, Target};
use self::tls::Tls;

use crate::body::{self, Body};
use crate::config::{ServerConfig, UpstreamConfig};
use crate::error::{error_chain, Error};

/// A response from the upstream; its body returns the connection to the pool when read
/// to the end.
pub type UpstreamResponse = Response<PooledBody>;

/// The upstream CalDAV server: a pool of HTTP/1.1 connections (over TLS for
/// `https://`), cloned cheaply (clones share the pool).
#[derive(Clone)]
pub struct Upstream {
    pool: Pool,
    target: Target,
    tls: Option<Tls>,
    connect_timeout: Duration,
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
        let tls = match cfg.url.scheme() {
            "http" => None,
            "https" => Some(Tls::new(&cfg.url, cfg.ca_file.as_deref())?),
            other => {
                return Err(Error::Config(format!(
                    "upstream.url = {:?}: unsupported scheme {other:?} (expected http or https)",
                    cfg.url.as_str()
                )))
            }
        };
        let port = cfg.url.port_or_known_default().unwrap_or(80);
        let target = match cfg.url.host() {
            Some(url::Host::Ipv4(ip)) => Target::Addr(SocketAddr::from((ip, port))),
            Some(url::Host::Ipv6(ip)) => Target::Addr(SocketAddr::from((ip, port))),
            Some(url::Host::Domain(name)) => Target::Name(name.to_owned(), port),
            None => {
                return Err(Error::Config(format!(
                    "upstream.url = {:?}: no host",
                    cfg.url.as_str()
                )))
            }
        };
        let pool = Pool::new(
            target.clone(),
            tls.clone(),
            cfg.connect_timeout,
            POOL_IDLE_TIMEOUT,
            POOL_MAX_IDLE,
        );
        let authority = authority_of(&cfg.url);
        let public_host = authority_of(&server.public_url);
        Ok(Upstream {
            pool,
            target,
            tls,
            connect_timeout: cfg.connect_timeout,
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

    /// The same upstream with a pool of its own, for one worker thread; the TLS
    /// configuration (trusted roots, session cache) is shared.
    pub fn for_worker(&self) -> Upstream {
        Upstream {
            pool: Pool::new(
                self.target.clone(),
                self.tls.clone(),
                self.connect_timeout,
                POOL_IDLE_TIMEOUT,
                POOL_MAX_IDLE,
            ),
            ..self.clone()
        }
    }

    /// Opens one connection (TCP, then TLS for `https://`) and closes it, for
    /// `check-config`: the negotiated TLS parameters (`None` over plain TCP), or why no
    /// connection could be made.
    pub async fn probe_connection(&self) -> Result<Option<String>, String> {
        self.pool.probe().await.map_err(|e| match e {
            SendError::Connect(io) => error_chain(&io),
            other => error_chain(&other),
        })
    }

    /// The request target for an upstream path (and query), e.g.
    /// `/user1/calendar/a.ics`: origin form, since every connection goes to the one
    /// upstream (`Host` is added when the request is sent).
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, Error> {
        if !path_and_query.starts_with('/') {
            return Err(Error::BadRequest(format!(
                "invalid request target: {path_and_query:?} is not an absolute path"
            )));
        }
        path_and_query
            .parse::<http::uri::PathAndQuery>()
            .map(|pq| origin_form(Some(pq)))
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
    pub async fn send(&self, req: Request<Body>) -> Result<UpstreamResponse, Error> {
        match self.try_send(req).await {
            Ok(resp) => Ok(resp),
            Err(Error::UpstreamUnreachable) => Err(Error::UpstreamUnavailable),
            Err(e) => Err(e),
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
    ) -> Result<UpstreamResponse, Error> {
        const BACKOFF: [u64; 2] = [50, 250];
        let mut attempt = 0;
        loop {
            match self.try_send(make()?).await {
                Err(Error::UpstreamUnreachable) if attempt < BACKOFF.len() => {
                    tokio::time::sleep(Duration::from_millis(BACKOFF[attempt])).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One attempt: a connect failure is [`Error::UpstreamUnreachable`] (nothing sent).
    async fn try_send(&self, mut req: Request<Body>) -> Result<UpstreamResponse, Error> {
        let _timer = crate::metrics::get().upstream_timer();
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut()
                .insert(header::HOST, self.authority.clone());
        }
        let method = req.method().clone();
        let uri = req.uri().clone();
        match tokio::time::timeout(self.response_timeout, self.pool.send(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(SendError::Connect(e))) => {
                tracing::warn!(%method, path = uri.path(), error = %error_chain(&e), "upstream unreachable");
                Err(Error::UpstreamUnreachable)
            }
            Ok(Err(SendError::Tls(e))) => {
                tracing::warn!(%method, path = uri.path(), error = %e, "upstream TLS handshake failed");
                Err(Error::UpstreamTls(e.to_string()))
            }
            Ok(Err(SendError::Request(e))) => {
                tracing::warn!(%method, path = uri.path(), error = %error_chain(&e), "upstream request failed");
                Err(Error::UpstreamUnavailable)
            }
            Err(_) => {
                tracing::warn!(%method, path = uri.path(), timeout = ?self.response_timeout, "upstream response timed out");
                Err(Error::UpstreamTimeout)
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
        let mut req = Request::from_parts(parts, body::boxed_direct(incoming));
        self.prepare_head(&mut req, client)?;
        let resp = self.send(req).await?;
        Ok(self.relay_response(resp))
    }

    /// Rewrites a client request for the upstream: target URI, hop-by-hop fields, `Host`,
    /// forwarding headers; and its body, which streams from the client, is abandoned
    /// after `server.body_idle_timeout` without data (an upstream that waits for it
    /// must not be held by a stalled client).
    pub fn prepare_request(
        &self,
        req: &mut Request<Body>,
        client: SocketAddr,
    ) -> Result<(), Error> {
        if !http_body::Body::is_end_stream(req.body()) {
            let streamed = std::mem::replace(req.body_mut(), body::empty());
            *req.body_mut() =
                body::boxed_direct(body::IdleTimeout::new(streamed, self.body_idle_timeout));
        }
        self.prepare_head(req, client)
    }

    /// [`Upstream::prepare_request`] without the body.
    fn prepare_head(&self, req: &mut Request<Body>, client: SocketAddr) -> Result<(), Error> {
        let pq = req.uri().path_and_query().cloned();
        *req.uri_mut() = origin_form(pq);
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        hop_by_hop::strip_request(headers);
        let client_host = headers.get(header::HOST).cloned();
        if !self.preserve_host || client_host.is_none() {
            headers.insert(header::HOST, self.authority.clone());
        }
        let host = client_host.unwrap_or_else(|| self.public_host.clone());
        let proto = self.public.scheme();
        let ip = ip_text(client.ip());
        if self.forwarded {
            // RFC 7239 §6: an IPv6 address is bracketed and the whole node quoted.
            let mut value = String::with_capacity(64);
            value.push_str("for=");
            if client.is_ipv6() {
                value.push_str("\"[");
                value.push_str(&ip);
                value.push_str("]\"");
            } else {
                value.push_str(&ip);
            }
            let host = host.to_str().unwrap_or("");
            if !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
                value.push_str(";host=\"");
                value.push_str(host);
                value.push('"');
            }
            value.push_str(";proto=");
            value.push_str(proto);
            append(headers, FORWARDED, value);
        }
        if self.x_forwarded {
            append(headers, X_FORWARDED_FOR, ip);
            if !headers.contains_key(X_FORWARDED_PROTO) {
                headers.insert(
                    X_FORWARDED_PROTO,
                    HeaderValue::from_static(static_proto(proto)),
                );
            }
            if !headers.contains_key(X_FORWARDED_HOST) {
                headers.insert(X_FORWARDED_HOST, host);
            }
        }
        Ok(())
    }

    /// Relays an upstream response: hop-by-hop fields removed, upstream-origin
    /// `Location`/`Content-Location` mapped to the public origin, body streamed.
    pub fn relay_response(&self, resp: UpstreamResponse) -> Response<Body> {
        let (mut parts, incoming) = resp.into_parts();
        parts.version = Version::HTTP_11;
        hop_by_hop::strip_response(&mut parts.headers);
        self.map_locations(&mut parts.headers);
        Response::from_parts(parts, body::boxed_direct(incoming))
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

/// How long an idle upstream connection is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle upstream connections kept per worker thread.
const POOL_MAX_IDLE: usize = 64;

/// `/path?query` as a request target (`/` when the client sent none, e.g. `OPTIONS *`
/// has no path and query).
fn origin_form(pq: Option<http::uri::PathAndQuery>) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(pq.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
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

const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An IP address as text; IPv4 without going through `core::fmt` (once per request).
fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(itoa::Buffer::new().format(octet));
            }
            text
        }
        std::net::IpAddr::V6(v6) => v6.to_string(),
    }
}

/// Appends `value` to a list-valued header, keeping what earlier proxies wrote.
fn append(headers: &mut http::HeaderMap, name: HeaderName, value: String) {
    let joined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {value}"),
        _ => value,
    };
    // `Bytes` from the `String` without a copy; the value is checked, not trusted.
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn upstream(extra: &str) -> Upstream {
        let text = format!(
            "[server]\npublic_url = \"https://cal.example.org\"\n\
             [upstream]\nurl = \"http://127.0.0.1:5232\"\n{extra}"
        );
        let cfg = crate::config::Config::parse(&text, "test", &BTreeMap::new()).unwrap();
        Upstream::new(&cfg.upstream, &cfg.server).unwrap()
    }

    fn prepared(up: &Upstream, client: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut req = Request::builder().uri("/user1/cal/a.ics?x=1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(body::empty()).unwrap();
        up.prepare_request(&mut req, client.parse().unwrap())
            .unwrap();
        req
    }

    fn header<'a>(req: &'a Request<Body>, name: &str) -> Option<&'a str> {
        req.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn forwarding_headers_name_client_host_and_public_scheme() {
        let up = upstream("");
        let req = prepared(&up, "192.0.2.7:50000", &[("host", "cal.example.org")]);
        assert_eq!(req.uri(), "/user1/cal/a.ics?x=1");
        assert_eq!(header(&req, "host"), Some("127.0.0.1:5232"));
        assert_eq!(header(&req, "x-forwarded-for"), Some("192.0.2.7"));
        assert_eq!(header(&req, "x-forwarded-proto"), Some("https"));
        assert_eq!(header(&req, "x-forwarded-host"), Some("cal.example.org"));
        assert_eq!(
            header(&req, "forwarded"),
            Some("for=192.0.2.7;host=\"cal.example.org\";proto=https")
        );
    }

    #[test]
    fn forwarding_headers_append_to_what_earlier_proxies_wrote() {
        let up = upstream("");
        let req = prepared(
            &up,
            "[2001:db8::1]:443",
            &[
                ("host", "cal.example.org"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "http"),
                ("forwarded", "for=203.0.113.9"),
            ],
        );
        assert_eq!(
            header(&req, "x-forwarded-for"),
            Some("203.0.113.9, 2001:db8::1")
        );
        // An earlier proxy knows the original scheme better: kept.
        assert_eq!(header(&req, "x-forwarded-proto"), Some("http"));
        assert_eq!(
            header(&req, "forwarded"),
            Some("for=203.0.113.9, for=\"[2001:db8::1]\";host=\"cal.example.org\";proto=https")
        );
    }

    #[test]
    fn forwarded_host_is_left_out_when_it_cannot_be_quoted() {
        let up = upstream("");
        let req = prepared(&up, "192.0.2.7:1", &[("host", "a\"b")]);
        assert_eq!(header(&req, "forwarded"), Some("for=192.0.2.7;proto=https"));
    }

    #[test]
    fn forwarding_headers_follow_the_configuration() {
        let none = prepared(
            &upstream("forwarded_headers = \"none\"\n"),
            "192.0.2.7:1",
            &[],
        );
        for name in [
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
        ] {
            assert_eq!(header(&none, name), None, "{name}");
        }
        let only_x = prepared(
            &upstream("forwarded_headers = \"x-forwarded\"\n"),
            "192.0.2.7:1",
            &[],
        );
        assert_eq!(header(&only_x, "forwarded"), None);
        assert_eq!(header(&only_x, "x-forwarded-for"), Some("192.0.2.7"));
        // Without a client Host, the public URL's host is what the client addressed.
        assert_eq!(header(&only_x, "x-forwarded-host"), Some("cal.example.org"));
        let kept = prepared(
            &upstream("preserve_host = true\n"),
            "192.0.2.7:1",
            &[("host", "cal.example.org")],
        );
        assert_eq!(header(&kept, "host"), Some("cal.example.org"));
    }

    #[test]
    fn hop_by_hop_and_expect_are_not_forwarded() {
        let up = upstream("");
        let req = prepared(
            &up,
            "192.0.2.7:1",
            &[
                ("connection", "keep-alive, x-private"),
                ("x-private", "1"),
                ("expect", "100-continue"),
                ("te", "trailers"),
            ],
        );
        for name in ["connection", "x-private", "expect", "te"] {
            assert_eq!(header(&req, name), None, "{name}");
        }
    }

    #[test]
    fn upstream_targets_are_origin_form_absolute_paths() {
        let up = upstream("");
        let uri = up.uri_for("/user1/cal/a%20b.ics?x=1").unwrap();
        assert_eq!(uri, "/user1/cal/a%20b.ics?x=1");
        assert!(uri.scheme().is_none() && uri.authority().is_none());
        assert!(up.uri_for("user1/cal/").is_err());
        assert!(up.uri_for("/a b").is_err());
    }

    #[test]
    fn ipv4_text_matches_display() {
        for ip in ["0.0.0.0", "127.0.0.1", "255.255.255.255", "10.20.3.40"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
