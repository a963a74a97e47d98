//! calattach's own requests to the upstream, made with the caller's credentials
//! (DESIGN §5): who the caller is ([`Caller`]), `PROPFIND`, and reading a calendar object
//! with its validators ([`fetch_object`]).
//!
//! Credentials are replayed verbatim, so the upstream's access rules stay the authority.

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::{Upstream, UpstreamResponse};
use crate::body::{self, Body};
use crate::error::{Error, Precondition};

/// Who is asking, as far as calattach can tell without asking the upstream.
///
/// Credentials are replayed verbatim on calattach's internal upstream requests, so the
/// upstream's access rules stay the authority (DESIGN §5). Digest cannot be replayed
/// (the response hash covers method and URI), so it is refused on owned routes.
#[derive(Clone)]
pub struct Caller {
    authorization: Option<HeaderValue>,
    /// The Basic user name; `None` for Bearer or anonymous callers.
    pub user: Option<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential itself.
        f.debug_struct("Caller")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Caller {
    pub fn from_headers(headers: &HeaderMap) -> Result<Caller, Error> {
        let Some(auth) = headers.get(header::AUTHORIZATION) else {
            return Ok(Caller {
                authorization: None,
                user: None,
            });
        };
        let text = auth.to_str().unwrap_or("");
        let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
        let user = if scheme.eq_ignore_ascii_case("basic") {
            base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|s| s.split_once(':').map(|(u, _)| u.to_owned()))
        } else if scheme.eq_ignore_ascii_case("digest") {
            return Err(Error::unauthorized(crate::error::DIGEST_REFUSAL.trim_end()));
        } else {
            None
        };
        Ok(Caller {
            authorization: Some(auth.clone()),
            user,
        })
    }

    /// The service account of `[gc]` (`gc.username`, `gc.password`) as a Basic caller,
    /// for calattach's own batch jobs (gc, migrate); `None` when none is configured.
    pub fn service(gc: &crate::config::GcConfig) -> Option<Caller> {
        let user = gc.username.as_deref()?;
        let password = gc.password.as_deref().unwrap_or("");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).ok()?,
        );
        Caller::from_headers(&h).ok()
    }

    /// A caller without credentials (to learn the upstream's challenge).
    pub fn anonymous() -> Caller {
        Caller {
            authorization: None,
            user: None,
        }
    }

    /// The `Authorization` value to replay, if any.
    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// `PROPFIND` of `path` with the caller's credentials: the XML `body`, `Depth` as
    /// given (`None` = none sent). Connect failures are retried (nothing was sent).
    pub async fn propfind(
        &self,
        upstream: &Upstream,
        path: &str,
        depth: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<UpstreamResponse, Error> {
        let method = Method::from_bytes(b"PROPFIND").map_err(|e| Error::Internal(e.to_string()))?;
        upstream
            .send_retrying(|| {
                let mut req =
                    self.request(upstream, method.clone(), path, body::full(body.clone()))?;
                if let Some(d) = &depth {
                    req.headers_mut().insert("depth", d.clone());
                }
                req.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/xml; charset=utf-8"),
                );
                Ok(req)
            })
            .await
    }

    pub fn is_anonymous(&self) -> bool {
        self.authorization.is_none()
    }

    /// An internal request to the upstream carrying the caller's credentials.
    pub fn request(
        &self,
        upstream: &Upstream,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<Request<Body>, Error> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = upstream.uri_for(path)?;
        req.headers_mut()
            .insert(header::HOST, upstream.authority().clone());
        if let Some(a) = &self.authorization {
            req.headers_mut().insert(header::AUTHORIZATION, a.clone());
        }
        Ok(req)
    }
}

/// The object's validators as the upstream reported them.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    pub etag: Option<String>,
    pub schedule_tag: Option<String>,
}

/// A calendar object as read from the upstream.
#[derive(Debug, Clone)]
pub struct Object {
    pub bytes: Bytes,
    pub validators: Validators,
}

/// What a GET of a calendar object gave.
pub enum Fetched {
    Object(Object),
    /// The upstream's answer to relay as it is (401 with its challenge, 403, 404, …).
    Relay(Response<Body>),
}

/// GETs `path` with the caller's credentials, reading at most `max_size` bytes
/// (RFC 8607 §7: objects above the bound are refused, `CALDAV:max-resource-size`).
pub async fn fetch_object(
    upstream: &Upstream,
    caller: &Caller,
    path: &str,
    max_size: u64,
) -> Result<Fetched, Error> {
    let resp = upstream
        .send_retrying(|| caller.request(upstream, Method::GET, path, body::empty()))
        .await?;
    if resp.status() != StatusCode::OK {
        return Ok(Fetched::Relay(upstream.relay_response(resp)));
    }
    let validators = validators(resp.headers());
    let is_calendar = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/calendar")
        });
    if !is_calendar {
        return Err(Error::BadRequest(format!(
            "{path} is not a calendar object resource"
        )));
    }
    let limit = usize::try_from(max_size).unwrap_or(usize::MAX);
    let bytes = match Limited::new(resp.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Error::Precondition(
                Precondition::MaxResourceSize,
                format!("{path} is larger than attachments.max_object_size"),
            ))
        }
        Err(e) => {
            tracing::warn!(%path, error = %e, "reading calendar object from upstream failed");
            return Err(Error::UpstreamUnavailable);
        }
    };
    Ok(Fetched::Object(Object { bytes, validators }))
}

pub fn validators(headers: &HeaderMap) -> Validators {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Validators {
        etag: get("etag"),
        schedule_tag: get("schedule-tag"),
    }
}

/// Reads the body of an upstream response we are about to drop, so the pooled connection
/// can be reused (bounded; larger bodies just close the connection).
pub async fn drain(resp: UpstreamResponse) {
    let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
}
