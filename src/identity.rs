//! Who the caller is, according to the upstream (DESIGN §5).
//!
//! calattach keeps no user database. With the caller's own credentials it asks the
//! upstream for `DAV:current-user-principal` (RFC 5397) of the resource the request
//! itself addresses (the calendar object, or its collection when the object does not
//! exist yet), then the principal's `CALDAV:calendar-home-set` and
//! `CALDAV:calendar-user-address-set` (RFC 4791 §6.2.1, RFC 6638 §2.4.1). Never `/`:
//! the DAV server may live below the origin's root (Baïkal's `/dav.php/`, Nextcloud's
//! `/remote.php/dav/`), where `/` is a web page.
//!
//! The upstream's answers are mapped by what it said: `401` is a refusal of the
//! credentials (relayed with its challenge); `403` on the caller's own resource is a
//! refusal too; anything else that is not a usable `207` (a `404` on the collection, a
//! redirect, an HTML page, an unparsable body) is an upstream problem, `502`, logged
//! with the URL and status. Servers that expose no `mailto:` address (Radicale answers with an
//! href) get one from `identity.address_template`, e.g. `mailto:{user}@example.org`,
//! where `{user}` is the Basic user name, or else the last segment of the principal URL.
//!
//! Results are cached per credentials under a keyed SHA-256 of the `Authorization` value
//! (a random per-process key, so the cache never holds the secret nor a hash that could
//! be checked offline), for `identity.cache_ttl`, at most `identity.cache_size` entries.
//! A different password for the same user name is a different key: one caller's
//! resolution is never served to another.

use std::sync::Arc;

use http::header::HeaderValue;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use crate::body::Body;
use crate::cache::{CredentialHash, TtlCache};
use crate::config::IdentityConfig;
use crate::error::Error;
use crate::upstream::caller::Caller;
use crate::upstream::Upstream;

const DAV: &[u8] = b"DAV:";
const CALDAV: &[u8] = b"urn:ietf:params:xml:ns:caldav";
/// Largest PROPFIND answer read while resolving an identity.
const MAX_RESPONSE: usize = 256 * 1024;

/// A resolved caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `DAV:current-user-principal` href (a path), e.g. `/user1/`.
    pub principal: String,
    /// `CALDAV:calendar-home-set` hrefs (paths), e.g. `/user1/calendars/`.
    pub homes: Vec<String>,
    /// Calendar user addresses, lower-cased `mailto:` URIs first; includes the template
    /// address when configured.
    pub addresses: Vec<String>,
    /// The Basic user name, when there is one.
    pub user: Option<String>,
}

impl Identity {
    /// Whether `address` (an ORGANIZER or ATTENDEE value) is one of the caller's.
    pub fn has_address(&self, address: &str) -> bool {
        let a = normalize_address(address);
        self.addresses.contains(&a)
    }

    /// Whether `path` is (or is inside) one of the caller's calendar homes.
    pub fn owns_path(&self, path: &str) -> bool {
        self.homes.iter().any(|h| path.starts_with(h.as_str()))
    }
}

/// `MAILTO:A@B` and `mailto:a@b` are the same address (RFC 6638 §2.4.1 compares URIs;
/// mail addresses are compared case-insensitively in practice).
pub fn normalize_address(a: &str) -> String {
    let t = a.trim();
    match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("mailto:") => {
            format!("mailto:{}", t[7..].to_ascii_lowercase())
        }
        _ => t.to_owned(),
    }
}

/// What resolving gave.
pub enum Resolved {
    Known(Arc<Identity>),
    /// The upstream refused the credentials: its answer (`401` and challenge, or `403`)
    /// to relay.
    Refused(Response<Body>),
}

/// The per-credentials cache.
pub struct IdentityCache {
    config: IdentityConfig,
    keys: CredentialHash,
    entries: TtlCache<[u8; 32], Arc<Identity>>,
}

// === impl IdentityCache ===

impl IdentityCache {
    pub fn new(config: IdentityConfig) -> IdentityCache {
        IdentityCache {
            entries: TtlCache::new(config.cache_ttl, config.cache_size),
            keys: CredentialHash::default(),
            config,
        }
    }

    fn slot(&self, authorization: &HeaderValue) -> [u8; 32] {
        self.keys.of(Some(authorization))
    }

    fn get(&self, slot: &[u8; 32]) -> Option<Arc<Identity>> {
        self.entries.get(slot)
    }

