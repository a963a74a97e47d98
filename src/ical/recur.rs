//! Recurrence instances and `rid` targeting (RFC 8607 §3.3.2, RFC 5545 §3.8.5).
//!
//! A `rid` item is `M` (any case: the master) or a `RECURRENCE-ID` value text *as
//! stored* (`20111022T160000` for `RECURRENCE-ID;TZID=America/Montreal:20111022T160000`).
//! It is matched literally against the overrides' `RECURRENCE-ID` values and against
//! the instances of the master's recurrence set rendered in the master's `DTSTART`
//! form.
//!
//! Expansion runs in wall-clock ("floating") time: RFC 5545 expands a rule in the
//! local time of `DTSTART`, so for a local-form rid no time-zone data is needed, and
//! custom or Windows TZIDs work as well as IANA ones. Zone data (chrono-tz, also via
//! a `/`-prefixed path suffix or the VTIMEZONE's `X-LIC-LOCATION`) is used only to
//! bring UTC or differently-zoned values (`UNTIL`, `EXDATE`, `RDATE`, other
//! overrides' `RECURRENCE-ID`s) into the master's local time.
//!
//! Documented leniencies:
//! - a UTC rid (`...Z`) on a master with a resolvable TZID is accepted when it is the
//!   UTC time of an instance (the override is still written in local form);
//! - a rid that denotes the same instant as an existing override's `RECURRENCE-ID`
//!   in another form targets that override instead of creating a duplicate;
//! - for a TZID unknown to the tz database, a UTC `UNTIL` is converted with the
//!   largest `TZOFFSETTO` of the matching VTIMEZONE (or +14:00 without one), so the
//!   check may accept an instance up to a few hours past `UNTIL` but never rejects a
//!   real one.
//!
//! Work is bounded (RFC 8607 §7): expansion stops at the target and after
//! [`MAX_INSTANCES`] generated instances.

use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

use super::edit::EditError;
use super::Calendar;

/// Upper bound on the instances generated while checking one rid.
pub const MAX_INSTANCES: usize = 100_000;

/// One item of the `rid` query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RidSpec {
    /// `M`: the component without `RECURRENCE-ID`.
    Master,
    /// A `RECURRENCE-ID` value text as stored (date or date-time, optional `Z`).
    Instance(String),
}

/// Why a `rid` query parameter is malformed (maps to `CALDAV:valid-rid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RidError {
    /// The parameter or one of its comma-separated items is empty.
    #[error("empty rid item")]
    Empty,
    /// An item occurs twice (`M` included, RFC 8607 §3.3.2).
    #[error("rid {0} occurs more than once")]
    Duplicate(String),
    /// An item is neither `M` nor a DATE / DATE-TIME value.
    #[error("rid {0} is not a date or date-time")]
    Syntax(String),
}

/// Parses a `rid` query parameter value (already percent-decoded): a comma list of
/// `M` (any case) and `RECURRENCE-ID` value texts; duplicates are an error.
///
/// ```
/// use calattach::ical::{parse_rid_list, RidSpec};
/// assert_eq!(
///     parse_rid_list("m,20111022T160000").unwrap(),
///     vec![RidSpec::Master, RidSpec::Instance("20111022T160000".into())]
/// );
/// assert!(parse_rid_list("M,M").is_err());
/// ```
pub fn parse_rid_list(s: &str) -> Result<Vec<RidSpec>, RidError> {
    let mut out: Vec<RidSpec> = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(RidError::Empty);
        }
        let spec = if item.eq_ignore_ascii_case("M") {
            RidSpec::Master
        } else if DtValue::parse(item).is_some() {
            RidSpec::Instance(item.to_string())
        } else {
            return Err(RidError::Syntax(item.to_string()));
        };
        if out.contains(&spec) {
            return Err(RidError::Duplicate(item.to_string()));
        }
        out.push(spec);
    }
    Ok(out)
}

/// The three shapes of a DATE / DATE-TIME value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DtForm {
    Date,
    /// Floating or local time of a TZID.
    Local,
    Utc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DtValue {
    pub form: DtForm,
    pub naive: NaiveDateTime,
}

