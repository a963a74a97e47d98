//! Engine tests: corpus round trips, recurrence targeting (RFC 8607 §3.3.2), edits
//! (§3.4–3.7) and property tests. The corpus lives in `tests/data/*.ics`.
//!
//! The no-panic property tests run a bounded number of cases in CI; run them longer
//! with `PROPTEST_CASES=100000 cargo test --lib ical::tests::never_panics`.

use std::path::PathBuf;

use proptest::prelude::*;

use super::edit::{self, EditError, Patch};
use super::*;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data"));
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ics"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 9, "corpus missing: {}", dir.display());
    out
}

fn load(name: &str) -> Calendar {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    Calendar::parse(&std::fs::read(path).unwrap()).unwrap()
}

fn att(id: &str) -> NewAttach {
    NewAttach {
        managed_id: id.into(),
        fmttype: "text/html".into(),
        filename: "agenda.html".into(),
        size: 80,
        uri: format!("https://cal.example.com/attach/{id}"),
    }
}

fn rids(s: &str) -> Vec<RidSpec> {
    parse_rid_list(s).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// A one-VEVENT calendar with the given property lines.
fn event(props: &[&str]) -> Calendar {
    let mut s = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:e1\r\nDTSTAMP:20240101T000000Z\r\n");
    for p in props {
        s.push_str(p);
        s.push_str("\r\n");
    }
    s.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    Calendar::parse(s.as_bytes()).unwrap()
}

/// Adds an attachment for `rid` and returns the new calendar (panics on error).
fn add_ok(cal: &Calendar, rid: &str) -> Calendar {
    let out = edit::add_attach(cal, Some(&rids(rid)), &att("n1")).unwrap();
    Calendar::parse(&out).unwrap()
}

fn add_err(cal: &Calendar, rid: &str) -> EditError {
    edit::add_attach(cal, Some(&rids(rid)), &att("n1")).unwrap_err()
}

/// Asserts that every raw line of `before` not in `removed` appears in `after`,
/// byte-identical and in the same order.
fn assert_untouched_lines_kept(before: &Calendar, after: &[u8], removed: &[usize]) {
    let mut cursor = 0;
    for i in 0..before.line_count() {
        if removed.contains(&i) {
            continue;
        }
        let raw = before.raw(i);
        let found = after[cursor..]
            .windows(raw.len())
            .position(|w| w == raw)
            .unwrap_or_else(|| {
                panic!(
                    "line {i} {:?} missing or out of order",
                    String::from_utf8_lossy(raw)
                )
            });
        cursor += found + raw.len();
    }
}

// ---- corpus ----

#[test]
fn corpus_round_trips_byte_identically() {
    for (name, bytes) in corpus() {
        let cal = Calendar::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cal.as_bytes(), &bytes[..], "{name}");
        assert_eq!(
            Patch::new(&cal).render(),
            bytes,
            "{name}: empty edit changed bytes"
        );
        assert_eq!(
            edit::restore_params(&cal, "https://nowhere.invalid/", |_| None).unwrap(),
            None,
            "{name}"
        );
    }
}

