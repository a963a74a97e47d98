//! Who may change and who may download managed attachments (RFC 8607 §3.12.2; DESIGN
//! §5–6; the model is written up in docs/security.md).
//!
//! calattach has no user database: the upstream decides who may read and write a
//! calendar object, and calattach adds only what the upstream cannot know.
//!
//! * **Change** (POST add/update/remove): refused when the object is an *attendee's
//!   copy* — decided by the calendar's owner, not the caller: the object's `ORGANIZER`
//!   is not one of the owner's addresses and the owner is among its `ATTENDEE`s. The
//!   owner is the caller when the object lies in one of the caller's calendar homes,
//!   else the `DAV:owner` of the calendar collection (read with the caller's
//!   credentials). Everybody else the upstream lets write the object may change (the
//!   organizer, her delegates, sharees with write access): the upstream's answer to the
//!   commit PUT is the authority.
//! * **Download**: the creator; a caller whose addresses match the organizer or a current
//!   attendee recorded in the attachment's audience (refreshed on every write of the
//!   organizer's object); a caller who can read the object the attachment was created in,
//!   or another organizer-side object holding it (sharees, delegates). Otherwise `403`.

use std::sync::Arc;

use http::header::HeaderMap;
use http::{Method, Response};

use super::Caller;
use crate::body::{self, Body};
use crate::error::{Error, Precondition};
use crate::ical::Calendar;
use crate::identity::{normalize_address, parent_collection, Identity, Resolved};
use crate::state::State;
use crate::store::{AttachmentId, Audience, Meta};

use super::params::AttachAction;

/// Most organizer-side holders probed with a HEAD when deciding a download.
const MAX_HOLDER_PROBES: usize = 8;

/// The caller's identity, resolved from `resource` (the upstream path the request
/// addresses); `Err` holds the upstream's refusal (401 with its challenge, or 403) to
/// relay. Anonymous callers have none (`Ok(None)`).
pub async fn identify(
    state: &State,
    caller: &Caller,
    resource: &str,
) -> Result<Result<Option<Arc<Identity>>, Response<Body>>, Error> {
    match state
        .identity
        .resolve(&state.upstream, caller, resource)
        .await?
    {
        None => Ok(Ok(None)),
        Some(Resolved::Known(id)) => Ok(Ok(Some(id))),
        Some(Resolved::Refused(resp)) => Ok(Err(resp)),
    }
}

/// The calendar user addresses of the owner of the calendar holding `path`.
///
/// Under one of the caller's homes the owner is the caller. Otherwise the calendar
/// collection's `DAV:owner` and that principal's `calendar-user-address-set` (plus the
/// address template); when the upstream names no owner, the caller stands in (the
/// upstream let the caller at the object, and no better answer exists).
pub async fn owner_addresses(
    state: &State,
    caller: &Caller,
    identity: Option<&Identity>,
    path: &str,
) -> Result<Vec<String>, Error> {
    if let Some(id) = identity {
        if id.owns_path(path) {
            return Ok(id.addresses.clone());
        }
    }
    let collection = parent_collection(path);
    match state
        .identity
        .owner(&state.upstream, caller, collection)
        .await?
    {
        Some(owner) => {
            if let Some(id) = identity.filter(|i| i.principal == owner.principal) {
                return Ok(id.addresses.clone());
            }
            Ok(owner.addresses)
        }
        None => Ok(identity.map(|i| i.addresses.clone()).unwrap_or_default()),
    }
}

/// Whether `cal`, stored in a calendar owned by someone with `owner_addresses`, is an
/// attendee's copy of a scheduled event.
pub fn is_attendee_copy(cal: &Calendar, owner_addresses: &[String]) -> bool {
    let has = |a: &str| owner_addresses.contains(&normalize_address(a));
    match cal.organizer() {
        Some(org) if !has(&org) => cal.attendees().iter().any(|a| has(a)),
        _ => false,
    }
}

/// RFC 8607 §3.12.2: attendees must not add, update or remove managed attachments.
/// Returns the caller's identity (for the scheduling headers) when the change may go on.
pub async fn may_change(
    state: &State,
    caller: &Caller,
    path: &str,
    cal: &Calendar,
    action: AttachAction,
) -> Result<Option<Arc<Identity>>, Error> {
    let identity = match identify(state, caller, path).await? {
        Ok(id) => id,
        Err(refusal) => return Err(Error::refused(&refusal)),
    };
    let owner = owner_addresses(state, caller, identity.as_deref(), path).await?;
    if is_attendee_copy(cal, &owner) {
        let p = match action {
            AttachAction::Add => Precondition::ValidAttachmentAdd,
            AttachAction::Update => Precondition::ValidAttachmentUpdate,
            AttachAction::Remove => Precondition::ValidAttachmentRemove,
        };
        tracing::info!(
            %path,
            action = action.as_str(),
            organizer = cal.organizer().unwrap_or_default(),
            "refused: attendees may not change managed attachments (RFC 8607 §3.12.2)"
        );
        return Err(Error::Precondition(
            p,
            format!("{path} is an attendee's copy of a scheduled event"),
        ));
    }
    Ok(identity)
}