    fn put(&self, slot: [u8; 32], id: Arc<Identity>) {
        self.entries.put(slot, id);
    }

    /// Resolves the caller (cached) from `resource`, the upstream path the request
    /// addresses (an object or a collection). Anonymous callers have no identity: the
    /// caller decides what that means (usually a 401 challenge).
    pub async fn resolve(
        &self,
        upstream: &Upstream,
        caller: &Caller,
        resource: &str,
    ) -> Result<Option<Resolved>, Error> {
        let Some(auth) = caller.authorization() else {
            return Ok(None);
        };
        let slot = self.slot(auth);
        if let Some(id) = self.get(&slot) {
            return Ok(Some(Resolved::Known(id)));
        }
        let resolved = self.fetch(upstream, caller, resource).await?;
        if let Resolved::Known(id) = &resolved {
            self.put(slot, id.clone());
        }
        Ok(Some(resolved))
    }

    async fn fetch(
        &self,
        upstream: &Upstream,
        caller: &Caller,
        resource: &str,
    ) -> Result<Resolved, Error> {
        let cfg = &self.config;
        // The object itself, then (when it does not exist yet, or no longer) its
        // collection: both are resources the client addressed. When neither tells (a
        // download by an attendee, who cannot read the organizer's object), the DAV
        // root the server names itself (RFC 6764 bootstrap).
        let collection = parent_collection(resource);
        let mut candidates = vec![resource];
        if collection != resource && collection != "/" {
            candidates.push(collection);
        }
        candidates.push(WELL_KNOWN);
        let mut found = None;
        let mut seen = Vec::new();
        // Whether some answer shows that the upstream knows the caller but would not
        // name a principal there (a 403, or a 207 without the property).
        let mut closed = false;
        for path in candidates {
            match propfind(upstream, caller, path, "<D:current-user-principal/>").await? {
                Answer::Props(p) => match p.principal.into_iter().next() {
                    Some(principal) => {
                        found = Some(principal);
                        break;
                    }
                    None => {
                        closed = true;
                        seen.push(format!("{path}: 207 without a principal"));
                    }
                },
                Answer::Refused(r) if r.status() == StatusCode::UNAUTHORIZED => {
                    return Ok(Resolved::Refused(r))
                }
                Answer::Refused(r) => {
                    closed = true;
                    seen.push(format!("{path}: {}", r.status()));
                }
                Answer::Other(status) => seen.push(format!("{path}: {status}")),
            }
        }
        let Some(principal) = found else {
            if closed {
                tracing::info!(url = %resource, answers = %seen.join(", "), "the upstream names no current-user-principal for the caller");
                return Err(Error::Forbidden);
            }
            let answers = seen.join(", ");
            tracing::warn!(
                url = %resource,
                %answers,
                "unusable answers from the calendar server to the identity PROPFINDs"
            );
            return Err(Error::UpstreamAnswer(format!(
                "no current-user-principal for {resource} ({answers})"
            )));
        };
        let props = match propfind(
            upstream,
            caller,
            &principal,
            "<C:calendar-home-set/><C:calendar-user-address-set/>",
        )
        .await?
        {
            Answer::Props(p) => p,
            Answer::Refused(r) => return Ok(Resolved::Refused(r)),
            Answer::Other(status) => return Err(unusable(&principal, status, "")),
        };
        let user = caller.user.clone();
        let mut addresses: Vec<String> = props
            .addresses
            .iter()
            .map(|a| normalize_address(a))
            .collect();
        add_template_address(&mut addresses, cfg, user.as_deref(), &principal);
        Ok(Resolved::Known(Arc::new(Identity {
            principal,
            homes: props.homes,
            addresses,
            user,
        })))
    }
}

/// The RFC 6764 context path bootstrap: every server calattach runs in front of
/// redirects it to its DAV root (Radicale and Xandikos `/`, Baïkal `/dav.php`).
pub const WELL_KNOWN: &str = "/.well-known/caldav";

/// The collection `path` is in: `/a/b/` for `/a/b/c.ics`, `/a/` for `/a/b/`.
pub fn parent_of(path: &str) -> &str {
    match path.trim_end_matches('/').rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    }
}

/// `/a/b/c.ics` → `/a/b/`; a collection (`/a/b/`) is its own.
pub fn parent_collection(path: &str) -> &str {
    if path.ends_with('/') {
        return path;
    }
    match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    }
}

