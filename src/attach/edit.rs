//! The edit of a calendar object for an attachment change (DESIGN §4 steps 2 and 4),
//! shared by the POST's pre-body check and the commit: parsing and bounds, the edit
//! itself with its RFC 8607 §3.11 preconditions, and the `412` answer. CPU work runs off
//! the I/O thread.

use std::sync::Arc;

use http::{Response, StatusCode};

use super::params::{AttachAction, AttachQuery};
use super::Object;
use crate::body::Body;
use crate::error::{Error, Precondition};
use crate::ical::{edit, Budget, Calendar, EditError, NewAttach};
use crate::state::State;

/// Runs CPU work (parsing, rid checks) on the blocking pool: a worker thread serves
/// many connections on one runtime, and one request's work must not delay the others.
pub(super) async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("calendar work failed: {e}")))
}

pub(super) async fn parse_object(
    object: &Object,
    path: &str,
    max_overrides: usize,
) -> Result<Arc<Calendar>, Error> {
    let bytes = object.bytes.clone();
    let cal = off_thread(move || Calendar::parse(&bytes))
        .await?
        .map_err(|e| {
            Error::Precondition(
                Precondition::ValidCalendarData,
                format!("{path} does not parse as iCalendar: {e}"),
            )
        })?;
    if cal.override_count() > max_overrides {
        return Err(Error::Precondition(
            Precondition::MaxInstances,
            format!(
                "{path} has {} overridden instances, more than attachments.max_overrides",
                cal.override_count()
            ),
        ));
    }
    Ok(Arc::new(cal))
}

pub(super) fn edit_for(
    cal: &Calendar,
    query: &AttachQuery,
    new: Option<&NewAttach>,
    max_attachments: u64,
    budget: &mut Budget,
) -> Result<Vec<u8>, Error> {
    let rids = query.rids.as_deref();
    let result = match (query.action, new) {
        (AttachAction::Add, Some(a)) => {
            let count = cal.distinct_managed_ids().len() as u64;
            if count + 1 > max_attachments {
                return Err(Error::Precondition(
                    Precondition::MaxAttachmentsPerResource,
                    format!(
                        "the object already holds {count} managed attachments \
                         (max {max_attachments})"
                    ),
                ));
            }
            edit::add_attach_within(cal, rids, a, budget)
        }
        (AttachAction::Update, Some(a)) => {
            edit::update_attach(cal, query.managed_id.as_deref().unwrap_or(""), a)
        }
        (AttachAction::Remove, _) => {
            edit::remove_attach_within(cal, rids, query.managed_id.as_deref().unwrap_or(""), budget)
        }
        _ => return Err(Error::Internal("attachment edit without its upload".into())),
    };
    result.map_err(edit_error)
}

fn edit_error(e: EditError) -> Error {
    if e.is_rid_error() {
        return Error::Precondition(Precondition::ValidRid, e.to_string());
    }
    match e {
        EditError::UnknownManagedId(_) => {
            Error::Precondition(Precondition::ValidManagedId, e.to_string())
        }
        EditError::NoComponent => {
            Error::Precondition(Precondition::ValidCalendarData, e.to_string())
        }
        other => Error::BadRequest(other.to_string()),
    }
}

/// `412`; under `Prefer: return=representation` with the current object, its `ETag` and
/// `Content-Location` (RFC 8144 §3.2, RFC 8607 Appendix A).
pub(super) fn precondition_failed(
    state: &State,
    path: &str,
    object: &Object,
    prefer: bool,
) -> Response<Body> {
    tracing::info!(%path, "client precondition failed (412)");
    super::object_response(
        state,
        StatusCode::PRECONDITION_FAILED,
        path,
        &object.validators,
        prefer.then(|| object.bytes.clone()),
    )
}