impl DtValue {
    /// Parses `YYYYMMDD`, `YYYYMMDDTHHMMSS` or `YYYYMMDDTHHMMSSZ`.
    pub(crate) fn parse(s: &str) -> Option<DtValue> {
        let s = s.trim();
        let b = s.as_bytes();
        if !b.iter().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        let date = |d: &str| NaiveDate::parse_from_str(d, "%Y%m%d").ok();
        match b.len() {
            8 => Some(DtValue {
                form: DtForm::Date,
                naive: date(s)?.and_time(NaiveTime::MIN),
            }),
            15 | 16 => {
                if b[8] != b'T' {
                    return None;
                }
                let utc = b.len() == 16;
                if utc && b[15] != b'Z' {
                    return None;
                }
                let t = NaiveTime::parse_from_str(&s[9..15], "%H%M%S").ok()?;
                Some(DtValue {
                    form: if utc { DtForm::Utc } else { DtForm::Local },
                    naive: date(&s[..8])?.and_time(t),
                })
            }
            _ => None,
        }
    }

    pub(crate) fn render(form: DtForm, naive: NaiveDateTime) -> String {
        match form {
            DtForm::Date => naive.format("%Y%m%d").to_string(),
            DtForm::Local => naive.format("%Y%m%dT%H%M%S").to_string(),
            DtForm::Utc => naive.format("%Y%m%dT%H%M%SZ").to_string(),
        }
    }
}

/// Parses a UTC offset such as `+0200`, `-0430` or `+053000` into seconds.
pub(crate) fn parse_utc_offset(s: &str) -> Option<i32> {
    let s = s.trim();
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    if !(rest.len() == 4 || rest.len() == 6) || !rest.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i32 = rest[0..2].parse().ok()?;
    let m: i32 = rest[2..4].parse().ok()?;
    let sec: i32 = if rest.len() == 6 {
        rest[4..6].parse().ok()?
    } else {
        0
    };
    Some(sign * (h * 3600 + m * 60 + sec))
}

/// Resolves a TZID to a tz-database zone: directly, by a path suffix
/// (`/mozilla.org/20050126_1/Europe/Berlin`), or by the VTIMEZONE's X-LIC-LOCATION.
pub(crate) fn resolve_tz(cal: &Calendar, tzid: &str) -> Option<chrono_tz::Tz> {
    if let Ok(tz) = chrono_tz::Tz::from_str(tzid) {
        return Some(tz);
    }
    for (i, _) in tzid.match_indices('/') {
        if let Ok(tz) = chrono_tz::Tz::from_str(&tzid[i + 1..]) {
            return Some(tz);
        }
    }
    let vtz = cal.vtimezone(tzid)?;
    let loc = cal.first_prop(vtz, "X-LIC-LOCATION")?;
    chrono_tz::Tz::from_str(loc.value.trim()).ok()
}

/// The master's `DTSTART`: its form, zone and raw parameter section.
#[derive(Debug, Clone)]
pub(crate) struct MasterTime {
    pub form: DtForm,
    pub tzid: Option<String>,
    pub tz: Option<chrono_tz::Tz>,
    pub start: NaiveDateTime,
    /// Raw parameter section of the DTSTART line (e.g. `;TZID=Europe/Berlin`).
    pub params: String,
    /// Largest TZOFFSETTO of the matching VTIMEZONE, used when `tz` is unknown.
    pub max_offset: Option<i32>,
}

impl MasterTime {
    pub(crate) fn of(cal: &Calendar, master: usize) -> Option<MasterTime> {
        let p = cal.first_prop(master, "DTSTART")?;
        let mut v = DtValue::parse(p.value)?;
        if p.param("VALUE")
            .is_some_and(|x| x.eq_ignore_ascii_case("DATE"))
        {
            v.form = DtForm::Date;
            v.naive = v.naive.date().and_time(NaiveTime::MIN);
        }
        let tzid = match v.form {
            DtForm::Local => p.param("TZID"),
            _ => None,
        };
        let tz = tzid.as_deref().and_then(|t| resolve_tz(cal, t));
        let max_offset = tzid
            .as_deref()
            .and_then(|t| cal.vtimezone(t))
            .and_then(|vtz| cal.vtimezone_offsets(vtz).into_iter().max());
        Some(MasterTime {
            form: v.form,
            tzid,
            tz,
            start: v.naive,
            params: p.params.to_string(),
            max_offset,
        })
    }

