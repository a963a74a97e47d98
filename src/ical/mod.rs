//! Lossless iCalendar engine for managed attachments (RFC 8607 §3.3–3.7, §4).
//!
//! A [`Calendar`] keeps the object's original bytes and an index of its logical
//! content lines (RFC 5545 §3.1) and components. Nothing is re-serialised: an edit
//! (see [`edit`]) inserts, deletes or replaces whole raw line spans, so every byte
//! the edit does not target — vendor X- properties, quoting, folding, line endings,
//! unknown components, even non-conformant folds — leaves exactly as it came in.
//!
//! Lines the engine writes itself are canonical (RFC 5545 §3.1, RFC 6868): folded at
//! 75 octets on UTF-8 boundaries, parameter values quoted when they contain `:;,`,
//! carets, newlines and DQUOTEs RFC 6868-encoded. Their line ending is the
//! document's own: LF when the document uses bare LF everywhere, CRLF otherwise
//! (a CalDAV server that stored an LF-only object keeps getting LF-only lines).
//!
//! Recurrence (`rid` targeting, RFC 8607 §3.3.2) lives in `recur`: rids are matched
//! literally against existing `RECURRENCE-ID` values and against the instances of
//! the master's recurrence set, expanded in wall-clock time with the `rrule` crate.
//!
//! ```
//! use calattach::ical::{edit, Calendar, NewAttach};
//! let ics = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1\r\n\
//! DTSTART:20240101T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
//! let cal = Calendar::parse(ics).unwrap();
//! let att = NewAttach {
//!     managed_id: "97S".into(),
//!     fmttype: "text/html".into(),
//!     filename: "agenda.html".into(),
//!     size: 59,
//!     uri: "https://cal.example.com/attach/97S".into(),
//! };
//! let out = edit::add_attach(&cal, None, &att).unwrap();
//! let cal2 = Calendar::parse(&out).unwrap();
//! assert_eq!(cal2.distinct_managed_ids().len(), 1);
//! ```

pub mod edit;
mod error;
mod line;
pub mod param;
mod recur;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

pub use edit::EditError;
pub use line::{ParseError, ParseErrorKind};
pub use param::Param;
pub use recur::{parse_rid_list, Budget, RidError, RidSpec};

use line::{Comp, Kind, Line};

/// Components that carry scheduling data and may hold `ATTACH` properties.
const SCHEDULING: [&str; 3] = ["VEVENT", "VTODO", "VJOURNAL"];

/// A parsed calendar object resource that owns its bytes.
#[derive(Debug, Clone)]
pub struct Calendar {
    bytes: Vec<u8>,
    text: String,
    lines: Vec<Line>,
    comps: Vec<Comp>,
    lf_only: bool,
}

/// The managed attachments of one scheduling component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentAttachments {
    /// `RECURRENCE-ID` value text as stored; `None` for the master.
    pub rid: Option<String>,
    /// `MANAGED-ID` values of the component's own `ATTACH` properties, in order.
    pub managed_ids: Vec<String>,
}

/// An `ATTACH` property whose URI points into the attachment URL space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRef {
    /// `RECURRENCE-ID` value text of the enclosing scheduling component (`None` for
    /// the master). Lines inside sub-components (VALARM) count for their parent.
    pub rid: Option<String>,
    /// Its `MANAGED-ID` parameter, if any (clients may drop parameters).
    pub managed_id: Option<String>,
    /// The property value (the URI).
    pub uri: String,
    /// The path segment right after the prefix (up to `/`, `?` or `#`).
    pub id: String,
    /// Opaque position of the line, stable for this [`Calendar`] only.
    pub line: usize,
}

/// An inline binary `ATTACH` of a scheduling component ([`Calendar::inline_attaches`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineAttach {
    /// Opaque position of the line, stable for this [`Calendar`] only.
    pub line: usize,
    /// `RECURRENCE-ID` value text of its component (`None` for the master).
    pub rid: Option<String>,
    pub fmttype: Option<String>,
    /// `FILENAME`, or an `X-…-FILENAME` parameter.
    pub filename: Option<String>,
    /// The base64 text as written (unfolded).
    pub value: String,
}

