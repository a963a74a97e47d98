//! The calendar object both benchmarks use: one `VEVENT` master (a daily series of
//! [`INSTANCES`] occurrences in `Europe/Berlin`) and [`OVERRIDES`] overrides on every
//! second day, about 1.3 MB, shaped like what a busy shared calendar stores on a
//! CalDAV server (RFC 5545 §3.6.1, §3.8.4.4): a `VTIMEZONE`, folded attendee and
//! `DESCRIPTION` lines, escaped text, vendor `X-` properties and a `VALARM` in every
//! component.
//!
//! Shared by `benches/ical_edit.rs` (through `#[path]`) and the comparison binary so
//! that both measure the same bytes. Dependency-free on purpose: the comparison crate
//! only needs calattach and calcard.

/// Occurrences of the master's `RRULE` (`COUNT`).
pub const INSTANCES: i64 = 2000;
/// Overrides, one on every second occurrence starting with the first.
pub const OVERRIDES: i64 = 1000;

const START: (i64, u32, u32) = (2020, 1, 6);

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMMDD` of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> String {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// `YYYYMMDD` of occurrence `n` (0-based) of the daily series.
pub fn occurrence_date(n: i64) -> String {
    civil_from_days(days_from_civil(START.0, START.1, START.2) + n)
}

/// The `RECURRENCE-ID` value text (as stored, local time) of occurrence `n`.
pub fn occurrence_rid(n: i64) -> String {
    format!("{}T090000", occurrence_date(n))
}

/// An occurrence that exists in the series but has no override yet (odd indexes
/// have none), near the end so that validation has to expand most of the set.
pub fn rid_without_override() -> String {
    occurrence_rid(INSTANCES - 1)
}

const VTIMEZONE: &str = "BEGIN:VTIMEZONE\r\n\
TZID:Europe/Berlin\r\n\
X-LIC-LOCATION:Europe/Berlin\r\n\
BEGIN:DAYLIGHT\r\n\
TZOFFSETFROM:+0100\r\n\
TZOFFSETTO:+0200\r\n\
TZNAME:CEST\r\n\
DTSTART:19700329T020000\r\n\
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n\
END:DAYLIGHT\r\n\
BEGIN:STANDARD\r\n\
TZOFFSETFROM:+0200\r\n\
TZOFFSETTO:+0100\r\n\
TZNAME:CET\r\n\
DTSTART:19701025T030000\r\n\
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n\
END:STANDARD\r\n\
END:VTIMEZONE\r\n";

/// Appends a logical line folded at 75 octets (RFC 5545 §3.1); ASCII only.
fn fold(s: &mut String, line: &str) {
    let mut rest = line;
    let mut width = 75;
    while rest.len() > width {
        let (head, tail) = rest.split_at(width);
        s.push_str(head);
        s.push_str("\r\n ");
        rest = tail;
        // A continuation line's leading space counts towards its 75 octets.
        width = 74;
    }
    s.push_str(rest);
    s.push_str("\r\n");
}

/// Properties every component carries; `dates` holds the component's own
/// DTSTART/DTEND (and RRULE or RECURRENCE-ID) lines.
fn push_component(s: &mut String, n: i64, dates: &str) {
    s.push_str("BEGIN:VEVENT\r\n");
    s.push_str("UID:0F5C2E9A-7D1B-4B8E-9C3A-2E6F4D8B1A70@calendar.example.com\r\n");
    s.push_str("DTSTAMP:20240101T000000Z\r\nCREATED:20191220T154213Z\r\n");
    s.push_str(&format!(
        "LAST-MODIFIED:20231115T{:02}{:02}00Z\r\nSEQUENCE:{}\r\n",
        n % 24,
        n % 60,
        n % 7
    ));
    s.push_str(dates);
    s.push_str("SUMMARY:Daily stand-up\\, platform team\r\n");
    s.push_str("LOCATION:Room 4.12\\, Building B\\; or the video bridge\r\n");
    fold(
        s,
        "ORGANIZER;CN=\"Lee, Morgan\";SCHEDULE-STATUS=1.2:mailto:morgan.lee@example.com",
    );
    for a in 0..2 {
        // A long parameter list folded once, as most servers store attendees.
        s.push_str(&format!(
            "ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED;CN=Person\r\n  Number {a};X-NUM-GUESTS=0:mailto:person{a}@example.com\r\n"
        ));
    }
    fold(
        s,
        &format!(
            "DESCRIPTION:Agenda for occurrence {n}:\\n1. What did you do yesterday?\\n\
2. What will you do today?\\n3. Any blockers? Notes from the last retro\\, action \
items and links are in the team wiki\\; ask in the channel if the bridge does not work."
        ),
    );
    s.push_str("CATEGORIES:Work,Meetings\r\nTRANSP:OPAQUE\r\n");
    s.push_str("X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC\r\n");
    s.push_str("X-MICROSOFT-CDO-BUSYSTATUS:BUSY\r\n");
    s.push_str("X-MOZ-GENERATION:3\r\n");
    s.push_str(&format!(
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER;RELATED=START:-PT10M\r\n\
DESCRIPTION:Reminder\r\nX-WR-ALARMUID:5A1C{n:04}-1111-4A2B-9C3D-4E5F60718293\r\nEND:VALARM\r\n"
    ));
    s.push_str("END:VEVENT\r\n");
}

/// Generates the calendar object (CRLF line endings, about 1.3 MB).
pub fn big_event() -> Vec<u8> {
    let mut s = String::with_capacity(1_400_000);
    s.push_str(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Example Corp.//Calendar Server 1.0//EN\r\n\
CALSCALE:GREGORIAN\r\n",
    );
    s.push_str(VTIMEZONE);
    let first = occurrence_date(0);
    push_component(
        &mut s,
        0,
        &format!(
            "DTSTART;TZID=Europe/Berlin:{first}T090000\r\nDTEND;TZID=Europe/Berlin:{first}T091500\r\n\
RRULE:FREQ=DAILY;COUNT={INSTANCES}\r\n"
        ),
    );
    for i in 0..OVERRIDES {
        let d = occurrence_date(i * 2);
        push_component(
            &mut s,
            i + 1,
            &format!(
                "RECURRENCE-ID;TZID=Europe/Berlin:{d}T090000\r\n\
DTSTART;TZID=Europe/Berlin:{d}T093000\r\nDTEND;TZID=Europe/Berlin:{d}T094500\r\n"
            ),
        );
    }
    s.push_str("END:VCALENDAR\r\n");
    s.into_bytes()
}
