//! Garbage collection: `calattach gc` (DESIGN §4 invariant, §8).
//!
//! The promise is that no attachment is ever lost and no storage leaks forever. gc only
//! deletes what it has proven unreferenced:
//!
//! * **tombstones** (`removed`) older than `gc.retention` — their blobs were replaced or
//!   removed by an attachment POST or by a PUT/DELETE that dropped the last reference.
//!   After deletion the id is unknown (downloads answer 404 instead of 410);
//! * **pending** attachments older than `gc.pending_grace` whose calendar object,
//!   read upstream with the service credential (`gc.username`/`gc.password`), does not
//!   reference them (or no longer exists). A pending id the object *does* reference is
//!   promoted to `live` instead (the commit happened, the state change was lost). Without
//!   a service credential, or when the upstream refuses it, pending ids are reported and
//!   left alone;
//! * **orphan blobs** (a blob without metadata: a crash between the blob write and the
//!   metadata write) older than `gc.pending_grace`;
//! * **interrupted uploads**: an `uploads/<id>.json` record (`Store::put_blob` writes one
//!   before its staging file or multipart upload exists and deletes it when the upload
//!   ends) older than `gc.pending_grace` whose process is gone. Its local staging file is
//!   deleted or its S3 multipart upload aborted, then the record. An upload whose owner
//!   process still runs on this host is never touched, whatever its age; one from another
//!   host is judged by age alone, so `pending_grace` must exceed the longest upload.
//!
//! Concurrency: every deletion is idempotent (`Store::discard` tolerates objects that are
//! already gone), and markers are create-only, so two gc runs and any number of serving
//! instances can run at once without a lock: each thing is deleted once, a second delete
//! is a no-op. The grace period keeps gc away from uploads still in flight: a commit
//! happens within one request, bounded by the upstream timeouts, far below the grace.

use std::time::Duration;

use chrono::Utc;
use futures_util::TryStreamExt;

use crate::attach::{self, Caller, Fetched};
use crate::ical::Calendar;
use crate::state::State;
use crate::store::{AttachmentId, Leftover, State as AttState};

/// What one gc pass did (or would do, in a dry run).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub tombstones_deleted: u64,
    pub pending_deleted: u64,
    pub pending_promoted: u64,
    pub pending_left: u64,
    pub orphan_blobs_deleted: u64,
    /// Live ids whose update/remove commit happened without its tombstone (a crash or a
    /// lost answer), tombstoned now.
    pub released: u64,
    /// Staging files deleted and multipart uploads aborted that crashed uploads left.
    pub uploads_cleared: u64,
    pub errors: u64,
}

/// Options of one pass.
#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    /// Tombstones at least this old are deleted (default `gc.retention`).
    pub retention: Duration,
    /// Pending ids and orphan blobs at least this old are examined.
    pub pending_grace: Duration,
}