    pub(crate) fn render(&self, naive: NaiveDateTime) -> String {
        DtValue::render(self.form, naive)
    }

    /// Brings a value (with the TZID of its own property, if any) into the master's
    /// wall-clock time; `None` when that needs zone data we do not have.
    pub(crate) fn to_local(
        &self,
        cal: &Calendar,
        v: DtValue,
        tzid: Option<&str>,
    ) -> Option<NaiveDateTime> {
        match (self.form, v.form) {
            (DtForm::Date, _) => Some(v.naive.date().and_time(NaiveTime::MIN)),
            (_, DtForm::Date) => None,
            (DtForm::Local, DtForm::Local) => match (tzid, self.tzid.as_deref()) {
                (None, _) => Some(v.naive),
                (Some(a), Some(b)) if a == b => Some(v.naive),
                (Some(a), _) => {
                    let utc = resolve_tz(cal, a)?
                        .from_local_datetime(&v.naive)
                        .earliest()?
                        .naive_utc();
                    Some(self.tz?.from_utc_datetime(&utc).naive_local())
                }
            },
            (DtForm::Local, DtForm::Utc) => {
                Some(self.tz?.from_utc_datetime(&v.naive).naive_local())
            }
            (DtForm::Utc, DtForm::Utc) => Some(v.naive),
            (DtForm::Utc, DtForm::Local) => Some(
                resolve_tz(cal, tzid?)?
                    .from_local_datetime(&v.naive)
                    .earliest()?
                    .naive_utc(),
            ),
        }
    }

    /// `UNTIL` in the master's wall-clock time, erring on the late side when the
    /// zone is unknown (see the module docs).
    fn until_local(&self, v: DtValue) -> NaiveDateTime {
        let end_of_day = |d: NaiveDateTime| d.date().and_hms_opt(23, 59, 59).unwrap_or(d);
        match (self.form, v.form) {
            (_, DtForm::Date) => end_of_day(v.naive),
            (DtForm::Local, DtForm::Utc) if self.tzid.is_some() => match self.tz {
                Some(tz) => tz.from_utc_datetime(&v.naive).naive_local(),
                None => {
                    let off = self.max_offset.unwrap_or(14 * 3600);
                    v.naive + chrono::Duration::seconds(i64::from(off))
                }
            },
            _ => v.naive,
        }
    }
}

/// The recurrence set of a master, ready for membership tests.
pub(crate) struct Recurrence {
    start: NaiveDateTime,
    rrules: Vec<rrule::RRuleSet>,
    exrules: Vec<rrule::RRuleSet>,
    rdates: Vec<NaiveDateTime>,
    exdates: Vec<NaiveDateTime>,
}

fn invalid(rid: &str, reason: impl Into<String>) -> EditError {
    EditError::InvalidRid {
        rid: rid.to_string(),
        reason: reason.into(),
    }
}

impl Recurrence {
    /// Collects RRULE / EXRULE / RDATE / EXDATE of `master`; `None` when it has
    /// neither RRULE nor RDATE (not recurring).
    pub(crate) fn of(
        cal: &Calendar,
        master: usize,
        mt: &MasterTime,
        rid: &str,
    ) -> Result<Option<Recurrence>, EditError> {
        let mut r = Recurrence {
            start: mt.start,
            rrules: Vec::new(),
            exrules: Vec::new(),
            rdates: Vec::new(),
            exdates: Vec::new(),
        };
        let mut recurring = false;
        for l in cal.direct_props(master) {
            let p = cal.prop(l);
            if p.is("RRULE") || p.is("EXRULE") {
                let is_rrule = p.is("RRULE");
                recurring |= is_rrule;
                if let Some(set) = build_rule(p.value, mt).map_err(|e| invalid(rid, e))? {
                    if is_rrule {
                        r.rrules.push(set);
                    } else {
                        r.exrules.push(set);
                    }
                }
            } else if p.is("RDATE") || p.is("EXDATE") {
                let is_rdate = p.is("RDATE");
                recurring |= is_rdate;
                let tzid = p.param("TZID");
                let date_valued = p
                    .param("VALUE")
                    .is_some_and(|x| x.eq_ignore_ascii_case("DATE"));
                for item in p.value.split(',') {
                    // PERIOD values (start/end or start/duration): the start is the instance.
                    let start = item.split('/').next().unwrap_or(item);
                    let Some(mut v) = DtValue::parse(start) else {
                        continue;
                    };
                    if date_valued {
                        v.form = DtForm::Date;
                    }
                    if let Some(n) = mt.to_local(cal, v, tzid.as_deref()) {
                        if is_rdate {
                            r.rdates.push(n);
                        } else {
                            r.exdates.push(n);
                        }
                    }
                }
            }
        }
        Ok(recurring.then_some(r))
    }

