//! Managed-attachment edits (RFC 8607 §3.4 add, §3.5 update, §3.6 remove, §3.7
//! parameter restoration). Each edit returns the new bytes of the whole object:
//! every line it does not target is copied byte for byte and stays in order; new
//! and replaced lines are written canonically (see [`super::param::write_line`]).
//!
//! Target selection follows RFC 8607 §3.3.2 (see `recur`): no `rid` = the master and
//! every existing override; `M` = the master; an instance rid without override
//! creates one — a copy of the master without RRULE/RDATE/EXDATE/EXRULE, with
//! `RECURRENCE-ID` in the master's DTSTART form (and TZID), `DTSTART` at the
//! instance, `DTEND`/`DUE` moved by the same wall-clock amount (`DURATION` kept) —
//! inserted after the last component of that UID.

use std::collections::BTreeSet;

use chrono::NaiveDateTime;

pub use super::error::EditError;
use super::param::{self, Param};
use super::recur::{resolve_targets, Budget, DtForm, DtValue, MasterTime, Target};
use super::{Calendar, Kind, NewAttach, RidSpec};

/// Parameters an engine-written ATTACH sets itself; other parameters of a replaced
/// line (X- parameters of clients) are carried over.
const OWN_PARAMS: [&str; 6] = [
    "MANAGED-ID",
    "FMTTYPE",
    "FILENAME",
    "SIZE",
    "VALUE",
    "ENCODING",
];

/// Adds `ATTACH;MANAGED-ID=…;FMTTYPE=…;FILENAME=…;SIZE=…:<uri>` to the targeted
/// components (RFC 8607 §3.4 2.C), creating overrides for instance rids that have none.
///
/// ```
/// use calattach::ical::{edit, parse_rid_list, Calendar, NewAttach};
/// let ics = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:u\r\n\
///            DTSTART;TZID=Europe/Berlin:20240321T090000\r\n\
///            RRULE:FREQ=WEEKLY;COUNT=6\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
/// let cal = Calendar::parse(ics.as_bytes()).unwrap();
/// let a = NewAttach { managed_id: "m1".into(), fmttype: "text/plain".into(),
///     filename: "a.txt".into(), size: 3, uri: "https://x/a/1".into() };
/// let rids = parse_rid_list("20240404T090000").unwrap();
/// let out = edit::add_attach(&cal, Some(&rids), &a).unwrap();
/// let s = String::from_utf8(out).unwrap();
/// assert!(s.contains("RECURRENCE-ID;TZID=Europe/Berlin:20240404T090000\r\n"));
/// assert!(s.starts_with(ics.trim_end_matches("END:VCALENDAR\r\n")));
/// ```
pub fn add_attach(
    cal: &Calendar,
    rids: Option<&[RidSpec]>,
    a: &NewAttach,
) -> Result<Vec<u8>, EditError> {
    add_attach_within(cal, rids, a, &mut Budget::default())
}

/// [`add_attach`], checking the rids within `budget` (RFC 8607 §7).
pub fn add_attach_within(
    cal: &Calendar,
    rids: Option<&[RidSpec]>,
    a: &NewAttach,
    budget: &mut Budget,
) -> Result<Vec<u8>, EditError> {
    let targets = resolve_targets(cal, rids, budget)?;
    let line = attach_line(a, None, &[], cal.eol())?;
    let mut patch = Patch::new(cal);
    let mut created = Vec::new();
    for t in targets {
        match t {
            Target::Existing(c) => patch.insert(cal.property_insert_point(c), line.clone()),
            Target::New(at) => created.extend(synth_override(cal, at, None, Some(&line))?),
        }
    }
    patch.insert_overrides(created);
    Ok(patch.render())
}

/// Replaces every `ATTACH` whose `MANAGED-ID` is `old_managed_id`, in all
/// components (RFC 8607 §3.5: update takes no rid), keeping other parameters of the
/// old line. Error if no component has it.
pub fn update_attach(
    cal: &Calendar,
    old_managed_id: &str,
    a: &NewAttach,
) -> Result<Vec<u8>, EditError> {
    let mut patch = Patch::new(cal);
    let mut found = false;
    for c in cal.scheduling() {
        for l in managed_lines(cal, c, old_managed_id) {
            let extra = param::parse_params(cal.prop(l).params);
            patch.replace(l, attach_line(a, None, &extra, cal.eol())?);
            found = true;
        }
    }
    if !found {
        return Err(EditError::UnknownManagedId(old_managed_id.to_string()));
    }
    Ok(patch.render())
}