/// Runs one pass, printing one line per action through `say`.
pub async fn run(state: &State, opts: &Options, mut say: impl FnMut(String)) -> Report {
    let mut report = Report::default();
    let verb = |done: &str, would: &str| {
        if opts.dry_run {
            would.to_owned()
        } else {
            done.to_owned()
        }
    };
    let now = Utc::now();
    let service = service_caller(state);
    let base = crate::upstream::origin::url_base(&state.upstream, &state.config.attachments.prefix);

    let ids: Vec<AttachmentId> = match state.store.list_ids().try_collect().await {
        Ok(ids) => ids,
        Err(e) => {
            say(format!("error: listing attachments: {e}"));
            report.errors += 1;
            return report;
        }
    };
    let mut known = std::collections::HashSet::new();
    for id in ids {
        known.insert(id.clone());
        let found = match state.store.state(&id).await {
            Ok(f) => f,
            Err(e) => {
                say(format!("error: {}: reading state: {e}", id.as_str()));
                report.errors += 1;
                continue;
            }
        };
        let Some((meta, st)) = found else { continue };
        match st {
            AttState::Live => {}
            AttState::Removed { since } => {
                let age = (now - since).to_std().unwrap_or_default();
                if age < opts.retention {
                    continue;
                }
                if !change(
                    opts.dry_run,
                    state.store.discard(&id),
                    "deleting tombstone",
                    &id,
                    &mut say,
                    &mut report.errors,
                )
                .await
                {
                    continue;
                }
                report.tombstones_deleted += 1;
                say(format!(
                    "{} tombstone {} (removed {})",
                    verb("deleted", "would delete"),
                    id.as_str(),
                    since.to_rfc3339()
                ));
            }
            AttState::Releasing { since, href } => {
                let age = (now - since).to_std().unwrap_or_default();
                if age < opts.pending_grace {
                    continue;
                }
                let Some(caller) = &service else {
                    report.pending_left += 1;
                    say(format!(
                        "left releasing {} ({href}): no gc credentials configured to settle it",
                        id.as_str()
                    ));
                    continue;
                };
                match proof(state, caller, &href, &id, &base).await {
                    Proof::Referenced => {
                        if !change(
                            opts.dry_run,
                            state.store.clear_releasing(&id),
                            "clearing marker",
                            &id,
                            &mut say,
                            &mut report.errors,
                        )
                        .await
                        {
                            continue;
                        }
                        say(format!(
                            "{} releasing {}: still referenced by {href}",
                            verb("kept", "would keep"),
                            id.as_str()
                        ));
                    }
                    Proof::Unreferenced => {
                        // The marked object dropped it; the id itself goes only when
                        // nothing else keeps it alive (the rule of attach::access::release):
                        // a POST on an object that is not the id's home never removes the
                        // attachment its home still holds.
                        let meta = match state.store.state(&id).await {
                            Ok(Some((meta, _))) => meta,
                            _ => continue,
                        };
                        let elsewhere = match state.store.held_elsewhere(&meta, &href).await {
                            Ok(h) => h,
                            Err(e) => {
                                report.errors += 1;
                                say(format!("error releasing {}: {e}", id.as_str()));
                                continue;
                            }
                        };
                        if elsewhere {
                            let unmark = async {
                                state.store.remove_ref(&href, &id).await?;
                                state.store.remove_holder(&id, &href).await?;
                                state.store.clear_releasing(&id).await
                            };
                            if change(
                                opts.dry_run,
                                unmark,
                                "clearing marker",
                                &id,
                                &mut say,
                                &mut report.errors,
                            )
                            .await
                            {
                                say(format!(
                                    "{} releasing {}: dropped by {href}, still held by its home or the creator's objects",
                                    verb("kept", "would keep"),
                                    id.as_str()
                                ));
                            }
                            continue;
                        }
                        let tombstone = async {
                            state.store.mark_removed(&id, "released").await?;
                            state.store.clear_releasing(&id).await
                        };
                        if !change(
                            opts.dry_run,
                            tombstone,
                            "tombstoning",
                            &id,
                            &mut say,
                            &mut report.errors,
                        )
                        .await
                        {
                            continue;
                        }
                        report.released += 1;
                        say(format!(
                            "{} {}: no longer referenced by {href}",
                            verb("tombstoned", "would tombstone"),
                            id.as_str()
                        ));
                        // A zero retention deletes the new tombstone in this same pass.
                        if opts.retention.is_zero() {
                            if !change(
                                opts.dry_run,
                                state.store.discard(&id),
                                "deleting tombstone",
                                &id,
                                &mut say,
                                &mut report.errors,
                            )
                            .await
                            {
                                continue;
                            }
                            report.tombstones_deleted += 1;
                            say(format!(
                                "{} tombstone {} (retention 0)",
                                verb("deleted", "would delete"),
                                id.as_str()
                            ));
                        }
                    }
                    Proof::Unknown(why) => {
                        report.pending_left += 1;
                        say(format!("left releasing {} ({href}): {why}", id.as_str()));
                    }
                    Proof::Error(e) => {
                        say(format!("error: {}: reading {href}: {e}", id.as_str()));
                        report.errors += 1;
                    }
                }
            }
            AttState::Pending => {
                let age = (now - meta.created).to_std().unwrap_or_default();
                if age < opts.pending_grace {
                    continue;
                }
                let Some(caller) = &service else {
                    report.pending_left += 1;
                    say(format!(
                        "left pending {} ({}): no gc credentials configured to prove it unreferenced",
                        id.as_str(),
                        meta.href
                    ));
                    continue;
                };
                let referenced = match proof(state, caller, &meta.href, &id, &base).await {
                    Proof::Referenced => true,
                    Proof::Unreferenced => false,
                    Proof::Unknown(why) => {
                        say(format!(
                            "left pending {} ({}): {why}",
                            id.as_str(),
                            meta.href
                        ));
                        report.pending_left += 1;
                        continue;
                    }
                    Proof::Error(e) => {
                        say(format!(
                            "error: {}: reading {}: {e}",
                            id.as_str(),
                            meta.href
                        ));
                        report.errors += 1;
                        continue;
                    }
                };
                match referenced {
                    true => {
                        if !change(
                            opts.dry_run,
                            state.store.mark_live(&id),
                            "promoting",
                            &id,
                            &mut say,
                            &mut report.errors,
                        )
                        .await
                        {
                            continue;
                        }
                        report.pending_promoted += 1;
                        say(format!(
                            "{} pending {}: referenced by {}",
                            verb("promoted", "would promote"),
                            id.as_str(),
                            meta.href
                        ));
                    }
                    false => {
                        if !change(
                            opts.dry_run,
                            state.store.discard(&id),
                            "deleting",
                            &id,
                            &mut say,
                            &mut report.errors,
                        )
                        .await
                        {
                            continue;
                        }
                        report.pending_deleted += 1;
                        say(format!(
                            "{} pending {}: not referenced by {}",
                            verb("deleted", "would delete"),
                            id.as_str(),
                            meta.href
                        ));
                    }
                }
            }
        }
    }

    uploads(state, opts, &mut say, &mut report).await;

    // Blobs without metadata: a crash between put_blob and put_meta.
    let blobs: Vec<_> = match state.store.list_blobs().try_collect().await {
        Ok(b) => b,
        Err(e) => {
            say(format!("error: listing blobs: {e}"));
            report.errors += 1;
            return report;
        }
    };
    for (id, written) in blobs {
        if known.contains(&id) {
            continue;
        }
        let age = (now - written).to_std().unwrap_or_default();
        if age < opts.pending_grace {
            continue;
        }
        // Re-check: metadata may have appeared since the listing.
        match state.store.state(&id).await {
            Ok(None) => {}
            Ok(Some(_)) => continue,
            Err(e) => {
                say(format!("error: {}: reading state: {e}", id.as_str()));
                report.errors += 1;
                continue;
            }
        }
        if !change(
            opts.dry_run,
            state.store.discard(&id),
            "deleting orphan blob",
            &id,
            &mut say,
            &mut report.errors,
        )
        .await
        {
            continue;
        }
        report.orphan_blobs_deleted += 1;
        say(format!(
            "{} orphan blob {} (no metadata, written {})",
            verb("deleted", "would delete"),
            id.as_str(),
            written.to_rfc3339()
        ));
    }
    report
}