#[test]
fn corpus_add_to_all_components_keeps_every_input_line() {
    for (name, bytes) in corpus() {
        let cal = Calendar::parse(&bytes).unwrap();
        let out =
            edit::add_attach(&cal, None, &att("new1")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_untouched_lines_kept(&cal, &out, &[]);
        let after = Calendar::parse(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        for c in after.managed_ids() {
            assert!(c.managed_ids.contains(&"new1".to_string()), "{name}: {c:?}");
        }
        // Removing it again restores the original bytes exactly.
        assert_eq!(
            edit::remove_attach(&after, None, "new1").unwrap(),
            bytes,
            "{name}"
        );
    }
}

#[test]
fn corpus_queries_report_scheduling_data() {
    let apple = load("apple-recurring-berlin.ics");
    assert_eq!(
        apple.uid().as_deref(),
        Some("6F2E1D6C-5B4A-4C3B-9A8F-1E2D3C4B5A69")
    );
    assert!(apple.is_recurring());
    assert_eq!(apple.override_count(), 1);
    assert_eq!(apple.component_kind(), Some("VEVENT"));
    assert_eq!(
        apple.managed_ids(),
        vec![
            ComponentAttachments {
                rid: None,
                managed_ids: vec!["A1B2C3".into()]
            },
            ComponentAttachments {
                rid: Some("20240328T090000".into()),
                managed_ids: vec![]
            },
        ]
    );
    let google = load("google-dst-newyork.ics");
    assert_eq!(
        google.organizer().as_deref(),
        Some("mailto:ana@example.com")
    );
    // The VALARM's ATTENDEE is an e-mail recipient, not an attendee.
    assert_eq!(
        google.attendees(),
        vec!["mailto:ana@example.com", "mailto:bob@example.org"]
    );
    let tb = load("thunderbird-vtodo.ics");
    assert_eq!(tb.component_kind(), Some("VTODO"));
    let rfc = load("rfc8607-appendix-a.ics");
    assert_eq!(
        rfc.distinct_managed_ids().into_iter().collect::<Vec<_>>(),
        vec!["97S"]
    );
    assert_eq!(
        load("odd-mixed-endings.ics").uid().as_deref(),
        Some("odd-1@example.com")
    );
}

#[test]
fn corpus_unfolds_a_utf8_sequence_split_across_a_fold() {
    let cal = load("utf8-split-fold.ics");
    let desc = cal
        .scheduling()
        .find_map(|c| cal.first_prop(c, "DESCRIPTION"))
        .unwrap();
    assert!(
        desc.value.starts_with("会議の議題：予算と計画 😀 Ελληνικά"),
        "{}",
        desc.value
    );
    assert!(desc.value.ends_with("文字化けしないこと"));
}

#[test]
fn attach_refs_find_references_with_and_without_managed_id() {
    let cal = event(&[
        "DTSTART:20240101T100000Z",
        "ATTACH;MANAGED-ID=m1;SIZE=1:https://cal.example.com/attach/abc",
        "ATTACH:https://cal.example.com/attach/def/file.pdf",
        "ATTACH:https://elsewhere.example.com/attach/x",
    ]);
    let refs = cal.attach_refs("https://cal.example.com/attach/");
    assert_eq!(refs.len(), 2);
    assert_eq!(
        (refs[0].id.as_str(), refs[0].managed_id.as_deref()),
        ("abc", Some("m1"))
    );
    assert_eq!(
        (refs[1].id.as_str(), refs[1].managed_id.as_deref()),
        ("def", None)
    );
    assert_eq!(refs[1].rid, None);
}

// ---- recurrence targeting (RFC 8607 §3.3.2) ----

#[test]
fn daily_count_accepts_instances_and_rejects_beyond_count_and_wrong_time() {
    let cal = event(&["DTSTART:20240101T100000Z", "RRULE:FREQ=DAILY;COUNT=5"]);
    assert_eq!(add_ok(&cal, "20240105T100000Z").override_count(), 1);
    assert!(matches!(
        add_err(&cal, "20240106T100000Z"),
        EditError::InvalidRid { .. }
    ));
    assert!(matches!(
        add_err(&cal, "20240103T110000Z"),
        EditError::InvalidRid { .. }
    ));
    // Local form on a UTC master is not the stored form.
    assert!(matches!(
        add_err(&cal, "20240103T100000"),
        EditError::InvalidRid { .. }
    ));
}

#[test]
fn weekly_byday_with_exdate_rejects_the_exdate_and_other_weekdays() {
    let cal = event(&[
        "DTSTART:20240101T090000",
        "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10",
        "EXDATE:20240103T090000",
    ]);
    assert!(matches!(
        add_err(&cal, "20240103T090000"),
        EditError::InvalidRid { .. }
    ));
    assert!(matches!(
        add_err(&cal, "20240102T090000"),
        EditError::InvalidRid { .. }
    ));
    let after = add_ok(&cal, "20240110T090000");
    assert_eq!(
        after.managed_ids()[1].rid.as_deref(),
        Some("20240110T090000")
    );
}

#[test]
fn rdate_only_series_accepts_rdates_and_dtstart_only() {
    let cal = event(&[
        "DTSTART:20240101T100000Z",
        "RDATE:20240115T100000Z,20240201T100000Z",
    ]);
    assert!(cal.is_recurring());
    add_ok(&cal, "20240115T100000Z");
    add_ok(&cal, "20240101T100000Z");
    assert!(matches!(
        add_err(&cal, "20240116T100000Z"),
        EditError::InvalidRid { .. }
    ));
}

#[test]
fn until_in_utc_bounds_a_tzid_series_across_the_new_york_dst_change() {
    let cal = load("google-dst-newyork.ics");
    // 2024-11-03 01:30 exists twice (fall back); the wall-clock instance is valid.
    add_ok(&cal, "20241103T013000");
    // UNTIL=20241110T063000Z is 01:30 EST on 10 Nov: the last instance.
    add_ok(&cal, "20241110T013000");
    assert!(matches!(
        add_err(&cal, "20241111T013000"),
        EditError::InvalidRid { .. }
    ));
    assert!(matches!(
        add_err(&cal, "20241105T023000"),
        EditError::InvalidRid { .. }
    ));
    // UTC leniency: 01:30 EST on 5 Nov is 06:30Z, 01:30 EDT on 1 Nov is 05:30Z.
    add_ok(&cal, "20241105T063000Z");
    add_ok(&cal, "20241101T053000Z");
    assert!(matches!(
        add_err(&cal, "20241105T053000Z"),
        EditError::InvalidRid { .. }
    ));
}

#[test]
fn berlin_weekly_series_validates_across_dst_with_exdate_and_utc_leniency() {
    let cal = load("apple-recurring-berlin.ics");
    add_ok(&cal, "20240411T090000"); // after the 31 March change
    assert!(matches!(
        add_err(&cal, "20240404T090000"),
        EditError::InvalidRid { .. }
    )); // EXDATE
    assert!(matches!(
        add_err(&cal, "20240502T090000"),
        EditError::InvalidRid { .. }
    )); // beyond COUNT=6
    add_ok(&cal, "20240411T070000Z"); // 09:00 CEST
    add_ok(&cal, "20240321T080000Z"); // 09:00 CET
    assert!(matches!(
        add_err(&cal, "20240411T080000Z"),
        EditError::InvalidRid { .. }
    ));
}

#[test]
fn local_and_utc_rid_for_the_same_instance_are_a_duplicate() {
    let cal = load("apple-recurring-berlin.ics");
    let e = edit::add_attach(
        &cal,
        Some(&rids("20240411T090000,20240411T070000Z")),
        &att("x"),
    )
    .unwrap_err();
    assert!(e.is_rid_error(), "{e}");
}

#[test]
fn existing_tzid_override_is_addressed_by_its_local_value_text() {
    let cal = load("apple-recurring-berlin.ics");
    let out = edit::add_attach(&cal, Some(&rids("20240328T090000")), &att("n1")).unwrap();
    let after = Calendar::parse(&out).unwrap();
    assert_eq!(after.override_count(), 1, "no new override");
    assert_eq!(
        after.managed_ids()[1],
        ComponentAttachments {
            rid: Some("20240328T090000".into()),
            managed_ids: vec!["n1".into()]
        }
    );
    assert_untouched_lines_kept(&cal, &out, &[]);
    // The same override by its UTC time (08:00Z, CET) is the documented leniency.
    assert_eq!(add_ok(&cal, "20240328T080000Z").override_count(), 1);
}

#[test]
fn all_day_series_uses_date_rids_and_creates_date_overrides() {
    let cal = load("davx5-allday-binary.ics");
    let out = edit::add_attach(&cal, Some(&rids("20250512")), &att("n1")).unwrap();
    let s = text(&out);
    assert!(s.contains("RECURRENCE-ID;VALUE=DATE:20250512\r\n"), "{s}");
    assert!(s.contains("DTSTART;VALUE=DATE:20250512\r\nDTEND;VALUE=DATE:20250513\r\n"));
    assert!(matches!(
        add_err(&cal, "20250513"),
        EditError::InvalidRid { .. }
    ));
    assert!(matches!(
        add_err(&cal, "20250512T000000"),
        EditError::InvalidRid { .. }
    ));
}

#[test]
fn master_and_instance_lists_target_both_and_lower_case_m_is_master() {
    let cal = load("apple-recurring-berlin.ics");
    let after = Calendar::parse(
        &edit::add_attach(&cal, Some(&rids("m,20240411T090000")), &att("n1")).unwrap(),
    )
    .unwrap();
    let ids = after.managed_ids();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0].managed_ids, vec!["A1B2C3", "n1"]);
    assert_eq!(ids[1].managed_ids, Vec::<String>::new()); // untargeted existing override
    assert_eq!(ids[2].rid.as_deref(), Some("20240411T090000"));
    // The new override copies the master's attachments and gets the new one.
    assert_eq!(ids[2].managed_ids, vec!["A1B2C3", "n1"]);
}

