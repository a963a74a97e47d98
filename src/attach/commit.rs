//! Group commit of attachment changes to one calendar object (DESIGN §4 step 5;
//! RFC 8607 §3.4–3.6).
//!
//! Every attachment POST ends in a read-modify-write of its calendar object: GET, edit,
//! `PUT` with `If-Match`. N clients adding files to one event at once would each race
//! the others (O(N²) round trips, most of them lost to `412`). Instead, within one
//! process, the changes to one object queue behind one committer: it reads the object
//! once, applies every queued change in arrival order, and commits them all with one
//! conditional `PUT`.
//!
//! * **Who commits.** The first member to take the object's lock leads: it takes the
//!   oldest queued change and every other one that may share its `PUT`, commits them,
//!   and answers each through its channel. It goes on until its own change is answered,
//!   then lets the next waiter lead. A member whose change a previous leader committed
//!   finds its answer when it gets the lock, without touching the upstream.
//! * **Who may share a `PUT`.** Only unconditional changes with the same credentials
//!   and the same scheduling headers: the upstream authorises the `PUT` with the
//!   credentials it carries, so a change never rides on someone else's. A conditional
//!   POST (`If-Match`, `If-None-Match`, `If-Schedule-Tag-Match`) commits alone against
//!   the validators it sent, and gets `412` (with the current representation under
//!   `Prefer`) when they do not hold: never merged over a version the client has not
//!   seen.
//! * **Each member its own answer.** A change that cannot apply (a limit, an unknown
//!   `managed-id`, a `rid`) fails alone; the others commit. A refusal or failure of the
//!   `PUT` itself is every included member's answer.
//! * **Conflicts.** `412` (changed meanwhile, also by another calattach instance) and
//!   `423` (locked) were not applied: re-read, re-apply, retry with jittered exponential
//!   backoff until `attachments.commit_deadline`, then `409`. A `5xx` is read back: a
//!   change that is there was applied, one that is not is retried the same way.
//! * **Read-back.** Every `2xx` commit is read back: an upstream whose conditional `PUT`
//!   is not atomic (sabre/dav) may have let another process's write of the same version
//!   overwrite it. A change missing from the object is re-applied like after a `412`;
//!   the read also gives the validators an upstream omits when it changed the data.
//!   An overwrite that lands after the read-back cannot be seen (docs/deployment.md).
//! * **What remains.** As for a single commit (`post` module docs): a definite failure
//!   lets each member delete its blob; an ambiguous one (the `PUT` went out, no answer)
//!   keeps every member's blob `pending` for the next touch or `gc`. A leader whose
//!   client went away mid-commit drops the batch: its members answer `502` and keep their
//!   blobs `pending`, which the same reconciliation settles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use rand::Rng;
use tokio::sync::oneshot;

use super::conditional::{self, Validators};
use super::params::{self, AttachQuery};
use super::{fetch_object, Caller, Fetched, Object};
use crate::body::{self, Body};
use crate::error::Error;
use crate::ical::{Calendar, NewAttach};
use crate::state::State;

/// Most changes one `PUT` carries.
const MAX_BATCH: usize = 64;

/// Headers of the client's POST that the commit PUT carries on: scheduling controls
/// (RFC 6638 §8, draft-ietf-calext-caldav-scheduling-controls) so an upstream with
/// implicit scheduling informs attendees of the change (RFC 8607 §3.12.6).
pub const FORWARDED_TO_COMMIT: [&str; 3] =
    ["schedule-reply", "scheduling", "schedule-user-address"];

/// One attachment change waiting for its commit.
pub struct Change {
    pub caller: Caller,
    pub query: AttachQuery,
    /// The `ATTACH` an add or update writes (its blob is stored already).
    pub attach: Option<NewAttach>,
    /// The client's request headers: preconditions and scheduling controls.
    pub headers: HeaderMap,
    /// The object as this request read it before its upload: a first guess of the
    /// current version (a `412` corrects it).
    pub object: Object,
    /// What is left of the request's recurrence budget (`ical::Budget`) after its
    /// pre-body checks; every attempt applies the change within a copy of it.
    pub budget: crate::ical::Budget,
}

/// The committed object.
#[derive(Clone)]
pub struct Committed {
    pub validators: Validators,
    pub cal: Arc<Calendar>,
}