/// `Schedule-User-Address` (scheduling controls) is honoured only when it is one of the
/// caller's own addresses: otherwise a caller could make the upstream act as someone
/// else. Not theirs (or no identity) → the header is dropped and the drop logged.
pub fn filter_schedule_user_address(headers: &mut HeaderMap, identity: Option<&Identity>) {
    let Some(v) = headers.get("schedule-user-address") else {
        return;
    };
    let value = v.to_str().unwrap_or("").to_owned();
    if identity.is_some_and(|id| id.has_address(&value)) {
        return;
    }
    tracing::warn!(
        address = %value,
        "dropping Schedule-User-Address: not one of the caller's addresses"
    );
    headers.remove("schedule-user-address");
}

/// The audience record of an event, from its organizer's object.
pub fn audience_of(cal: &Calendar) -> Audience {
    Audience {
        uid: cal.uid().unwrap_or_default(),
        organizer: cal.organizer().map(|o| normalize_address(&o)),
        attendees: cal
            .attendees()
            .iter()
            .map(|a| normalize_address(a))
            .collect(),
    }
}

/// After a committed POST on `path`: every managed id of `cal` whose home object is
/// `path` gets the event's organizer and attendees as its audience (authority over an id
/// lives with its home object, DESIGN §5: a POST on another object that holds the id
/// changes nothing about who may read it). Failures are logged: the commit happened,
/// and the next PUT of the event refreshes it.
pub async fn record_audience(state: &State, path: &str, cal: &Calendar) {
    let audience = audience_of(cal);
    for id in cal.distinct_managed_ids() {
        let Some(id) = AttachmentId::parse(&id) else {
            continue;
        };
        match state.store.state(&id).await {
            Ok(Some((meta, _))) if meta.uid == audience.uid && meta.href == path => {
                if let Err(e) = state.store.put_audience(&id, &audience).await {
                    tracing::warn!(id = %id.as_str(), error = %e, "recording the audience failed");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(id = %id.as_str(), error = %e, "reading attachment state failed")
            }
        }
    }
}

/// Whether `identity` created the attachment of `meta`.
pub fn is_creator(identity: &Identity, caller: &Caller, meta: &Meta) -> bool {
    if meta.creator.is_empty() {
        return false;
    }
    caller.user.as_deref() == Some(meta.creator.as_str())
        || identity.user.as_deref() == Some(meta.creator.as_str())
        || identity.principal == meta.creator
}

/// What a download access check decided.
pub enum Download {
    Granted,
    /// The answer to give: the upstream's 401, or 403.
    Denied(Response<Body>),
}

/// `403` naming the privilege that is missing (RFC 3744 §7.1.1): `DAV:read` on the
/// attachment's URL. Says nothing about the attachment's state.
fn need_read(state: &State, meta: &Meta) -> Response<Body> {
    let base = super::url_base(&state.upstream, &state.config.attachments.prefix);
    Error::NeedRead {
        href: format!("{base}{}", meta.id.as_str()),
    }
    .into_response()
}

/// DESIGN §6: decided before the attachment's state is revealed.
pub async fn may_download(state: &State, caller: &Caller, meta: &Meta) -> Result<Download, Error> {
    let identity = match identify(state, caller, &meta.href).await? {
        Ok(Some(id)) => id,
        Ok(None) => return Ok(Download::Denied(need_read(state, meta))),
        Err(refusal) => return Ok(Download::Denied(refusal)),
    };
    if is_creator(&identity, caller, meta) {
        return Ok(Download::Granted);
    }
    match state.store.audience(&meta.id).await {
        Ok(Some(a)) => {
            let listed = a.organizer.iter().chain(a.attendees.iter());
            if listed.into_iter().any(|x| identity.has_address(x)) {
                return Ok(Download::Granted);
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(id = %meta.id.as_str(), error = %e, "reading the audience failed")
        }
    }
    let mut hrefs = vec![meta.href.clone()];
    match state.store.holders(&meta.id).await {
        Ok(hs) => hrefs.extend(
            hs.into_iter()
                .filter(|h| h.organizer_side && h.href != meta.href)
                .map(|h| h.href)
                .take(MAX_HOLDER_PROBES),
        ),
        Err(e) => {
            tracing::warn!(id = %meta.id.as_str(), error = %e, "reading the holders failed")
        }
    }
    for href in hrefs {
        let req = caller.request(&state.upstream, Method::HEAD, &href, body::empty())?;
        let resp = state.upstream.send(req).await?;
        let status = resp.status();
        super::drain(resp).await;
        if status.is_success() {
            return Ok(Download::Granted);
        }
    }
    tracing::info!(id = %meta.id.as_str(), principal = %identity.principal, "download refused: no access");
    Ok(Download::Denied(need_read(state, meta)))
}

/// `href` no longer holds the id of `meta`: un-index it there, and tombstone the id
/// (RFC 8607 §3.9, §3.12.5) when nothing that keeps it alive still holds it (DESIGN §5):
/// its home object (`meta.href`), or another organizer-side object (the creator's reuse,
/// RFC 8607 §3.7). Attendee copies do not keep it alive once the home object dropped it:
/// the organizer's removal must revoke access. Whatever the caller's object, only its
/// own reference goes; the id of someone else's event survives a release elsewhere.
pub async fn release(state: &State, meta: &Meta, href: &str, reason: &str) {
    let id = &meta.id;
    if let Err(e) = state.store.remove_ref(href, id).await {
        tracing::warn!(id = %id.as_str(), error = %e, "removing reference failed");
    }
    if let Err(e) = state.store.remove_holder(id, href).await {
        tracing::warn!(id = %id.as_str(), error = %e, "removing holder failed");
    }
    match state.store.held_elsewhere(meta, href).await {
        Ok(true) => {}
        Ok(false) => match state.store.mark_removed(id, reason).await {
            Ok(()) => tracing::info!(id = %id.as_str(), %href, reason, "attachment tombstoned"),
            Err(e) => tracing::warn!(id = %id.as_str(), error = %e, "tombstoning failed"),
        },
        // Unknown: keep it (never remove what may be referenced; gc decides later).
        Err(e) => {
            tracing::warn!(id = %id.as_str(), error = %e, "cannot tell whether still referenced")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(org: &str, attendees: &[&str]) -> Calendar {
        let mut s = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:u\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:20250101T100000Z\r\n");
        if !org.is_empty() {
            s.push_str(&format!("ORGANIZER:{org}\r\n"));
        }
        for a in attendees {
            s.push_str(&format!("ATTENDEE:{a}\r\n"));
        }
        s.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
        Calendar::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn attendee_copy_is_decided_by_the_owner_addresses() {
        let owner2 = vec!["mailto:user2@example.org".to_owned()];
        let owner1 = vec!["mailto:user1@example.org".to_owned()];
        let c = cal(
            "MAILTO:User1@example.org",
            &["mailto:user1@example.org", "mailto:USER2@example.org"],
        );
        assert!(is_attendee_copy(&c, &owner2));
        assert!(!is_attendee_copy(&c, &owner1));
        // Not invited, not organizer: not an attendee copy (the upstream decides).
        assert!(!is_attendee_copy(&c, &["mailto:user3@example.org".into()]));
        // No ORGANIZER: not a scheduled event.
        assert!(!is_attendee_copy(
            &cal("", &["mailto:user2@example.org"]),
            &owner2
        ));
    }

    #[test]
    fn parent_collection_of_an_object_is_its_calendar() {
        assert_eq!(
            parent_collection("/user1/calendar/e.ics"),
            "/user1/calendar/"
        );
        assert_eq!(parent_collection("/e.ics"), "/");
    }

    #[test]
    fn schedule_user_address_is_kept_only_when_it_is_the_callers() {
        let id = Identity {
            principal: "/user1/".into(),
            homes: vec![],
            addresses: vec!["mailto:user1@example.org".into()],
            user: Some("user1".into()),
        };
        let mut h = HeaderMap::new();
        h.insert(
            "schedule-user-address",
            "mailto:User1@example.org".parse().unwrap(),
        );
        filter_schedule_user_address(&mut h, Some(&id));
        assert!(h.contains_key("schedule-user-address"));
        h.insert(
            "schedule-user-address",
            "mailto:user2@example.org".parse().unwrap(),
        );
        filter_schedule_user_address(&mut h, Some(&id));
        assert!(!h.contains_key("schedule-user-address"));
    }
}