#[test]
fn m_is_valid_on_a_non_recurring_object_but_instances_are_not() {
    let cal = event(&["DTSTART:20240101T100000Z"]);
    assert!(!cal.is_recurring());
    assert_eq!(add_ok(&cal, "M").managed_ids()[0].managed_ids, vec!["n1"]);
    assert_eq!(
        add_err(&cal, "20240101T100000Z"),
        EditError::NotRecurring {
            rid: "20240101T100000Z".into()
        }
    );
}

#[test]
fn m_without_a_master_is_invalid() {
    let s = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:u\r\nRECURRENCE-ID:20240101T100000Z\r\nDTSTART:20240101T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let cal = Calendar::parse(s.as_bytes()).unwrap();
    assert!(matches!(add_err(&cal, "M"), EditError::InvalidRid { .. }));
    // The override itself is still addressable.
    add_ok(&cal, "20240101T100000Z");
}

/// Appendix A's override, except that the master's own ATTACH (97S) is carried into
/// the override: the override replaces the whole instance, so dropping it would
/// silently remove the agenda from that date (and §3.6's "override with the matching
/// ATTACH removed" only makes sense if the others are copied).
#[test]
fn new_override_matches_rfc8607_appendix_a_and_keeps_master_attachments() {
    let cal = load("rfc8607-appendix-a.ics");
    let a = NewAttach {
        managed_id: "33225".into(),
        fmttype: "text/html".into(),
        filename: "agenda0220.html".into(),
        size: 105,
        uri: "https://cal.example.com/attach/65/FGZ225".into(),
    };
    let out = edit::add_attach(&cal, Some(&rids("20120220T100000")), &a).unwrap();
    let s = text(&out);
    let expected_override = "BEGIN:VEVENT\r\nUID:20010712T182145Z-123401@example.com\r\n\
RECURRENCE-ID;TZID=America/Montreal:20120220T100000\r\nDTSTAMP:20120201T203412Z\r\n\
DTSTART;TZID=America/Montreal:20120220T100000\r\nDURATION:PT1H\r\nSUMMARY:Planning Meeting\r\n\
ORGANIZER:mailto:cyrus@example.com\r\n\
ATTENDEE;CUTYPE=INDIVIDUAL;PARTSTAT=ACCEPTED:mailto:cyrus@exampl\r\n e.com\r\n\
ATTENDEE;CUTYPE=INDIVIDUAL;PARTSTAT=ACCEPTED:mailto:arnaudq@exam\r\n ple.com\r\n\
ATTENDEE;CUTYPE=INDIVIDUAL;PARTSTAT=NEEDS-ACTION:mailto:mike@exa\r\n mple.com\r\n\
ATTACH;MANAGED-ID=97S;FMTTYPE=text/html;SIZE=80;\r\n FILENAME=agenda.html:https://cal.example.com/attach/65/34X22R\r\n\
ATTACH;MANAGED-ID=33225;FMTTYPE=text/html;SIZE=105;FILENAME=agenda0220.html\r\n :https://cal.example.com/attach/65/FGZ225\r\n\
END:VEVENT\r\nEND:VCALENDAR\r\n";
    assert!(s.ends_with(expected_override), "{s}");
    assert!(
        s.starts_with(&text(cal.as_bytes())[..cal.as_bytes().len() - "END:VCALENDAR\r\n".len()])
    );
}