/// A change that was not committed, with the answer to give.
pub struct Failure {
    /// `true`: the upstream certainly did not apply it (the blob may go); `false`: it
    /// may have (the blob stays pending).
    pub definite: bool,
    pub answer: Box<Answer>,
}

/// A response that can be given to several clients.
#[derive(Clone)]
pub struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    /// Reads a (small) response: error bodies and upstream refusals.
    async fn of(resp: Response<Body>) -> Answer {
        const MAX: usize = 64 * 1024;
        let (parts, mut b) = resp.into_parts();
        let mut buf = bytes::BytesMut::new();
        while let Some(Ok(frame)) = b.frame().await {
            if let Ok(d) = frame.into_data() {
                if buf.len() + d.len() > MAX {
                    break;
                }
                buf.extend_from_slice(&d);
            }
        }
        let body = buf.freeze();
        let mut headers = parts.headers;
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Answer {
            status: parts.status,
            headers,
            body,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(body::full(self.body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp
    }
}

type Outcome = Result<Committed, Failure>;

struct Member {
    /// Changes with equal keys may share a `PUT`; `None` commits alone.
    key: Option<Vec<u8>>,
    /// The slot's commit count when this change queued: a commit since then makes its
    /// pre-read object certainly stale.
    seen: u64,
    change: Change,
    tx: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Slot {
    lock: tokio::sync::Mutex<()>,
    queue: std::sync::Mutex<Vec<Member>>,
    /// Commits made through this slot (only changed under `lock`).
    commits: std::sync::atomic::AtomicU64,
}

/// The per-object commit queues of one process.
#[derive(Default)]
pub struct Commits {
    slots: std::sync::Mutex<HashMap<String, Arc<Slot>>>,
}

/// The commit queues of this process: one per calendar object, shared by every worker
/// thread (keyed by the upstream's origin and the object's path).
pub fn queues() -> &'static Commits {
    static COMMITS: std::sync::OnceLock<Commits> = std::sync::OnceLock::new();
    COMMITS.get_or_init(Commits::default)
}

impl Commits {
    /// Commits `change` to the object at `path`, with whatever other changes to it are
    /// waiting (module docs).
    pub async fn commit(&self, state: &State, path: &str, change: Change) -> Outcome {
        let key = batch_key(&change);
        let object = format!(
            "{}{path}",
            state.config.upstream.url.as_str().trim_end_matches('/')
        );
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(object.clone()).or_default().clone()
        };
        let (tx, mut rx) = oneshot::channel();
        let seen = slot.commits.load(std::sync::atomic::Ordering::Acquire);
        lock(&slot.queue).push(Member {
            key,
            seen,
            change,
            tx,
        });
        let outcome = {
            let _turn = slot.lock.lock().await;
            loop {
                match rx.try_recv() {
                    Ok(outcome) => break outcome,
                    Err(oneshot::error::TryRecvError::Closed) => break Err(interrupted().await),
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
                let batch = take_batch(&slot);
                if batch.is_empty() {
                    // Unreachable while our own change waits; never spin.
                    break Err(interrupted().await);
                }
                run_batch(state, path, &slot, batch).await;
            }
        };
        // Forget the slot once nobody uses it (the map's reference and ours remain).
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&slot) == 2 && lock(&slot.queue).is_empty() {
            slots.remove(&object);
        }
        outcome
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The oldest waiting change and, when it is unconditional, every other waiting change
/// with the same key (up to [`MAX_BATCH`]), in arrival order.
fn take_batch(slot: &Slot) -> Vec<Member> {
    let mut queue = lock(&slot.queue);
    if queue.is_empty() {
        return Vec::new();
    }
    let first = queue.remove(0);
    let Some(key) = first.key.clone() else {
        return vec![first];
    };
    let mut batch = vec![first];
    let mut i = 0;
    while i < queue.len() && batch.len() < MAX_BATCH {
        if queue[i].key.as_ref() == Some(&key) {
            batch.push(queue.remove(i));
        } else {
            i += 1;
        }
    }
    batch
}

/// Credentials and scheduling headers, for unconditional changes.
fn batch_key(change: &Change) -> Option<Vec<u8>> {
    if conditional::is_conditional(&change.headers) {
        return None;
    }
    let mut key = Vec::new();
    if let Some(a) = change.caller.authorization() {
        key.extend_from_slice(a.as_bytes());
    }
    for name in FORWARDED_TO_COMMIT {
        key.push(0);
        if let Some(v) = change.headers.get(name) {
            key.extend_from_slice(v.as_bytes());
        }
    }
    Some(key)
}

async fn interrupted() -> Failure {
    tracing::warn!("commit interrupted: its leader went away; attachment kept pending");
    Failure {
        definite: false,
        answer: Box::new(Answer::of(Error::UpstreamUnavailable.into_response()).await),
    }
}

async fn definite(e: Error) -> Failure {
    Failure {
        definite: true,
        answer: Box::new(Answer::of(e.into_response()).await),
    }
}

/// Applies every member's change in order and commits them with one conditional `PUT`,
/// re-reading and re-applying on `412`/`423` until the deadline. Every member gets its
/// answer through its channel.
async fn run_batch(state: &State, path: &str, slot: &Slot, members: Vec<Member>) {
    use std::sync::atomic::Ordering;
    let cfg = &state.config.attachments;
    let deadline = tokio::time::Instant::now() + cfg.commit_deadline;
    let lead = &members[0].change;
    let alone = members[0].key.is_none();
    // The lead's own read is the first guess, unless a commit through this slot
    // happened since it queued (then it is certainly stale: read again, rather than
    // lose a round trip to a 412).
    let mut object = if members[0].seen == slot.commits.load(Ordering::Acquire) {
        lead.object.clone()
    } else {
        match fetch_object(&state.upstream, &lead.caller, path, cfg.max_object_size).await {
            Ok(Fetched::Object(o)) => o,
            Ok(Fetched::Relay(resp)) => {
                let results = fail_all(&members, resp, true).await;
                return answer(members, results);
            }
            Err(e) => {
                let results = fail_all(&members, e.into_response(), true).await;
                return answer(members, results);
            }
        }
    };
    let mut attempt = 0u32;
    let results: Vec<Outcome> = loop {
        if alone && !conditional::preconditions_hold(&lead.headers, &object.validators) {
            let prefer = params::wants_representation(&lead.headers);
            let resp = super::edit::precondition_failed(state, path, &object, prefer);
            break fail_all(&members, resp, true).await;
        }
        let cal = match super::edit::parse_object(&object, path, cfg.max_overrides).await {
            Ok(c) => c,
            Err(e) => break fail_all(&members, e.into_response(), true).await,
        };
        // Each change on top of the previous ones; one that cannot apply fails alone.
        // CPU work, off the I/O thread; each member checks its rids within what is left
        // of its own request's budget (afresh on every attempt).
        let work: Vec<_> = members
            .iter()
            .map(|m| {
                let c = &m.change;
                (c.query.clone(), c.attach.clone(), c.budget.clone())
            })
            .collect();
        let max = cfg.max_attachments_per_resource;
        let edited = super::edit::off_thread(move || {
            let mut current = cal;
            let mut own: Vec<Option<Error>> = Vec::with_capacity(work.len());
            for (query, attach, mut budget) in work {
                let applied =
                    super::edit::edit_for(&current, &query, attach.as_ref(), max, &mut budget)
                        .and_then(|bytes| {
                            Calendar::parse(&bytes).map_err(|e| {
                                Error::Internal(format!("edited object does not parse: {e}"))
                            })
                        });
                match applied {
                    Ok(next) => {
                        current = Arc::new(next);
                        own.push(None);
                    }
                    Err(e) => own.push(Some(e)),
                }
            }
            (current, own)
        })
        .await;
        let (current, own) = match edited {
            Ok(r) => r,
            Err(e) => break fail_all(&members, e.into_response(), true).await,
        };
        if own.iter().all(Option::is_some) {
            let mut out = Vec::new();
            for e in own.into_iter().flatten() {
                out.push(Err(definite(e).await));
            }
            break out;
        }
        let Some(etag) = object.validators.etag.clone() else {
            let e = Error::Conflict(format!(
                "the calendar server sent no ETag for {path}; cannot update it safely"
            ));
            break fail_all(&members, e.into_response(), true).await;
        };
        let new_bytes = Bytes::copy_from_slice(current.as_bytes());
        let make_put = || {
            let mut put = lead.caller.request(
                &state.upstream,
                Method::PUT,
                path,
                body::full(new_bytes.clone()),
            )?;
            let h = put.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/calendar; charset=utf-8"),
            );
            if let Ok(v) = HeaderValue::from_str(&etag) {
                h.insert(header::IF_MATCH, v);
            }
            for name in FORWARDED_TO_COMMIT {
                if let Some(v) = lead.headers.get(name) {
                    h.insert(name, v.clone());
                }
            }
            Ok(put)
        };
        // Never sent (no connection) is a definite failure; anything after the request
        // went out may have been applied.
        crate::metrics::get().commit_sent();
        let resp = match state.upstream.send_retrying(make_put).await {
            Ok(r) => r,
            Err(e @ (Error::UpstreamUnreachable | Error::UpstreamTls(_))) => {
                break settle(own, Err(definite(e).await)).await;
            }
            Err(e) => {
                let f = Failure {
                    definite: false,
                    answer: Box::new(Answer::of(e.into_response()).await),
                };
                break settle(own, Err(f)).await;
            }
        };
        let status = resp.status();
        let mut reread = None;
        let mut last_error: Option<Answer> = None;
        if status.is_success() {
            let mut validators = super::validators(resp.headers());
            super::drain(resp).await;
            // Read back. An upstream whose conditional PUT is not atomic (sabre/dav
            // under concurrent PHP workers checks If-Match, then writes) can let another
            // writer of the same version overwrite this one, and both hear 2xx. A change
            // that is not there was lost: it is re-applied like after a 412. The read
            // also gives the validators an upstream omits when it changed the data.
            let back = fetch_object(&state.upstream, &lead.caller, path, cfg.max_object_size).await;
            match back {
                Ok(Fetched::Object(o)) if applied(&members, &own, &current, &o).is_none() => {
                    tracing::warn!(%path, "committed change missing on read-back (overwritten by a concurrent writer); re-applying");
                    reread = Some(o);
                }
                other => {
                    if let (Ok(Fetched::Object(o)), None) = (&other, &validators.etag) {
                        validators = o.validators.clone();
                    }
                    let committed = Committed {
                        validators,
                        cal: current,
                    };
                    slot.commits.fetch_add(1, Ordering::AcqRel);
                    let changes = own.iter().filter(|e| e.is_none()).count() as u64;
                    crate::metrics::get().changes_committed(changes);
                    tracing::debug!(%path, changes, "batch committed");
                    break settle(own, Ok(committed)).await;
                }
            }
        } else {
            // 412: the object changed since it was read. 423: the upstream holds a lock
            // (Xandikos locks a collection while it writes). Not applied either way, so
            // re-reading and re-applying is safe. 5xx: unknown (Xandikos answers 500
            // when two writes collide in its repository): the object is read back at
            // once and tells — a change that is there was applied, one that is not can
            // be re-applied (the PUT was conditional, so a second one cannot apply twice).
            let retryable =
                status == StatusCode::PRECONDITION_FAILED || status == StatusCode::LOCKED;
            if !retryable && !status.is_server_error() {
                tracing::info!(%path, status = status.as_u16(), "upstream refused the commit");
                let answer = Box::new(Answer::of(state.upstream.relay_response(resp)).await);
                let f = Failure {
                    definite: true,
                    answer,
                };
                break settle(own, Err(f)).await;
            }
            if status.is_server_error() {
                let refusal = Answer::of(state.upstream.relay_response(resp)).await;
                match fetch_object(&state.upstream, &lead.caller, path, cfg.max_object_size).await {
                    Ok(Fetched::Object(o)) => {
                        if let Some(cal) = applied(&members, &own, &current, &o) {
                            slot.commits.fetch_add(1, Ordering::AcqRel);
                            tracing::info!(%path, status = status.as_u16(), "commit answered with an error but applied");
                            let committed = Committed {
                                validators: o.validators.clone(),
                                cal: Arc::new(cal),
                            };
                            break settle(own, Ok(committed)).await;
                        }
                        reread = Some(o);
                        last_error = Some(refusal);
                    }
                    // Cannot tell: the members stay pending, with the upstream's answer.
                    _ => {
                        let f = Failure {
                            definite: false,
                            answer: Box::new(refusal),
                        };
                        break settle(own, Err(f)).await;
                    }
                }
            } else {
                super::drain(resp).await;
            }
        }
        attempt += 1;
        crate::metrics::get().commit_retry();
        let pause = backoff(attempt);
        if tokio::time::Instant::now() + pause > deadline {
            // An upstream that keeps failing is relayed as it answered (the read-back
            // showed the change was not applied); one that keeps changing is a 409.
            if let Some(answer) = last_error.take() {
                let f = Failure {
                    definite: true,
                    answer: Box::new(answer),
                };
                break settle(own, Err(f)).await;
            }
            let e = Error::Conflict(format!(
                "{path} kept changing; gave up after {attempt} attempts in {:?} (attachments.commit_deadline)",
                cfg.commit_deadline
            ));
            break fail_all(&members, e.into_response(), true).await;
        }
        tracing::warn!(%path, attempt, status = status.as_u16(), "commit not applied (412 on commit, 423 locked, or a server error read back as not applied), re-applying edit");
        tokio::time::sleep(pause).await;
        object = match reread {
            Some(o) => o,
            None => {
                match fetch_object(&state.upstream, &lead.caller, path, cfg.max_object_size).await {
                    Ok(Fetched::Object(o)) => o,
                    Ok(Fetched::Relay(resp)) => break fail_all(&members, resp, true).await,
                    Err(e) => break fail_all(&members, e.into_response(), true).await,
                }
            }
        };
    };
    answer(members, results);
}

fn answer(members: Vec<Member>, results: Vec<Outcome>) {
    for (m, r) in members.into_iter().zip(results) {
        // A member whose client went away no longer listens; its blob stays pending.
        let _ = m.tx.send(r);
    }
}

/// Whether the object read back holds the batch's changes (`current` is what the batch
/// wrote): a new id of an add or update is there (ids are random: only this batch can
/// have written it), or — for a batch of removes only — each removed id is held by the
/// same components (master, overrides) as in what the batch wrote.
fn applied(
    members: &[Member],
    own: &[Option<Error>],
    current: &Calendar,
    object: &Object,
) -> Option<Calendar> {
    let back = Calendar::parse(&object.bytes).ok()?;
    let ids = back.distinct_managed_ids();
    let included = members
        .iter()
        .zip(own)
        .filter(|(_, e)| e.is_none())
        .map(|(m, _)| m);
    let mut new_ids = included
        .clone()
        .filter_map(|m| m.change.attach.as_ref())
        .peekable();
    let holders = |cal: &Calendar, id: &str| -> std::collections::BTreeSet<Option<String>> {
        cal.managed_ids()
            .into_iter()
            .filter(|c| c.managed_ids.iter().any(|m| m == id))
            .map(|c| c.rid)
            .collect()
    };
    let done = if new_ids.peek().is_some() {
        new_ids.all(|a| ids.contains(&a.managed_id))
    } else {
        included
            .filter_map(|m| m.change.query.managed_id.as_deref())
            .all(|id| holders(&back, id) == holders(current, id))
    };
    done.then_some(back)
}

/// The batch outcome for the members whose change applied; their own failure for the
/// others.
async fn settle(own: Vec<Option<Error>>, batch: Result<Committed, Failure>) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(own.len());
    for e in own {
        out.push(match (e, &batch) {
            (Some(e), _) => Err(definite(e).await),
            (None, Ok(c)) => Ok(c.clone()),
            (None, Err(f)) => Err(Failure {
                definite: f.definite,
                answer: f.answer.clone(),
            }),
        });
    }
    out
}

async fn fail_all(members: &[Member], resp: Response<Body>, definite: bool) -> Vec<Outcome> {
    let answer = Box::new(Answer::of(resp).await);
    members
        .iter()
        .map(|_| {
            Err(Failure {
                definite,
                answer: answer.clone(),
            })
        })
        .collect()
}

/// Jittered exponential backoff: up to 20 ms, 40 ms, 80 ms, … (capped at 1 s).
fn backoff(attempt: u32) -> Duration {
    let cap = (10u64 << attempt.min(7)).min(1000);
    Duration::from_millis(rand::rng().random_range(cap / 2..=cap))
}