/// An answer to an internal request that calattach cannot use: `502`, with a log line
/// naming the URL and status (and what was wrong with a `207`).
pub fn unusable(path: &str, status: StatusCode, why: &str) -> Error {
    tracing::warn!(
        url = %path,
        status = status.as_u16(),
        why,
        "unusable answer from the calendar server to an internal PROPFIND"
    );
    Error::UpstreamAnswer(format!("PROPFIND {path} answered {status}{why}"))
}

/// Adds the `address_template` address for `user` (or else the principal's last path
/// segment) and puts `mailto:` addresses first.
fn add_template_address(
    addresses: &mut Vec<String>,
    cfg: &IdentityConfig,
    user: Option<&str>,
    principal: &str,
) {
    if let Some(t) = &cfg.address_template {
        let name = user.map(str::to_owned).or_else(|| {
            principal
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        });
        if let Some(name) = name {
            let a = normalize_address(&t.replace("{user}", &name));
            if !addresses.contains(&a) {
                addresses.push(a);
            }
        }
    }
    addresses.sort_by_key(|a| !a.starts_with("mailto:"));
}

/// The owner of a calendar collection, as far as the caller may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owner's principal path.
    pub principal: String,
    /// Its calendar user addresses (normalised), plus the template address.
    pub addresses: Vec<String>,
}

impl IdentityCache {
    /// The owner of `collection` from its `DAV:owner` (RFC 3744 §5.1), then the owner
    /// principal's `calendar-user-address-set`, both read with the caller's credentials
    /// (not cached: a sharee's view of someone else's calendar is rare and must not
    /// outlive a change of owner). `None` when the upstream does not tell.
    pub async fn owner(
        &self,
        upstream: &Upstream,
        caller: &Caller,
        collection: &str,
    ) -> Result<Option<Owner>, Error> {
        let props = match propfind(upstream, caller, collection, "<D:owner/>").await? {
            Answer::Props(p) => p,
            Answer::Refused(_) => return Ok(None),
            Answer::Other(status) => return Err(unusable(collection, status, "")),
        };
        let Some(principal) = props.owner.into_iter().next() else {
            return Ok(None);
        };
        let addresses = match propfind(
            upstream,
            caller,
            &principal,
            "<C:calendar-user-address-set/>",
        )
        .await?
        {
            Answer::Props(p) => p.addresses,
            // The owner's principal may be closed to the caller: no addresses then.
            Answer::Refused(_) | Answer::Other(StatusCode::NOT_FOUND) => Vec::new(),
            Answer::Other(status) => return Err(unusable(&principal, status, "")),
        };
        let mut addresses: Vec<String> = addresses.iter().map(|a| normalize_address(a)).collect();
        add_template_address(&mut addresses, &self.config, None, &principal);
        Ok(Some(Owner {
            principal,
            addresses,
        }))
    }
}

#[derive(Debug, Default)]
struct Props {
    principal: Vec<String>,
    homes: Vec<String>,
    addresses: Vec<String>,
    /// `DAV:owner` (RFC 3744 §5.1) of a collection.
    owner: Vec<String>,
}

/// What an internal PROPFIND gave.
enum Answer {
    /// A `207` with an XML body.
    Props(Props),
    /// `401` or `403`: the upstream's refusal, to relay.
    Refused(Response<Body>),
    /// Any other status (drained).
    Other(StatusCode),
}

/// PROPFIND depth 0 of `path` for `props`, with the caller's credentials. A `207`
/// whose body is not XML (an HTML page under a `207`, a truncated answer) is an
/// upstream problem ([`unusable`]).
async fn propfind(
    upstream: &Upstream,
    caller: &Caller,
    path: &str,
    props: &str,
) -> Result<Answer, Error> {
    let xml = bytes::Bytes::from(propfind_body(props));
    let resp = send_propfind(upstream, caller, path, xml).await?;
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Ok(Answer::Refused(upstream.relay_response(resp)));
    }
    if status != StatusCode::MULTI_STATUS {
        crate::upstream::caller::drain(resp).await;
        return Ok(Answer::Other(status));
    }
    let xml = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_none_or(|m| m == "application/xml" || m == "text/xml" || m.ends_with("+xml"));
    if !xml {
        crate::upstream::caller::drain(resp).await;
        return Err(unusable(path, status, ": not an XML body"));
    }
    let bytes = match Limited::new(resp.into_body(), MAX_RESPONSE).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::warn!(url = %path, error = %e, "reading identity PROPFIND failed");
            return Err(Error::UpstreamUnavailable);
        }
    };
    match parse_props(&bytes) {
        Some(p) => Ok(Answer::Props(p)),
        None => Err(unusable(path, status, ": not a DAV:multistatus")),
    }
}