#[test]
fn vtodo_override_moves_due_and_resolves_mozilla_tzid() {
    let cal = load("thunderbird-vtodo.ics");
    let s = text(&edit::add_attach(&cal, Some(&rids("20240301T090000")), &att("n1")).unwrap());
    assert!(
        s.contains("RECURRENCE-ID;TZID=/mozilla.org/20050126_1/Europe/Berlin:20240301T090000\r\n")
    );
    assert!(s.contains("DUE;TZID=/mozilla.org/20050126_1/Europe/Berlin:20240301T170000\r\n"));
    assert!(!s[s.rfind("BEGIN:VTODO").unwrap()..].contains("RRULE"));
    assert!(matches!(
        add_err(&cal, "20240302T090000"),
        EditError::InvalidRid { .. }
    ));
    // UTC rid needs zone data: resolved through the path suffix.
    add_ok(&cal, "20240401T070000Z");
}

#[test]
fn windows_tzid_series_validates_local_rids_without_zone_data() {
    let cal = load("outlook-windows-tzid.ics");
    add_ok(&cal, "20240404T093000");
    assert!(matches!(
        add_err(&cal, "20240405T093000"),
        EditError::InvalidRid { .. }
    ));
    // No zone data for a UTC rid: rejected rather than guessed.
    assert!(matches!(
        add_err(&cal, "20240404T073000Z"),
        EditError::InvalidRid { .. }
    ));
}