/// What became of an upload, from its record.
#[derive(Debug, PartialEq, Eq)]
enum Upload {
    /// Younger than the grace: may still be running elsewhere.
    Young,
    /// Its owner process still runs on this host.
    Running,
    /// Older than the grace and not running here: what it left may be cleared.
    Interrupted,
}

fn judge(l: &Leftover, now: chrono::DateTime<Utc>, grace: Duration) -> Upload {
    let age = (now - l.record.started).to_std().unwrap_or_default();
    if l.record.owner.is_alive() == Some(true) {
        Upload::Running
    } else if age < grace {
        Upload::Young
    } else {
        Upload::Interrupted
    }
}

fn describe(l: &Leftover) -> String {
    let what = match (&l.record.multipart_id, &l.record.staging) {
        (Some(mid), _) => format!("multipart upload {mid}"),
        (None, Some(file)) => format!("staging file {file}"),
        (None, None) => "nothing".to_owned(),
    };
    format!(
        "{what}; started {} by pid {} on {}",
        l.record.started.to_rfc3339(),
        l.record.owner.pid,
        l.record.owner.host
    )
}

/// Clears what interrupted uploads left: staging files, incomplete multipart uploads.
async fn uploads(state: &State, opts: &Options, say: &mut impl FnMut(String), report: &mut Report) {
    let listed = match state.store.list_uploads().await {
        Ok(l) => l,
        Err(e) => {
            say(format!("error: listing uploads: {e}"));
            report.errors += 1;
            return;
        }
    };
    let now = Utc::now();
    for l in listed {
        let l = match l {
            Ok(l) => l,
            Err(e) => {
                say(format!("error: reading an upload record: {e}"));
                report.errors += 1;
                continue;
            }
        };
        let id = l.record.id.as_str();
        match judge(&l, now, opts.pending_grace) {
            Upload::Young => {}
            Upload::Running => say(format!(
                "left upload {id}: still running ({})",
                describe(&l)
            )),
            Upload::Interrupted if opts.dry_run => {
                report.uploads_cleared += 1;
                say(format!(
                    "would clear interrupted upload {id} ({})",
                    describe(&l)
                ));
            }
            Upload::Interrupted => match state.store.clear_upload(&l.record).await {
                Ok(true) => {
                    report.uploads_cleared += 1;
                    say(format!(
                        "cleared interrupted upload {id} ({})",
                        describe(&l)
                    ));
                }
                // Another gc run cleared it, or the upload had finished: only the record
                // was left, and is gone now.
                Ok(false) => {}
                Err(e) => {
                    say(format!("error: {id}: clearing interrupted upload: {e}"));
                    report.errors += 1;
                }
            },
        }
    }
}