    /// Whether `t` (master wall-clock time) is an instance of the set.
    pub(crate) fn contains(&self, t: NaiveDateTime, rid: &str) -> Result<bool, EditError> {
        if self.exdates.contains(&t) {
            return Ok(false);
        }
        for set in &self.exrules {
            if generates(set, t, rid)? {
                return Ok(false);
            }
        }
        if t == self.start || self.rdates.contains(&t) {
            return Ok(true);
        }
        for set in &self.rrules {
            if generates(set, t, rid)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Builds one rule in floating time (wall clock stored as UTC for the `rrule` crate).
/// `Ok(None)` means the rule generates nothing (UNTIL before DTSTART).
fn build_rule(value: &str, mt: &MasterTime) -> Result<Option<rrule::RRuleSet>, String> {
    let mut until = None;
    let mut rest: Vec<&str> = Vec::new();
    for part in value.split(';') {
        match part.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("UNTIL") => {
                let u = DtValue::parse(v).ok_or_else(|| format!("bad UNTIL {v}"))?;
                until = Some(mt.until_local(u));
            }
            _ if part.trim().is_empty() => {}
            _ => rest.push(part),
        }
    }
    let mut rule = rrule::RRule::<rrule::Unvalidated>::from_str(&rest.join(";"))
        .map_err(|e| format!("unsupported recurrence rule: {e}"))?;
    if let Some(u) = until {
        if u < mt.start {
            return Ok(None);
        }
        rule = rule.until(rrule::Tz::UTC.from_utc_datetime(&u));
    }
    let start = rrule::Tz::UTC.from_utc_datetime(&mt.start);
    rule.build(start)
        .map(|s| Some(s.limit()))
        .map_err(|e| format!("unsupported recurrence rule: {e}"))
}

/// Iterates `set` up to `t`; bounded by [`MAX_INSTANCES`].
fn generates(set: &rrule::RRuleSet, t: NaiveDateTime, rid: &str) -> Result<bool, EditError> {
    for (n, dt) in set.into_iter().enumerate() {
        let d = dt.naive_utc();
        if d == t {
            return Ok(true);
        }
        if d > t {
            return Ok(false);
        }
        if n >= MAX_INSTANCES {
            return Err(EditError::TooComplex(format!(
                "rid {rid} lies beyond {MAX_INSTANCES} instances"
            )));
        }
    }
    Ok(false)
}

/// What a rid item resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// An existing scheduling component (master or override).
    Existing(usize),
    /// An instance without override, at this master wall-clock time.
    New(NaiveDateTime),
}

/// Resolves the `rid` list to targets (RFC 8607 §3.3.2); `None` = master and every
/// existing override. Targets are de-duplicated and keep the order given.
pub(crate) fn resolve_targets(
    cal: &Calendar,
    rids: Option<&[RidSpec]>,
) -> Result<Vec<Target>, EditError> {
    let Some(rids) = rids else {
        let all: Vec<Target> = cal.scheduling().map(Target::Existing).collect();
        if all.is_empty() {
            return Err(EditError::NoComponent);
        }
        return Ok(all);
    };
    if rids.is_empty() {
        return Err(invalid("", "empty rid list"));
    }
    let master = cal.master();
    let mut ctx: Option<(MasterTime, Option<Recurrence>)> = None;
    let mut out: Vec<Target> = Vec::new();
    for spec in rids {
        let target = match spec {
            RidSpec::Master => {
                Target::Existing(master.ok_or_else(|| invalid("M", "no master component"))?)
            }
            RidSpec::Instance(rid) => resolve_instance(cal, master, rid, &mut ctx)?,
        };
        if out.contains(&target) {
            return Err(EditError::InvalidRid {
                rid: spec_text(spec),
                reason: "targets the same instance as another rid".into(),
            });
        }
        out.push(target);
    }
    Ok(out)
}

fn spec_text(s: &RidSpec) -> String {
    match s {
        RidSpec::Master => "M".into(),
        RidSpec::Instance(r) => r.clone(),
    }
}

fn resolve_instance(
    cal: &Calendar,
    master: Option<usize>,
    rid: &str,
    ctx: &mut Option<(MasterTime, Option<Recurrence>)>,
) -> Result<Target, EditError> {
    let overrides: Vec<usize> = cal
        .scheduling()
        .filter(|&c| cal.rid_of(c).is_some())
        .collect();
    if let Some(&c) = overrides.iter().find(|&&c| cal.rid_of(c) == Some(rid)) {
        return Ok(Target::Existing(c));
    }
    let v = DtValue::parse(rid).ok_or_else(|| invalid(rid, "not a date or date-time"))?;
    let master = master.ok_or_else(|| invalid(rid, "no master component to expand"))?;
    if ctx.is_none() {
        let mt = MasterTime::of(cal, master)
            .ok_or_else(|| invalid(rid, "master has no usable DTSTART"))?;
        let rec = Recurrence::of(cal, master, &mt, rid)?;
        *ctx = Some((mt, rec));
    }
    let Some((mt, rec)) = ctx.as_ref() else {
        return Err(invalid(rid, "master has no usable DTSTART"));
    };
    // Literal rule: same form as the master's DTSTART; UTC on a zoned master is the
    // documented leniency.
    let local = match (mt.form, v.form) {
        (a, b) if a == b => Some(v.naive),
        (DtForm::Local, DtForm::Utc) if mt.tzid.is_some() => mt.to_local(cal, v, None),
        _ => None,
    }
    .ok_or_else(|| invalid(rid, "not in the form of the master's DTSTART"))?;
    for &c in &overrides {
        let Some(p) = cal.first_prop(c, "RECURRENCE-ID") else {
            continue;
        };
        let Some(mut ov) = DtValue::parse(p.value) else {
            continue;
        };
        if p.param("VALUE")
            .is_some_and(|x| x.eq_ignore_ascii_case("DATE"))
        {
            ov.form = DtForm::Date;
        }
        if mt.to_local(cal, ov, p.param("TZID").as_deref()) == Some(local) {
            return Ok(Target::Existing(c));
        }
    }
    let Some(rec) = rec else {
        return Err(EditError::NotRecurring {
            rid: rid.to_string(),
        });
    };
    if rec.contains(local, rid)? {
        Ok(Target::New(local))
    } else {
        Err(invalid(rid, "not an instance of the recurrence set"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_list_accepts_m_in_any_case_and_instances() {
        assert_eq!(
            parse_rid_list("M,20240101,20240101T100000Z").unwrap(),
            vec![
                RidSpec::Master,
                RidSpec::Instance("20240101".into()),
                RidSpec::Instance("20240101T100000Z".into())
            ]
        );
        assert_eq!(parse_rid_list("m").unwrap(), vec![RidSpec::Master]);
    }

    #[test]
    fn rid_list_rejects_duplicates_empties_and_garbage() {
        assert_eq!(parse_rid_list("M,m"), Err(RidError::Duplicate("m".into())));
        assert_eq!(
            parse_rid_list("20240101T100000,20240101T100000"),
            Err(RidError::Duplicate("20240101T100000".into()))
        );
        assert_eq!(parse_rid_list(""), Err(RidError::Empty));
        assert_eq!(parse_rid_list("M,"), Err(RidError::Empty));
        assert_eq!(
            parse_rid_list("tomorrow"),
            Err(RidError::Syntax("tomorrow".into()))
        );
        assert_eq!(
            parse_rid_list("20241301"),
            Err(RidError::Syntax("20241301".into()))
        );
        assert_eq!(
            parse_rid_list("20240101T250000"),
            Err(RidError::Syntax("20240101T250000".into()))
        );
    }

    #[test]
    fn utc_offsets_parse_to_seconds() {
        assert_eq!(parse_utc_offset("+0200"), Some(7200));
        assert_eq!(parse_utc_offset("-0430"), Some(-16200));
        assert_eq!(parse_utc_offset("+053015"), Some(19815));
        assert_eq!(parse_utc_offset("0200"), None);
    }
}