#[test]
fn unbounded_rule_far_target_is_too_complex_and_impossible_rule_terminates() {
    let cal = event(&["DTSTART:20240101T100000Z", "RRULE:FREQ=DAILY"]);
    add_ok(&cal, "20340101T100000Z");
    assert!(matches!(
        add_err(&cal, "25000101T100000Z"),
        EditError::TooComplex(_)
    ));
    // April 31 never exists: the expansion must still end.
    let never = event(&[
        "DTSTART:20240101T100000Z",
        "RRULE:FREQ=YEARLY;BYMONTH=4;BYMONTHDAY=31",
    ]);
    assert!(add_err(&never, "20250501T100000Z").is_rid_error());
}

#[test]
fn many_rids_share_one_budget_and_each_rule_is_expanded_once() {
    let cal = event(&["DTSTART:20240101T100000Z", "RRULE:FREQ=DAILY"]);
    // 300 instances in the first year: one pass of ~365 instances checks them all.
    let list: Vec<String> = (0..300)
        .map(|d| {
            (chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(d))
                .format("%Y%m%dT100000Z")
                .to_string()
        })
        .collect();
    let list = rids(&list.join(","));
    let mut budget = Budget::new(1000, 10, std::time::Duration::from_secs(10));
    edit::add_attach_within(&cal, Some(&list), &att("n1"), &mut budget).unwrap();
    assert!(budget.instances_left() >= 1000 - 302, "{budget:?}");
    // The same list again exceeds what is left of the budget.
    let mut small = Budget::new(200, 10, std::time::Duration::from_secs(10));
    let err = edit::add_attach_within(&cal, Some(&list), &att("n1"), &mut small).unwrap_err();
    assert!(matches!(err, EditError::TooComplex(_)), "{err:?}");
}

#[test]
fn too_many_recurrence_lines_refuse_an_instance_rid_but_not_the_master() {
    let mut props = vec!["DTSTART:20240101T100000Z", "RRULE:FREQ=DAILY"];
    let exrules: Vec<String> = (0..20)
        .map(|i| format!("EXRULE:FREQ=SECONDLY;BYSECOND={}", i % 60))
        .collect();
    props.extend(exrules.iter().map(String::as_str));
    let cal = event(&props);
    let mut budget = Budget::new(1_000_000, 10, std::time::Duration::from_secs(10));
    let err = edit::add_attach_within(
        &cal,
        Some(&rids("20240105T100000Z")),
        &att("n1"),
        &mut budget,
    )
    .unwrap_err();
    assert!(matches!(err, EditError::TooComplex(_)), "{err:?}");
    assert!(err.is_rid_error());
    assert_eq!(budget.instances_left(), 1_000_000, "nothing was expanded");
    edit::add_attach_within(&cal, Some(&rids("M")), &att("n1"), &mut budget).unwrap();
}