/// Collects the `DAV:href` values of the properties, from 200 propstats only; `None`
/// when the body is not well-formed XML with a `DAV:multistatus` root.
fn parse_props(xml: &[u8]) -> Option<Props> {
    let mut reader = quick_xml::NsReader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut out = Props::default();
    // The property we are inside of (0 none, 1 principal, 2 homes, 3 addresses), and
    // whether we are inside a DAV:href.
    let mut current = 0u8;
    let mut in_href = false;
    let mut buf = Vec::new();
    // Propstats buffer their values until their status says 200.
    let mut pending = Props::default();
    let mut in_status = false;
    let mut status_ok = false;
    let mut text = String::new();
    let mut root_seen = false;
    loop {
        let ev = reader.read_resolved_event_into(&mut buf);
        match ev {
            Ok((ns, Event::Start(e))) => {
                let ns = match ns {
                    ResolveResult::Bound(n) => n.0.to_vec(),
                    _ => Vec::new(),
                };
                let local = e.local_name();
                let local = local.as_ref();
                if !root_seen {
                    if (ns.as_slice(), local) != (DAV, b"multistatus".as_slice()) {
                        return None;
                    }
                    root_seen = true;
                }
                match (ns.as_slice(), local) {
                    (DAV, b"propstat") => {
                        pending = Props::default();
                        status_ok = false;
                    }
                    (DAV, b"status") => {
                        in_status = true;
                        text.clear();
                    }
                    (DAV, b"current-user-principal") => current = 1,
                    (CALDAV, b"calendar-home-set") => current = 2,
                    (CALDAV, b"calendar-user-address-set") => current = 3,
                    (DAV, b"owner") => current = 4,
                    (DAV, b"href") => {
                        in_href = true;
                        text.clear();
                    }
                    _ => {}
                }
            }
            Ok((ns, Event::End(e))) => {
                let is_dav = matches!(ns, ResolveResult::Bound(n) if n.0 == DAV);
                let is_caldav = matches!(ns, ResolveResult::Bound(n) if n.0 == CALDAV);
                match e.local_name().as_ref() {
                    b"href" if is_dav => {
                        in_href = false;
                        let t = std::mem::take(&mut text);
                        let t = t.trim();
                        match current {
                            1 => pending.principal.push(href_path(t)),
                            2 => pending.homes.push(href_path(t)),
                            3 => pending.addresses.push(t.to_owned()),
                            4 => pending.owner.push(href_path(t)),
                            _ => {}
                        }
                    }
                    b"status" if is_dav => {
                        in_status = false;
                        let t = std::mem::take(&mut text);
                        status_ok = t.split_whitespace().nth(1) == Some("200");
                    }
                    b"current-user-principal" | b"owner" if is_dav => current = 0,
                    b"calendar-home-set" | b"calendar-user-address-set" if is_caldav => current = 0,
                    b"propstat" if is_dav && status_ok => {
                        out.principal.append(&mut pending.principal);
                        out.homes.append(&mut pending.homes);
                        out.addresses.append(&mut pending.addresses);
                        out.owner.append(&mut pending.owner);
                    }
                    _ => {}
                }
            }
            Ok((_, Event::Text(t))) if in_status || in_href => {
                text.push_str(&t.decode().unwrap_or_default());
            }
            Ok((_, Event::GeneralRef(r))) if in_status || in_href => {
                let name = r.decode().unwrap_or_default();
                match quick_xml::escape::resolve_predefined_entity(&name) {
                    Some(v) => text.push_str(v),
                    None => {
                        if let Ok(Some(c)) = r.resolve_char_ref() {
                            text.push(c);
                        }
                    }
                }
            }
            Ok((_, Event::Eof)) => break,
            Err(_) => return None,
            _ => {}
        }
        buf.clear();
    }
    root_seen.then_some(out)
}

/// `PROPFIND` depth 0 of `path` for `DAV:current-user-principal` with the caller's
/// credentials (none for an anonymous caller); on [`WELL_KNOWN`], a redirect to the
/// same upstream is followed once.
pub async fn ask_principal(
    upstream: &Upstream,
    caller: &Caller,
    path: &str,
) -> Result<crate::upstream::UpstreamResponse, Error> {
    let xml = bytes::Bytes::from(propfind_body("<D:current-user-principal/>"));
    send_propfind(upstream, caller, path, xml).await
}

