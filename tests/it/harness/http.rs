//! A small async HTTP/1.1 client for tests: hyper-util's pooled legacy
//! client, Basic auth, whole-body replies.

use bytes::Bytes;
use futures_util::stream::Stream;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client as Pooled};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Cloneable; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    inner: Pooled<HttpConnector, Body>,
}

/// A complete response.
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:?} {}", self.version, self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {}", String::from_utf8_lossy(value.as_bytes()))?;
        }
        let text = self.text();
        let shown: String = text.chars().take(2000).collect();
        write!(f, "\n{shown}")?;
        if shown.len() < text.len() {
            write!(f, "[... {} bytes]", self.body.len())?;
        }
        Ok(())
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Client {
        let inner = Pooled::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build(HttpConnector::new());
        Client { inner }
    }

    pub fn request(&self, method: &str, url: &str) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            method: Method::from_bytes(method.as_bytes()).expect("method"),
            url: url.to_string(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Sends a prepared request and returns the streaming response.
    pub async fn send_streaming(&self, request: Request<Body>) -> http::Response<Incoming> {
        let what = format!("{} {}", request.method(), request.uri());
        self.try_send_streaming(request)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Like [`Client::send_streaming`], for tests where a failed exchange
    /// (connection refused or reset) is an outcome, not a test failure.
    pub async fn try_send_streaming(
        &self,
        request: Request<Body>,
    ) -> Result<http::Response<Incoming>, String> {
        self.inner
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))
    }
}

pub struct RequestBuilder {
    client: Client,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Body>,
}

impl RequestBuilder {
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn basic(self, user: &str, password: &str) -> Self {
        self.header("Authorization", super::basic(user, password))
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(
            Full::new(body.into())
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        self
    }

    /// A body sent chunked (no Content-Length unless set as a header).
    pub fn stream<S>(mut self, stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        use futures_util::StreamExt;
        self.body = Some(BodyExt::boxed_unsync(StreamBody::new(
            stream.map(|r| r.map(Frame::data)),
        )));
        self
    }

    pub fn build(self) -> Request<Body> {
        let mut request = Request::builder()
            .method(self.method)
            .uri(&self.url)
            .body(
                self.body
                    .unwrap_or_else(|| Empty::new().map_err(|e| match e {}).boxed_unsync()),
            )
            .expect("request");
        for (name, value) in self.headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(&value).expect("header value"),
            );
        }
        request
    }

    /// Sends the request and reads the whole response (30 s deadline).
    pub async fn send(self) -> Reply {
        self.send_with_timeout(Duration::from_secs(30)).await
    }

    /// Sends the request and reads the whole response; a connection or
    /// body error, or no answer within `deadline`, is an `Err` naming it.
    pub async fn try_send(self, deadline: Duration) -> Result<Reply, String> {
        let what = format!("{} {}", self.method, self.url);
        let client = self.client.clone();
        let request = self.build();
        let exchange = async {
            let response = client.try_send_streaming(request).await?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("reading body: {e:?}"))?
                .to_bytes();
            Ok::<_, String>(Reply {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(result) => result.map_err(|e| format!("{what}: {e}")),
            Err(_) => Err(format!("{what}: no complete answer within {deadline:?}")),
        }
    }

    /// Sends the request and reads the whole response within `deadline`;
    /// panics (failing the test) on any error.
    pub async fn send_with_timeout(self, deadline: Duration) -> Reply {
        self.try_send(deadline)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}