/// Removes the `ATTACH` whose `MANAGED-ID` is `managed_id` from the targeted
/// components (RFC 8607 §3.6). Without rid it must be in at least one component;
/// with rids it must be in every targeted component, and for an instance without
/// override in the master (the override is then created without it).
pub fn remove_attach(
    cal: &Calendar,
    rids: Option<&[RidSpec]>,
    managed_id: &str,
) -> Result<Vec<u8>, EditError> {
    remove_attach_within(cal, rids, managed_id, &mut Budget::default())
}

/// [`remove_attach`], checking the rids within `budget` (RFC 8607 §7).
pub fn remove_attach_within(
    cal: &Calendar,
    rids: Option<&[RidSpec]>,
    managed_id: &str,
    budget: &mut Budget,
) -> Result<Vec<u8>, EditError> {
    let unknown = || EditError::UnknownManagedId(managed_id.to_string());
    let targets = resolve_targets(cal, rids, budget)?;
    let mut patch = Patch::new(cal);
    let mut created = Vec::new();
    let mut found = false;
    for t in targets {
        match t {
            Target::Existing(c) => {
                let lines = managed_lines(cal, c, managed_id);
                if lines.is_empty() && rids.is_some() {
                    return Err(unknown());
                }
                for l in lines {
                    patch.delete(l);
                    found = true;
                }
            }
            Target::New(at) => {
                let master = cal.master().ok_or_else(unknown)?;
                if managed_lines(cal, master, managed_id).is_empty() {
                    return Err(unknown());
                }
                created.extend(synth_override(cal, at, Some(managed_id), None)?);
                found = true;
            }
        }
    }
    if !found {
        return Err(unknown());
    }
    patch.insert_overrides(created);
    Ok(patch.render())
}

/// Restores parameters on every `ATTACH` whose URI starts with `url_prefix`
/// (RFC 8607 §3.7: clients may drop parameters or send a wrong `SIZE`).
/// `params_for` receives the path segment after the prefix and returns the
/// parameters to set (such a line keeps its own URI). An `ATTACH` whose URI is
/// elsewhere but whose `MANAGED-ID` names an id `params_for` knows gets that id's
/// parameters and its `uri` (when not empty). Lines that already carry exactly those
/// values are left alone. `Ok(None)` = nothing changed.
pub fn restore_params(
    cal: &Calendar,
    url_prefix: &str,
    params_for: impl Fn(&str) -> Option<NewAttach>,
) -> Result<Option<Vec<u8>>, EditError> {
    let mut patch = Patch::new(cal);
    for r in cal.attach_refs(url_prefix) {
        let Some(want) = params_for(&r.id) else {
            continue;
        };
        let p = cal.prop(r.line);
        let have = param::parse_params(p.params);
        let get = |n: &str| {
            have.iter()
                .find(|x| x.name.eq_ignore_ascii_case(n))
                .map(Param::value)
        };
        let filename_ok = if want.filename.is_empty() {
            get("FILENAME").is_none()
        } else {
            get("FILENAME").as_deref() == Some(want.filename.as_str())
        };
        if get("MANAGED-ID").as_deref() == Some(want.managed_id.as_str())
            && get("FMTTYPE").as_deref() == Some(want.fmttype.as_str())
            && get("SIZE").as_deref() == Some(want.size.to_string().as_str())
            && filename_ok
        {
            continue;
        }
        patch.replace(r.line, attach_line(&want, Some(p.value), &have, cal.eol())?);
    }
    // A line naming an issued id by MANAGED-ID alone gets the issued URI back: a client
    // cannot point a managed ATTACH elsewhere (RFC 8607 §3.7, §4.3).
    let by_uri: BTreeSet<usize> = cal.attach_refs(url_prefix).iter().map(|r| r.line).collect();
    for (line, id, value) in cal.managed_attach_lines() {
        if by_uri.contains(&line) {
            continue;
        }
        let Some(want) = params_for(&id) else {
            continue;
        };
        if want.uri.is_empty() || value == want.uri {
            continue;
        }
        let have = param::parse_params(cal.prop(line).params);
        patch.replace(line, attach_line(&want, None, &have, cal.eol())?);
    }
    Ok((!patch.ops.is_empty()).then(|| patch.render()))
}

