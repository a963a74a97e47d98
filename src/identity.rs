//! Who the caller is, according to the upstream (DESIGN §5).
//!
//! calattach keeps no user database. With the caller's own credentials it asks the
//! upstream for `DAV:current-user-principal` (RFC 5397), then the principal's
//! `CALDAV:calendar-home-set` and `CALDAV:calendar-user-address-set` (RFC 4791 §6.2.1,
//! RFC 6638 §2.4.1). Servers that expose no `mailto:` address (Radicale answers with an
//! href) get one from `identity.address_template`, e.g. `mailto:{user}@example.org`,
//! where `{user}` is the Basic user name, or else the last segment of the principal URL.
//!
//! Results are cached per credentials under a keyed SHA-256 of the `Authorization` value
//! (a random per-process key, so the cache never holds the secret nor a hash that could
//! be checked offline), for `identity.cache_ttl`, at most `identity.cache_size` entries.
//! A different password for the same user name is a different key: one caller's
//! resolution is never served to another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use sha2::{Digest, Sha256};

use crate::attach::Caller;
use crate::body::Body;
use crate::error::Error;
use crate::proxy::Upstream;

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
    /// The upstream refused the credentials: its answer (401 and challenge) to relay.
    Refused(Response<Body>),
}

/// Settings for resolution.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub address_template: Option<String>,
    pub cache_ttl: Duration,
    pub cache_size: usize,
}

/// Keyed hash of one `Authorization` value.
type Slot = [u8; 32];

/// The per-credentials cache.
pub struct IdentityCache {
    key: [u8; 32],
    config: IdentityConfig,
    entries: Mutex<HashMap<Slot, (Instant, Arc<Identity>)>>,
}

// === impl IdentityCache ===

impl IdentityCache {
    pub fn new(config: IdentityConfig) -> IdentityCache {
        IdentityCache {
            key: rand::random(),
            config,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, authorization: &HeaderValue) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(authorization.as_bytes());
        h.finalize().into()
    }

    fn get(&self, slot: &[u8; 32]) -> Option<Arc<Identity>> {
        let entries = self.entries.lock().ok()?;
        let (at, id) = entries.get(slot)?;
        (at.elapsed() < self.config.cache_ttl).then(|| id.clone())
    }

    fn put(&self, slot: [u8; 32], id: Arc<Identity>) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.config.cache_size {
            let ttl = self.config.cache_ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.config.cache_size {
                // Still full of fresh entries: drop everything rather than grow.
                entries.clear();
            }
        }
        entries.insert(slot, (Instant::now(), id));
    }

    /// Resolves the caller (cached). Anonymous callers have no identity: the caller
    /// decides what that means (usually a 401 challenge).
    pub async fn resolve(
        &self,
        upstream: &Upstream,
        caller: &Caller,
    ) -> Result<Option<Resolved>, Error> {
        let Some(auth) = caller.authorization() else {
            return Ok(None);
        };
        let slot = self.slot(auth);
        if let Some(id) = self.get(&slot) {
            return Ok(Some(Resolved::Known(id)));
        }
        let resolved = fetch(upstream, caller, &self.config).await?;
        if let Resolved::Known(id) = &resolved {
            self.put(slot, id.clone());
        }
        Ok(Some(resolved))
    }
}

async fn fetch(
    upstream: &Upstream,
    caller: &Caller,
    cfg: &IdentityConfig,
) -> Result<Resolved, Error> {
    let (status, props) = propfind(upstream, caller, "/", "<D:current-user-principal/>").await?;
    let props = match (status, props) {
        (_, Err(refusal)) => return Ok(Resolved::Refused(refusal)),
        (_, Ok(p)) => p,
    };
    let principal = props.principal.first().cloned().ok_or(Error::Forbidden)?;
    let (_, props) = propfind(
        upstream,
        caller,
        &principal,
        "<C:calendar-home-set/><C:calendar-user-address-set/>",
    )
    .await?;
    let props = match props {
        Err(refusal) => return Ok(Resolved::Refused(refusal)),
        Ok(p) => p,
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
        let (_, props) = propfind(upstream, caller, collection, "<D:owner/>").await?;
        let Some(principal) = props.ok().and_then(|p| p.owner.into_iter().next()) else {
            return Ok(None);
        };
        let (_, props) = propfind(
            upstream,
            caller,
            &principal,
            "<C:calendar-user-address-set/>",
        )
        .await?;
        let mut addresses: Vec<String> = props
            .map(|p| p.addresses)
            .unwrap_or_default()
            .iter()
            .map(|a| normalize_address(a))
            .collect();
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

/// PROPFIND depth 0; a refusal (401, 403…) comes back as the response to relay.
async fn propfind(
    upstream: &Upstream,
    caller: &Caller,
    path: &str,
    props: &str,
) -> Result<(StatusCode, Result<Props, Response<Body>>), Error> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <D:propfind xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">\
         <D:prop>{props}</D:prop></D:propfind>"
    );
    let resp = caller
        .propfind(
            upstream,
            path,
            Some(HeaderValue::from_static("0")),
            xml.into(),
        )
        .await?;
    let status = resp.status();
    if status != StatusCode::MULTI_STATUS {
        return Ok((status, Err(upstream.relay_response(resp))));
    }
    let bytes = match Limited::new(resp.into_body(), MAX_RESPONSE).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::warn!(%path, error = %e, "reading identity PROPFIND failed");
            return Err(Error::UpstreamUnavailable);
        }
    };
    Ok((status, Ok(parse_props(&bytes))))
}

/// Collects the `DAV:href` values of the three properties, from 200 propstats only.
fn parse_props(xml: &[u8]) -> Props {
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
            Ok((_, Event::Eof)) | Err(_) => break,
            _ => {}
        }
        buf.clear();
    }
    out
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
        let p = parse_props(xml);
        assert_eq!(p.homes, ["/user1/"]);
        assert_eq!(p.addresses, ["/user1/"]);
    }

    #[test]
    fn hrefs_in_404_propstats_are_ignored_and_absolute_urls_become_paths() {
        let xml = br#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/</D:href>
<D:propstat><D:prop><D:current-user-principal><D:href>http://h:1/principals/u/</D:href></D:current-user-principal></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>
<D:propstat><D:prop><C:calendar-home-set xmlns:C="urn:ietf:params:xml:ns:caldav"><D:href>/nope/</D:href></C:calendar-home-set></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>
</D:response></D:multistatus>"#;
        let p = parse_props(xml);
        assert_eq!(p.principal, ["/principals/u/"]);
        assert!(p.homes.is_empty());
    }

    #[test]
    fn dav_owner_of_a_collection_parses() {
        let xml = br#"<multistatus xmlns="DAV:"><response><href>/user1/calendar/</href><propstat><prop><owner><href>/user1/</href></owner></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        let p = parse_props(xml);
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
            cache_ttl: Duration::from_secs(60),
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
        assert!(cache.entries.lock().unwrap().len() <= 2);
    }
}