/// Logs what interrupted uploads left in the store, at start: `gc` (or the periodic
/// pass) clears it once `gc.pending_grace` has passed.
pub async fn note_leftovers(state: std::sync::Arc<State>) {
    let listed = match state.store.list_uploads().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "listing upload records failed");
            return;
        }
    };
    let now = Utc::now();
    for l in listed.into_iter().flatten() {
        // An owner on another host may still be running: only age tells.
        let dead = match l.record.owner.is_alive() {
            Some(alive) => !alive,
            None => judge(&l, now, state.config.gc.pending_grace) == Upload::Interrupted,
        };
        if dead {
            tracing::warn!(
                id = %l.record.id.as_str(),
                left = %describe(&l),
                "interrupted upload left data in storage; gc clears it"
            );
        }
    }
}

/// Runs one store change unless this is a dry run. A failure is said and counted, and
/// the caller moves on to the next id (`false`).
async fn change(
    dry_run: bool,
    op: impl std::future::Future<Output = Result<(), crate::store::StoreError>>,
    what: &str,
    id: &AttachmentId,
    say: &mut impl FnMut(String),
    errors: &mut u64,
) -> bool {
    if dry_run {
        return true;
    }
    match op.await {
        Ok(()) => true,
        Err(e) => {
            say(format!("error: {}: {what}: {e}", id.as_str()));
            *errors += 1;
            false
        }
    }
}

/// What reading the object upstream proved about one id.
enum Proof {
    Referenced,
    /// The object does not reference the id, or no longer exists.
    Unreferenced,
    /// Nothing can be concluded (credentials refused, object does not parse).
    Unknown(String),
    Error(crate::error::Error),
}

/// Reads `href` with the service credential and looks for `id` among its ATTACH URIs.
async fn proof(state: &State, caller: &Caller, href: &str, id: &AttachmentId, base: &str) -> Proof {
    let max = state.config.attachments.max_object_size;
    match attach::fetch_object(&state.upstream, caller, href, max).await {
        Ok(Fetched::Object(o)) => match Calendar::parse(&o.bytes) {
            Ok(cal) if cal.attach_refs(base).iter().any(|r| r.id == id.as_str()) => {
                Proof::Referenced
            }
            Ok(_) => Proof::Unreferenced,
            Err(_) => Proof::Unknown("the object does not parse".into()),
        },
        Ok(Fetched::Relay(r)) if r.status() == http::StatusCode::NOT_FOUND => Proof::Unreferenced,
        Ok(Fetched::Relay(r)) => Proof::Unknown(format!(
            "upstream answered {} to the gc credentials",
            r.status().as_u16()
        )),
        Err(e) => Proof::Error(e),
    }
}

/// The service credential from `[gc]`, as a caller.
pub fn service_caller(state: &State) -> Option<Caller> {
    Caller::service(&state.config.gc)
}

/// Runs gc every `gc.interval` inside `serve`, logging what it did.
pub async fn periodic(state: std::sync::Arc<State>, interval: Duration) {
    let opts = Options {
        dry_run: false,
        retention: state.config.gc.retention,
        pending_grace: state.config.gc.pending_grace,
    };
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let report = run(
            &state,
            &opts,
            |line| tracing::info!(target: "calattach::gc", "{line}"),
        )
        .await;
        tracing::info!(?report, "gc pass finished");
        crate::metrics::get().gc_pass(
            &[
                ("tombstones_deleted", report.tombstones_deleted),
                ("pending_deleted", report.pending_deleted),
                ("pending_promoted", report.pending_promoted),
                ("pending_left", report.pending_left),
                ("orphan_blobs_deleted", report.orphan_blobs_deleted),
                ("released", report.released),
                ("uploads_cleared", report.uploads_cleared),
            ],
            report.errors,
        );
    }
}