/// Replaces inline binary `ATTACH` lines ([`Calendar::inline_attaches`]) by managed
/// ones: each `(line, attach)` gets `attach`'s URI and parameters; the line's other
/// parameters are kept, except `VALUE`, `ENCODING` and `X-…-FILENAME`, which described
/// the inline value. Every other byte stays as it was.
pub fn replace_inline(cal: &Calendar, lines: &[(usize, NewAttach)]) -> Result<Vec<u8>, EditError> {
    let mut patch = Patch::new(cal);
    for (line, a) in lines {
        let keep: Vec<Param> = param::parse_params(cal.prop(*line).params)
            .into_iter()
            .filter(|p| !p.name.to_ascii_uppercase().ends_with("-FILENAME"))
            .collect();
        patch.replace(*line, attach_line(a, None, &keep, cal.eol())?);
    }
    Ok(patch.render())
}

/// Direct `ATTACH` lines of component `c` with `MANAGED-ID` = `id`.
fn managed_lines(cal: &Calendar, c: usize, id: &str) -> Vec<usize> {
    cal.direct_props(c)
        .filter(|&l| {
            let p = cal.prop(l);
            p.is("ATTACH") && p.param("MANAGED-ID").as_deref() == Some(id)
        })
        .collect()
}

/// The canonical ATTACH line; `uri` overrides `a.uri`; `keep` are the parameters of
/// a replaced line, of which those not set here are carried over.
fn attach_line(
    a: &NewAttach,
    uri: Option<&str>,
    keep: &[Param],
    eol: &str,
) -> Result<Vec<u8>, EditError> {
    let uri = uri.unwrap_or(&a.uri);
    if uri.is_empty() || uri.chars().any(char::is_control) {
        return Err(EditError::InvalidValue(format!("uri {uri:?}")));
    }
    if a.managed_id.is_empty() {
        return Err(EditError::InvalidValue("empty managed-id".into()));
    }
    let one = |n: &str, v: String| Param {
        name: n.to_string(),
        values: vec![v],
    };
    let mut params = vec![
        one("MANAGED-ID", a.managed_id.clone()),
        one("FMTTYPE", a.fmttype.clone()),
        one("SIZE", a.size.to_string()),
    ];
    if !a.filename.is_empty() {
        params.push(one("FILENAME", a.filename.clone()));
    }
    params.extend(
        keep.iter()
            .filter(|p| !OWN_PARAMS.iter().any(|o| p.name.eq_ignore_ascii_case(o)))
            .cloned(),
    );
    Ok(param::write_line("ATTACH", &params, uri, eol))
}

/// Builds a new override for the master instance at `at` (master wall-clock time).
fn synth_override(
    cal: &Calendar,
    at: NaiveDateTime,
    drop_managed: Option<&str>,
    add: Option<&[u8]>,
) -> Result<Vec<u8>, EditError> {
    let master = cal.master().ok_or(EditError::NoComponent)?;
    let mt = MasterTime::of(cal, master).ok_or(EditError::NoComponent)?;
    let eol = cal.eol();
    let delta = at - mt.start;
    let comp = cal.comp(master).clone();
    let insert_at = cal.property_insert_point(master);
    let has_uid = cal.first_prop(master, "UID").is_some();
    let rid_line = param::fold(
        &format!("RECURRENCE-ID{}:{}", mt.params, mt.render(at)),
        eol,
    );
    let mut out = Vec::new();
    let mut rid_written = false;
    let mut i = comp.begin;
    while i <= comp.end {
        if i == insert_at {
            if let Some(add) = add {
                out.extend_from_slice(add);
            }
        }
        match cal.line_kind(i) {
            Kind::Begin if i != comp.begin => {
                let end = cal.line_jump(i);
                for j in i..=end {
                    out.extend_from_slice(cal.raw(j));
                }
                i = end + 1;
                continue;
            }
            Kind::Prop => {
                let p = cal.prop(i);
                let skip = ["RRULE", "RDATE", "EXDATE", "EXRULE", "RECURRENCE-ID"]
                    .iter()
                    .any(|n| p.is(n))
                    || (p.is("ATTACH")
                        && drop_managed.is_some()
                        && p.param("MANAGED-ID").as_deref() == drop_managed);
                if skip {
                } else if p.is("DTSTART") {
                    out.extend(param::fold(
                        &format!("{}{}:{}", p.name, mt.params, mt.render(at)),
                        eol,
                    ));
                } else if p.is("DTEND") || p.is("DUE") {
                    match shifted(p.value, p.param("VALUE").as_deref(), delta) {
                        Some(v) => {
                            out.extend(param::fold(&format!("{}{}:{}", p.name, p.params, v), eol))
                        }
                        None => out.extend_from_slice(cal.raw(i)),
                    }
                } else {
                    out.extend_from_slice(cal.raw(i));
                }
                if !rid_written && p.is("UID") {
                    out.extend_from_slice(&rid_line);
                    rid_written = true;
                }
            }
            _ => {
                out.extend_from_slice(cal.raw(i));
                if i == comp.begin && !has_uid {
                    out.extend_from_slice(&rid_line);
                    rid_written = true;
                }
            }
        }
        i += 1;
    }
    Ok(out)
}