/// Parameters of an `ATTACH` property written by this engine (RFC 8607 §3.4 2.C).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttach {
    /// `MANAGED-ID` (RFC 8607 §4.3).
    pub managed_id: String,
    /// `FMTTYPE`: a media type such as `text/html`.
    pub fmttype: String,
    /// `FILENAME` (RFC 8607 §4.2), already sanitised by the caller; any characters,
    /// including `;:,"` and newlines, are encoded safely.
    pub filename: String,
    /// `SIZE` in octets (RFC 8607 §4.1).
    pub size: u64,
    /// The property value: the attachment URI.
    pub uri: String,
}

/// A borrowed view of one content line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PropRef<'a> {
    pub name: &'a str,
    /// Everything between the name and the value separator, e.g. `;TZID=X`.
    pub params: &'a str,
    pub value: &'a str,
}

impl PropRef<'_> {
    pub(crate) fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// First-match lookup of a parameter, values joined with `,`.
    pub(crate) fn param(&self, name: &str) -> Option<String> {
        if self.params.is_empty() {
            return None;
        }
        param::parse_params(self.params)
            .into_iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value())
    }
}

impl Calendar {
    /// Parses a calendar object resource. Never panics; malformed input gives a typed
    /// [`ParseError`] with a line number.
    pub fn parse(bytes: &[u8]) -> Result<Calendar, ParseError> {
        let scan = line::scan(bytes)?;
        Ok(Calendar {
            bytes: bytes.to_vec(),
            text: scan.text,
            lines: scan.lines,
            comps: scan.comps,
            lf_only: scan.lf_only,
        })
    }

    /// The original bytes, exactly as parsed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `UID` of the master (or first scheduling component), value text as stored.
    pub fn uid(&self) -> Option<String> {
        let c = self.master().or_else(|| self.scheduling().next())?;
        self.first_prop(c, "UID").map(|p| p.value.to_string())
    }

    /// `ORGANIZER` value of the master (or first scheduling component).
    pub fn organizer(&self) -> Option<String> {
        let c = self.master().or_else(|| self.scheduling().next())?;
        self.first_prop(c, "ORGANIZER").map(|p| p.value.to_string())
    }

    /// Distinct `ATTENDEE` values over all scheduling components (first-seen order;
    /// `ATTENDEE`s of VALARMs are not attendees of the event).
    pub fn attendees(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for c in self.scheduling() {
            for l in self.direct_props(c) {
                let p = self.prop(l);
                if p.is("ATTENDEE") && seen.insert(p.value) {
                    out.push(p.value.to_string());
                }
            }
        }
        out
    }

    /// Whether the object describes a recurring item: the master has `RRULE` or
    /// `RDATE`, or the object holds overridden instances.
    pub fn is_recurring(&self) -> bool {
        self.override_count() > 0
            || self.master().is_some_and(|m| {
                self.first_prop(m, "RRULE").is_some() || self.first_prop(m, "RDATE").is_some()
            })
    }

    /// Number of scheduling components with a `RECURRENCE-ID`.
    pub fn override_count(&self) -> usize {
        self.scheduling()
            .filter(|&c| self.rid_of(c).is_some())
            .count()
    }

    /// `VEVENT`, `VTODO` or `VJOURNAL`: the kind of the first scheduling component.
    pub fn component_kind(&self) -> Option<&str> {
        self.scheduling()
            .next()
            .map(|c| self.comps[c].name.as_str())
    }