fn propfind_body(props: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <D:propfind xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">\
         <D:prop>{props}</D:prop></D:propfind>"
    )
}

async fn send_propfind(
    upstream: &Upstream,
    caller: &Caller,
    path: &str,
    xml: bytes::Bytes,
) -> Result<crate::upstream::UpstreamResponse, Error> {
    let depth = Some(HeaderValue::from_static("0"));
    let resp = caller
        .propfind(upstream, path, depth.clone(), xml.clone())
        .await?;
    if path != WELL_KNOWN || !resp.status().is_redirection() {
        return Ok(resp);
    }
    let target = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| same_upstream_path(upstream, l));
    let Some(target) = target else {
        return Ok(resp);
    };
    crate::upstream::caller::drain(resp).await;
    caller.propfind(upstream, &target, depth, xml).await
}

/// The path of a `Location` that points into the upstream: a path, or an absolute URL
/// of the upstream's own origin; `None` for anywhere else.
pub fn same_upstream_path(upstream: &Upstream, location: &str) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(location.to_owned());
    }
    let url = url::Url::parse(location).ok()?;
    let authority = upstream.authority().to_str().ok()?;
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    (authority == format!("{host}:{port}") || authority == host).then(|| url.path().to_owned())
}

/// Hrefs may be absolute URLs; the path is what calattach compares.
fn href_path(href: &str) -> String {
    match url::Url::parse(href) {
        Ok(u) if u.has_host() => u.path().to_owned(),
        _ => href.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radicale_principal_answer_parses() {
        let xml = br#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/user1/</href><propstat><prop><C:calendar-home-set><href>/user1/</href></C:calendar-home-set><C:calendar-user-address-set><href>/user1/</href></C:calendar-user-address-set></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        let p = parse_props(xml).unwrap();
        assert_eq!(p.homes, ["/user1/"]);
        assert_eq!(p.addresses, ["/user1/"]);
    }

    #[test]
    fn hrefs_in_404_propstats_are_ignored_and_absolute_urls_become_paths() {
        let xml = br#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/</D:href>
<D:propstat><D:prop><D:current-user-principal><D:href>http://h:1/principals/u/</D:href></D:current-user-principal></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
<D:propstat><D:prop><C:calendar-home-set xmlns:C="urn:ietf:params:xml:ns:caldav"><D:href>/nope/</D:href></C:calendar-home-set></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
</D:response></D:multistatus>"#;
        let p = parse_props(xml).unwrap();
        assert_eq!(p.principal, ["/principals/u/"]);
        assert!(p.homes.is_empty());
    }

    #[test]
    fn dav_owner_of_a_collection_parses() {
        let xml = br#"<multistatus xmlns="DAV:"><response><href>/user1/calendar/</href><propstat><prop><owner><href>/user1/</href></owner></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        let p = parse_props(xml).unwrap();
        assert_eq!(p.owner, ["/user1/"]);
        assert!(p.principal.is_empty());
    }

    #[test]
    fn addresses_compare_case_insensitively_for_mailto() {
        let id = Identity {
            principal: "/u/".into(),
            homes: vec!["/u/".into()],
            addresses: vec![normalize_address("MAILTO:User1@Example.org")],
            user: None,
        };
        assert!(id.has_address("mailto:user1@example.org"));
        assert!(!id.has_address("mailto:user2@example.org"));
        assert!(id.owns_path("/u/calendar/x.ics"));
    }

    #[test]
    fn cache_keys_differ_for_different_passwords_of_one_user() {
        let cache = IdentityCache::new(IdentityConfig {
            address_template: None,
            cache_ttl: std::time::Duration::from_secs(60),
            cache_size: 2,
        });
        let a = cache.slot(&HeaderValue::from_static("Basic dXNlcjE6YQ=="));
        let b = cache.slot(&HeaderValue::from_static("Basic dXNlcjE6Yg=="));
        assert_ne!(a, b);
        let id = Arc::new(Identity {
            principal: "/user1/".into(),
            homes: vec![],
            addresses: vec![],
            user: Some("user1".into()),
        });
        cache.put(a, id.clone());
        assert!(cache.get(&a).is_some());
        assert!(cache.get(&b).is_none());
        // Bounded: inserting past the size evicts instead of growing.
        cache.put(b, id.clone());
        cache.put([7; 32], id);
        assert!(cache.entries.len() <= 2);
    }
}