/// A DATE / DATE-TIME value moved by `delta`, rendered in its own form.
fn shifted(value: &str, value_param: Option<&str>, delta: chrono::Duration) -> Option<String> {
    let mut v = DtValue::parse(value)?;
    if value_param.is_some_and(|x| x.eq_ignore_ascii_case("DATE")) {
        v.form = DtForm::Date;
    }
    Some(DtValue::render(v.form, v.naive.checked_add_signed(delta)?))
}

/// Line-level edit script over a [`Calendar`]; rendering copies every untouched raw
/// span in order.
pub(super) struct Patch<'c> {
    cal: &'c Calendar,
    /// (line, op); inserts go before the line, and sort before a replace/delete of it.
    ops: Vec<(usize, Op)>,
}

enum Op {
    Insert(Vec<u8>),
    Replace(Vec<u8>),
    Delete,
}

impl<'c> Patch<'c> {
    pub(super) fn new(cal: &'c Calendar) -> Self {
        Patch {
            cal,
            ops: Vec::new(),
        }
    }

    fn insert(&mut self, before: usize, bytes: Vec<u8>) {
        self.ops.push((before, Op::Insert(bytes)));
    }

    fn replace(&mut self, line: usize, bytes: Vec<u8>) {
        self.ops.push((line, Op::Replace(bytes)));
    }

    fn delete(&mut self, line: usize) {
        self.ops.push((line, Op::Delete));
    }

    /// New overrides go after the last scheduling component with the master's UID.
    fn insert_overrides(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let cal = self.cal;
        let uid = cal.uid();
        let last = cal
            .scheduling()
            .filter(|&c| cal.first_prop(c, "UID").map(|p| p.value.to_string()) == uid)
            .last()
            .or_else(|| cal.master());
        // The VCALENDAR END line is the fallback insert point.
        let at = last.map_or(cal.comp(0).end, |c| cal.comp(c).end + 1);
        self.insert(at, bytes);
    }

    pub(super) fn render(mut self) -> Vec<u8> {
        let cal = self.cal;
        let bytes = cal.as_bytes();
        self.ops
            .sort_by_key(|(l, op)| (*l, !matches!(op, Op::Insert(_))));
        let extra: usize = self
            .ops
            .iter()
            .map(|(_, op)| match op {
                Op::Insert(b) | Op::Replace(b) => b.len(),
                Op::Delete => 0,
            })
            .sum();
        let mut out = Vec::with_capacity(bytes.len() + extra);
        let mut pos = 0;
        for (line, op) in self.ops {
            let (start, end) = if line < cal.line_count() {
                cal.lines[line].raw
            } else {
                (bytes.len(), bytes.len())
            };
            if start > pos {
                out.extend_from_slice(&bytes[pos..start]);
                pos = start;
            }
            match op {
                Op::Insert(b) => out.extend_from_slice(&b),
                Op::Replace(b) => {
                    out.extend_from_slice(&b);
                    pos = end;
                }
                Op::Delete => pos = end,
            }
        }
        out.extend_from_slice(&bytes[pos..]);
        out
    }
}