    /// Managed attachment ids per scheduling component, in document order.
    pub fn managed_ids(&self) -> Vec<ComponentAttachments> {
        self.scheduling()
            .map(|c| ComponentAttachments {
                rid: self.rid_of(c).map(str::to_string),
                managed_ids: self
                    .direct_props(c)
                    .filter_map(|l| {
                        let p = self.prop(l);
                        if p.is("ATTACH") {
                            p.param("MANAGED-ID")
                        } else {
                            None
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Distinct managed ids of the whole resource: the number RFC 8607 §6.3 limits.
    pub fn distinct_managed_ids(&self) -> BTreeSet<String> {
        self.managed_ids()
            .into_iter()
            .flat_map(|c| c.managed_ids)
            .collect()
    }

    /// Every `ATTACH` (in any component, managed or not) whose URI starts with
    /// `url_prefix`. References are URIs: clients may rewrite an event and drop the
    /// parameters, so the URI alone identifies an attachment.
    pub fn attach_refs(&self, url_prefix: &str) -> Vec<AttachRef> {
        let mut out = Vec::new();
        for c in self.scheduling() {
            let comp = &self.comps[c];
            let rid = self.rid_of(c);
            for i in comp.begin + 1..comp.end {
                if self.lines[i].kind != Kind::Prop {
                    continue;
                }
                let p = self.prop(i);
                if !p.is("ATTACH") {
                    continue;
                }
                let Some(rest) = p.value.strip_prefix(url_prefix) else {
                    continue;
                };
                let id_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                out.push(AttachRef {
                    rid: rid.map(str::to_string),
                    managed_id: p.param("MANAGED-ID"),
                    uri: p.value.to_string(),
                    id: rest[..id_end].to_string(),
                    line: i,
                });
            }
        }
        out
    }

    /// Every `ATTACH` line of a scheduling component (sub-components included) that
    /// carries a `MANAGED-ID`: (line, managed id, value).
    pub(crate) fn managed_attach_lines(&self) -> Vec<(usize, String, String)> {
        let mut out = Vec::new();
        for c in self.scheduling() {
            let comp = &self.comps[c];
            for i in comp.begin + 1..comp.end {
                if self.lines[i].kind != Kind::Prop {
                    continue;
                }
                let p = self.prop(i);
                if !p.is("ATTACH") {
                    continue;
                }
                if let Some(id) = p.param("MANAGED-ID") {
                    out.push((i, id, p.value.to_string()));
                }
            }
        }
        out
    }

    /// Every inline binary `ATTACH` (`VALUE=BINARY;ENCODING=BASE64`, RFC 5545 §3.8.1.1)
    /// directly in a scheduling component, in document order.
    pub fn inline_attaches(&self) -> Vec<InlineAttach> {
        let mut out = Vec::new();
        for c in self.scheduling() {
            for l in self.direct_props(c) {
                let p = self.prop(l);
                if !p.is("ATTACH") {
                    continue;
                }
                let params = param::parse_params(p.params);
                let get = |n: &str| {
                    params
                        .iter()
                        .find(|x| x.name.eq_ignore_ascii_case(n))
                        .map(param::Param::value)
                };
                let binary = get("VALUE").is_some_and(|v| v.eq_ignore_ascii_case("BINARY"))
                    && get("ENCODING").is_some_and(|v| v.eq_ignore_ascii_case("BASE64"));
                if !binary {
                    continue;
                }
                // FILENAME (RFC 8607 §4.2), else the X-…-FILENAME parameters clients
                // use for inline values (X-FILENAME, X-LIC-FILENAME, X-APPLE-FILENAME).
                let filename = get("FILENAME").or_else(|| {
                    params
                        .iter()
                        .find(|x| x.name.to_ascii_uppercase().ends_with("-FILENAME"))
                        .map(param::Param::value)
                });
                out.push(InlineAttach {
                    line: l,
                    rid: self.rid_of(c).map(str::to_string),
                    fmttype: get("FMTTYPE"),
                    filename,
                    value: p.value.to_string(),
                });
            }
        }
        out
    }

    // ---- internal access used by edit and recur ----

    /// Line ending for lines this engine writes.
    pub(crate) fn eol(&self) -> &'static str {
        if self.lf_only {
            "\n"
        } else {
            "\r\n"
        }
    }

    pub(crate) fn raw(&self, line: usize) -> &[u8] {
        let (a, b) = self.lines[line].raw;
        &self.bytes[a..b]
    }

    pub(crate) fn line_count(&self) -> usize {
        self.lines.len()
    }

    pub(crate) fn line_kind(&self, line: usize) -> Kind {
        self.lines[line].kind
    }

    pub(crate) fn line_jump(&self, line: usize) -> usize {
        self.lines[line].jump
    }

    pub(crate) fn comp(&self, c: usize) -> &Comp {
        &self.comps[c]
    }

    /// A view of content line `line` (name, raw parameter section, value).
    pub(crate) fn prop(&self, line: usize) -> PropRef<'_> {
        let l = &self.lines[line];
        let t = &self.text[l.text.0..l.text.1];
        if l.kind == Kind::Blank {
            return PropRef {
                name: "",
                params: "",
                value: "",
            };
        }
        PropRef {
            name: &t[..l.name_len],
            params: &t[l.name_len..l.value_start - 1],
            value: &t[l.value_start..],
        }
    }

    /// Scheduling components (direct children of VCALENDAR), in document order.
    pub(crate) fn scheduling(&self) -> impl Iterator<Item = usize> + '_ {
        self.comps
            .iter()
            .enumerate()
            .filter(|(_, c)| c.parent == Some(0) && SCHEDULING.contains(&c.name.as_str()))
            .map(|(i, _)| i)
    }

    /// The first scheduling component without `RECURRENCE-ID`.
    pub(crate) fn master(&self) -> Option<usize> {
        self.scheduling().find(|&c| self.rid_of(c).is_none())
    }

    /// `RECURRENCE-ID` value text of component `c`.
    pub(crate) fn rid_of(&self, c: usize) -> Option<&str> {
        self.first_prop(c, "RECURRENCE-ID").map(|p| p.value)
    }

    pub(crate) fn first_prop(&self, c: usize, name: &str) -> Option<PropRef<'_>> {
        self.direct_props(c)
            .map(|l| self.prop(l))
            .find(|p| p.is(name))
    }

    /// Line indices of the content lines that belong directly to component `c`
    /// (not to its sub-components).
    pub(crate) fn direct_props(&self, c: usize) -> impl Iterator<Item = usize> + '_ {
        let comp = &self.comps[c];
        let mut i = comp.begin + 1;
        let end = comp.end;
        std::iter::from_fn(move || {
            while i < end {
                let cur = i;
                match self.lines[cur].kind {
                    Kind::Begin => i = self.lines[cur].jump + 1,
                    Kind::Prop => {
                        i += 1;
                        return Some(cur);
                    }
                    Kind::Blank | Kind::End => i += 1,
                }
            }
            None
        })
    }

    /// Where a new property goes in component `c`: before its first sub-component,
    /// or before its END (RFC 5545 puts properties before sub-components).
    pub(crate) fn property_insert_point(&self, c: usize) -> usize {
        let comp = &self.comps[c];
        (comp.begin + 1..comp.end)
            .find(|&i| self.lines[i].kind == Kind::Begin)
            .unwrap_or(comp.end)
    }

    /// Properties of the VTIMEZONE whose TZID is `tzid`.
    pub(crate) fn vtimezone(&self, tzid: &str) -> Option<usize> {
        self.comps.iter().enumerate().find_map(|(i, c)| {
            (c.parent == Some(0)
                && c.name == "VTIMEZONE"
                && self.first_prop(i, "TZID").is_some_and(|p| p.value == tzid))
            .then_some(i)
        })
    }

    /// All `TZOFFSETTO` values (in seconds) of the observances of a VTIMEZONE.
    pub(crate) fn vtimezone_offsets(&self, vtz: usize) -> Vec<i32> {
        self.comps
            .iter()
            .enumerate()
            .filter(|(_, c)| c.parent == Some(vtz))
            .filter_map(|(i, _)| self.first_prop(i, "TZOFFSETTO"))
            .filter_map(|p| recur::parse_utc_offset(p.value))
            .collect()
    }
}
