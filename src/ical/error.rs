//! Why an edit of a calendar object cannot be applied: shared by the editor
//! (`edit.rs`) and the recurrence checks it relies on (`recur.rs`).

/// Why an edit cannot be applied. The attachment layer maps these to RFC 8607 §3.11
/// preconditions as noted on each variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// A rid is not `M` / an override / an instance (→ `CALDAV:valid-rid`).
    #[error("rid {rid} is invalid: {reason}")]
    InvalidRid { rid: String, reason: String },
    /// An instance rid on an object without RRULE/RDATE (→ `CALDAV:valid-rid`).
    #[error("rid {rid} is invalid: the object is not recurring")]
    NotRecurring { rid: String },
    /// The managed id is not on the targeted components (→ `CALDAV:valid-managed-id`).
    #[error("managed-id {0} is not in the targeted components")]
    UnknownManagedId(String),
    /// Validating the rid needs more work than allowed (RFC 8607 §7; → `CALDAV:valid-rid`
    /// or a 403 of the caller's choice).
    #[error("too complex: {0}")]
    TooComplex(String),
    /// The object has no VEVENT, VTODO or VJOURNAL.
    #[error("no scheduling component")]
    NoComponent,
    /// A [`super::NewAttach`] field cannot be written (control characters in the URI).
    #[error("invalid attachment value: {0}")]
    InvalidValue(String),
}

impl EditError {
    /// Whether the error is about the `rid` parameter (`CALDAV:valid-rid`).
    pub fn is_rid_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidRid { .. } | Self::NotRecurring { .. } | Self::TooComplex(_)
        )
    }
}