#[test]
fn secondly_rule_with_many_exrules_is_refused_within_the_instance_budget() {
    let mut props = vec!["DTSTART:20240101T100000Z", "RRULE:FREQ=SECONDLY"];
    let exrules: Vec<String> = (0..100)
        .map(|i| format!("EXRULE:FREQ=SECONDLY;BYSECOND={}", i % 60))
        .collect();
    props.extend(exrules.iter().map(String::as_str));
    let cal = event(&props);
    let started = std::time::Instant::now();
    let err = add_err(&cal, "20240102T100000Z");
    assert!(matches!(err, EditError::TooComplex(_)), "{err:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

// ---- edits ----

#[test]
fn remove_with_rid_without_override_creates_override_without_the_attach() {
    let cal = load("rfc8607-appendix-a.ics");
    let out = edit::remove_attach(&cal, Some(&rids("20120220T100000")), "97S").unwrap();
    let after = Calendar::parse(&out).unwrap();
    assert_eq!(
        after.managed_ids(),
        vec![
            ComponentAttachments {
                rid: None,
                managed_ids: vec!["97S".into()]
            },
            ComponentAttachments {
                rid: Some("20120220T100000".into()),
                managed_ids: vec![]
            },
        ]
    );
    assert_untouched_lines_kept(&cal, &out, &[]);
    // Valid only if the master has it.
    assert_eq!(
        edit::remove_attach(&cal, Some(&rids("20120220T100000")), "nope").unwrap_err(),
        EditError::UnknownManagedId("nope".into())
    );
}

#[test]
fn remove_without_rid_deletes_from_every_component_and_rejects_unknown_ids() {
    let cal = load("rfc8607-appendix-a.ics");
    let with_override = Calendar::parse(
        &edit::add_attach(&cal, Some(&rids("20120220T100000")), &att("x")).unwrap(),
    )
    .unwrap();
    let out = edit::remove_attach(&with_override, None, "97S").unwrap();
    let after = Calendar::parse(&out).unwrap();
    assert!(after
        .managed_ids()
        .iter()
        .all(|c| !c.managed_ids.contains(&"97S".to_string())));
    assert_eq!(after.distinct_managed_ids().len(), 1);
    assert_eq!(
        edit::remove_attach(&cal, None, "nope").unwrap_err(),
        EditError::UnknownManagedId("nope".into())
    );
    // An explicitly targeted component lacking the id is an error too.
    assert_eq!(
        edit::remove_attach(&with_override, Some(&rids("M")), "x").unwrap_err(),
        EditError::UnknownManagedId("x".into())
    );
}

#[test]
fn update_replaces_every_occurrence_and_keeps_client_x_params() {
    let cal = event(&[
        "DTSTART:20240101T100000Z",
        "ATTACH;MANAGED-ID=old;FMTTYPE=text/plain;X-APPLE-SOMETHING=keep;SIZE=3:https://a/old",
        "ATTACH;MANAGED-ID=other:https://a/other",
    ]);
    let out = edit::update_attach(&cal, "old", &att("new")).unwrap();
    let s = text(&out);
    assert!(
        s.replace("\r\n ", "").contains(
            "ATTACH;MANAGED-ID=new;FMTTYPE=text/html;SIZE=80;FILENAME=agenda.html;X-APPLE-SOMETHING=keep:https://cal.example.com/attach/new\r\n"
        ),
        "{s}"
    );
    let after = Calendar::parse(&out).unwrap();
    assert_eq!(after.managed_ids()[0].managed_ids, vec!["new", "other"]);
    let old_line = (0..cal.line_count())
        .find(|&i| cal.raw(i).starts_with(b"ATTACH;MANAGED-ID=old"))
        .unwrap();
    assert_untouched_lines_kept(&cal, &out, &[old_line]);
    assert_eq!(
        edit::update_attach(&cal, "nope", &att("n")).unwrap_err(),
        EditError::UnknownManagedId("nope".into())
    );
}

#[test]
fn filename_with_separators_quotes_newlines_and_unicode_survives_a_reparse() {
    let cal = event(&["DTSTART:20240101T100000Z"]);
    let mut a = att("f1");
    a.filename = "Agenda; draft: v1, \"final\"\nÜbersicht 会議 ^ 📎.pdf".into();
    let out = edit::add_attach(&cal, None, &a).unwrap();
    let after = Calendar::parse(&out).unwrap();
    let line = after.attach_refs("https://cal.example.com/attach/")[0].line;
    assert_eq!(
        after.prop(line).param("FILENAME").as_deref(),
        Some(a.filename.as_str())
    );
    for phys in text(&out).split("\r\n") {
        assert!(phys.len() <= 75, "{phys}");
    }
}

#[test]
fn new_lines_use_lf_in_lf_only_documents() {
    let cal = load("google-dst-newyork-lf.ics");
    let out = edit::add_attach(&cal, Some(&rids("20241101T013000")), &att("n1")).unwrap();
    assert!(!out.contains(&b'\r'));
    Calendar::parse(&out).unwrap();
}

#[test]
fn restore_params_repairs_stripped_or_wrong_params_and_leaves_correct_lines() {
    let prefix = "https://cal.example.com/attach/";
    let cal = event(&[
        "DTSTART:20240101T100000Z",
        "ATTACH:https://cal.example.com/attach/abc",
        "ATTACH;MANAGED-ID=m2;FMTTYPE=text/html;SIZE=80;FILENAME=agenda.html:https://cal.example.com/attach/m2",
    ]);
    let lookup = |id: &str| {
        let mut a = att(if id == "abc" { "m1" } else { "m2" });
        a.uri = "ignored".into();
        Some(a)
    };
    let out = edit::restore_params(&cal, prefix, lookup).unwrap().unwrap();
    let after = Calendar::parse(&out).unwrap();
    assert_eq!(after.managed_ids()[0].managed_ids, vec!["m1", "m2"]);
    assert!(text(&out)
        .replace("\r\n ", "")
        .contains(":https://cal.example.com/attach/abc\r\n"));
    assert_eq!(edit::restore_params(&after, prefix, lookup).unwrap(), None);
    // A wrong SIZE is replaced (RFC 8607 §3.7).
    let wrong = event(&["ATTACH;MANAGED-ID=m2;FMTTYPE=text/html;SIZE=1;FILENAME=agenda.html:https://cal.example.com/attach/m2"]);
    let fixed = edit::restore_params(&wrong, prefix, lookup)
        .unwrap()
        .unwrap();
    assert!(text(&fixed).contains("SIZE=80"));
}

#[test]
fn invalid_attach_values_are_rejected() {
    let cal = event(&["DTSTART:20240101T100000Z"]);
    let mut a = att("x");
    a.uri = "https://a/\r\nX-INJECT:1".into();
    assert!(matches!(
        edit::add_attach(&cal, None, &a),
        Err(EditError::InvalidValue(_))
    ));
}

// ---- property tests ----

/// A generated content line: name, param values, value.
fn arb_prop() -> impl Strategy<Value = (String, Vec<String>, String)> {
    (
        "X-[A-Z]{1,8}",
        prop::collection::vec("[a-zA-Z0-9 ;:,\"^\n é€😀]{0,12}", 0..3),
        "[a-zA-Z0-9 ;:,\\\\é€😀]{0,120}",
    )
}

fn build_doc(
    props: &[(String, Vec<String>, String)],
    eols: &[bool],
    fold_at: usize,
) -> (Vec<u8>, Vec<String>) {
    let mut logical = vec![
        "BEGIN:VCALENDAR".to_string(),
        "BEGIN:VEVENT".to_string(),
        "UID:p".into(),
    ];
    for (n, ps, v) in props {
        let params: Vec<Param> = ps
            .iter()
            .enumerate()
            .map(|(i, x)| Param {
                name: if n == "ATTACH" {
                    "MANAGED-ID".into()
                } else {
                    format!("X-P{i}")
                },
                values: vec![x.clone()],
            })
            .collect();
        let line = String::from_utf8(param::write_line(n, &params, v, "\n")).unwrap();
        logical.push(line.replace("\n ", "").trim_end_matches('\n').to_string());
    }
    logical.push("END:VEVENT".into());
    logical.push("END:VCALENDAR".into());
    let mut out = Vec::new();
    for (i, l) in logical.iter().enumerate() {
        let eol: &[u8] = if eols.get(i % eols.len().max(1)).copied().unwrap_or(true) {
            b"\r\n"
        } else {
            b"\n"
        };
        // Fold at an arbitrary byte offset, possibly inside a UTF-8 sequence.
        let b = l.as_bytes();
        let mut first = true;
        for chunk in b.chunks(fold_at) {
            if !first {
                out.push(b' ');
            }
            out.extend_from_slice(chunk);
            out.extend_from_slice(eol);
            first = false;
        }
    }
    (out, logical)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn generated_documents_round_trip_and_unfold_to_their_logical_lines(
        props in prop::collection::vec(arb_prop(), 0..8),
        eols in prop::collection::vec(any::<bool>(), 1..4),
        fold_at in 1usize..90,
    ) {
        let (bytes, logical) = build_doc(&props, &eols, fold_at);
        let cal = Calendar::parse(&bytes).unwrap();
        prop_assert_eq!(Patch::new(&cal).render(), bytes.clone());
        for (i, (n, ps, v)) in props.iter().enumerate() {
            let p = cal.prop(3 + i);
            prop_assert_eq!(p.name, n.as_str());
            prop_assert_eq!(p.value, v.as_str());
            let decoded: Vec<String> = param::parse_params(p.params).into_iter().map(|x| x.value()).collect();
            let expected: Vec<String> = ps.iter().map(|x| x.chars().filter(|c| *c != '\r').collect()).collect();
            prop_assert_eq!(decoded, expected, "{}", logical[3 + i]);
        }
    }

    #[test]
    fn edits_keep_every_untargeted_line_in_order(
        props in prop::collection::vec(arb_prop(), 0..6),
        managed in prop::collection::vec(0u8..3, 0..4),
        eols in prop::collection::vec(any::<bool>(), 1..3),
        fold_at in 20usize..90,
    ) {
        let mut all = props.clone();
        for m in &managed {
            all.push(("ATTACH".into(), vec![format!("id{m}")], format!("https://h/a/{m}")));
        }
        let (bytes, _) = build_doc(&all, &eols, fold_at);
        {
            let cal = Calendar::parse(&bytes).unwrap();
            let out = edit::add_attach(&cal, None, &att("zz")).unwrap();
            assert_untouched_lines_kept(&cal, &out, &[]);
            let targeted: Vec<usize> = (0..cal.line_count())
                .filter(|&i| { let p = cal.prop(i); p.is("ATTACH") && p.param("MANAGED-ID").as_deref() == Some("id1") })
                .collect();
            match edit::remove_attach(&cal, None, "id1") {
                Ok(out) => { prop_assert!(!targeted.is_empty()); assert_untouched_lines_kept(&cal, &out, &targeted); }
                Err(e) => { prop_assert!(targeted.is_empty()); prop_assert_eq!(e, EditError::UnknownManagedId("id1".into())); }
            }
            if let Ok(out) = edit::update_attach(&cal, "id1", &att("zz")) {
                assert_untouched_lines_kept(&cal, &out, &targeted);
            }
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_corpus_files(
        file in 0usize..9,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let corpus = corpus();
        let mut bytes = corpus[file % corpus.len()].1.clone();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        exercise(&bytes);
    }
}

/// Runs parse and every edit; only panics matter here.
fn exercise(bytes: &[u8]) {
    let Ok(cal) = Calendar::parse(bytes) else {
        return;
    };
    let _ = (
        cal.uid(),
        cal.organizer(),
        cal.attendees(),
        cal.is_recurring(),
        cal.component_kind(),
    );
    let _ = cal.distinct_managed_ids();
    let refs = cal.attach_refs("https://");
    let mut rid_sets: Vec<Option<Vec<RidSpec>>> = vec![None, Some(vec![RidSpec::Master])];
    for c in cal.managed_ids() {
        if let Some(r) = c.rid {
            rid_sets.push(Some(vec![RidSpec::Instance(r)]));
        }
    }
    if let Some(m) = cal.master() {
        if let Some(p) = cal.first_prop(m, "DTSTART") {
            rid_sets.push(Some(vec![RidSpec::Instance(p.value.to_string())]));
        }
    }
    rid_sets.push(Some(vec![RidSpec::Instance("garbage".into())]));
    for r in &rid_sets {
        let _ = edit::add_attach(&cal, r.as_deref(), &att("p"));
        let _ = edit::remove_attach(&cal, r.as_deref(), "A1B2C3");
    }
    let _ = edit::update_attach(&cal, "97S", &att("q"));
    let _ = edit::restore_params(&cal, "https://", |id| Some(att(id)));
    let _ = refs;
}
