//! Same-process, same-run comparison of the calattach iCalendar engine with the
//! calcard crate on one generated 1.3 MB calendar object (issue 12 benchmark).
//!
//! Tasks, each timed as a whole from input bytes to output bytes:
//! * round trip: parse, then produce the object's bytes again;
//! * add one managed `ATTACH` (RFC 8607 §3.4 2.C) to the master (`rid=M`);
//! * add it to every component (no `rid`, RFC 8607 §3.3.2).
//!
//! The rounds interleave the tasks so that load from other processes on the shared
//! machine spreads over both libraries alike. Besides the times it reports how far
//! each output is from the input: byte-identical or not, and how many physical
//! lines were removed from or added to it (a multiset difference, so moved lines
//! count as unchanged; a lower bound on what a line diff would show).
//!
//! Run: `cargo run --release --manifest-path bench/ical-compare/Cargo.toml`
//! (optional argument: the number of rounds, default 30).

#![forbid(unsafe_code)]

// Shared with benches/ical_edit.rs, which uses the helpers this binary does not.
#[allow(dead_code)]
mod big_event;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use calattach::ical::{edit, parse_rid_list, Calendar, NewAttach};
use calcard::icalendar::{
    ICalendar, ICalendarComponentType, ICalendarEntry, ICalendarParameter, ICalendarProperty,
    ICalendarValue, Uri,
};

const MANAGED_ID: &str = "bench-managed-id";
const FMTTYPE: &str = "application/pdf";
const FILENAME: &str = "agenda.pdf";
const SIZE: u64 = 123_456;
const URI: &str = "https://cal.example.com/attachments/bench-managed-id";

/// Which components calcard's edit adds the `ATTACH` to.
#[derive(Clone, Copy)]
enum Scope {
    Master,
    All,
}

fn calcard_attach() -> ICalendarEntry {
    ICalendarEntry::new(ICalendarProperty::Attach)
        .with_param(ICalendarParameter::managed_id(MANAGED_ID.to_string()))
        .with_param(ICalendarParameter::fmttype(FMTTYPE.to_string()))
        .with_param(ICalendarParameter::filename(FILENAME.to_string()))
        .with_param(ICalendarParameter::size(SIZE))
        .with_value(ICalendarValue::Uri(Uri::Location(URI.to_string())))
}

fn calcard_round_trip(text: &str) -> Vec<u8> {
    match ICalendar::parse(text) {
        Ok(cal) => cal.to_string().into_bytes(),
        Err(e) => panic!("calcard rejected the input: {e:?}"),
    }
}

fn calcard_add(text: &str, scope: Scope) -> Vec<u8> {
    let mut cal = match ICalendar::parse(text) {
        Ok(cal) => cal,
        Err(e) => panic!("calcard rejected the input: {e:?}"),
    };
    let mut added = 0;
    for comp in cal
        .components
        .iter_mut()
        .filter(|c| c.component_type == ICalendarComponentType::VEvent)
    {
        let is_master = !comp
            .entries
            .iter()
            .any(|e| e.name == ICalendarProperty::RecurrenceId);
        if matches!(scope, Scope::All) || is_master {
            comp.entries.push(calcard_attach());
            added += 1;
        }
    }
    assert!(added > 0, "no component to add the ATTACH to");
    cal.to_string().into_bytes()
}

fn calattach_round_trip(bytes: &[u8]) -> Vec<u8> {
    // The engine never re-serialises: unchanged input leaves as the bytes it came
    // in as, so the round trip is parse plus a copy of the bytes.
    Calendar::parse(bytes).unwrap().as_bytes().to_vec()
}

fn calattach_add(bytes: &[u8], a: &NewAttach, master_only: bool) -> Vec<u8> {
    let cal = Calendar::parse(bytes).unwrap();
    let rids = master_only.then(|| parse_rid_list("M").unwrap());
    edit::add_attach(&cal, rids.as_deref(), a).unwrap()
}

/// Physical lines (without their terminator) of `input` missing from `output`, and
/// of `output` missing from `input`, counted as multisets.
fn changed_lines(input: &[u8], output: &[u8]) -> (usize, usize) {
    let split = |b: &[u8]| -> HashMap<Vec<u8>, isize> {
        let mut m = HashMap::new();
        for l in b.split(|&c| c == b'\n') {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            *m.entry(l.to_vec()).or_insert(0) += 1;
        }
        m
    };
    let a = split(input);
    let b = split(output);
    let mut removed = 0;
    let mut added = 0;
    for (line, n) in &a {
        removed += (n - b.get(line).copied().unwrap_or(0)).max(0) as usize;
    }
    for (line, n) in &b {
        added += (n - a.get(line).copied().unwrap_or(0)).max(0) as usize;
    }
    (removed, added)
}

fn sample_lines(input: &[u8], output: &[u8], max: usize) -> Vec<String> {
    let set: std::collections::HashSet<&[u8]> = input
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    output
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !set.contains(l))
        .take(max)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

struct Task<'a> {
    name: &'static str,
    run: Box<dyn Fn() -> Vec<u8> + 'a>,
    times: Vec<Duration>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(t: &[Duration]) -> Duration {
    t[t.len() / 2]
}

fn p90(t: &[Duration]) -> Duration {
    t[(t.len() * 9 / 10).min(t.len() - 1)]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
        .max(1);
    let bytes = big_event::big_event();
    let text = String::from_utf8(bytes.clone()).unwrap();
    // A conformant input (RFC 5545 §3.1: lines of at most 75 octets plus CRLF), so
    // that a re-folding writer is not blamed for repairing the generator.
    assert!(bytes
        .split(|&c| c == b'\n')
        .all(|l| l.strip_suffix(b"\r").unwrap_or(l).len() <= 75));
    let a = NewAttach {
        managed_id: MANAGED_ID.into(),
        fmttype: FMTTYPE.into(),
        filename: FILENAME.into(),
        size: SIZE,
        uri: URI.into(),
    };
    let cal = Calendar::parse(&bytes).unwrap();
    println!(
        "input: {} bytes ({:.2} MB), {} physical lines, 1 master + {} overrides; {rounds} rounds",
        bytes.len(),
        bytes.len() as f64 / 1e6,
        bytes.split(|&c| c == b'\n').count() - 1,
        cal.override_count()
    );

    let (b, t, a) = (&bytes, &text, &a);
    let mut tasks = vec![
        Task {
            name: "round trip: calattach",
            run: Box::new(move || calattach_round_trip(b)),
            times: Vec::new(),
        },
        Task {
            name: "round trip: calcard",
            run: Box::new(move || calcard_round_trip(t)),
            times: Vec::new(),
        },
        Task {
            name: "add ATTACH to master: calattach",
            run: Box::new(move || calattach_add(b, a, true)),
            times: Vec::new(),
        },
        Task {
            name: "add ATTACH to master: calcard",
            run: Box::new(move || calcard_add(t, Scope::Master)),
            times: Vec::new(),
        },
        Task {
            name: "add ATTACH to all components: calattach",
            run: Box::new(move || calattach_add(b, a, false)),
            times: Vec::new(),
        },
        Task {
            name: "add ATTACH to all components: calcard",
            run: Box::new(move || calcard_add(t, Scope::All)),
            times: Vec::new(),
        },
    ];

    // Outputs, checked once outside the timed rounds (this also warms up).
    let outputs: Vec<Vec<u8>> = tasks.iter().map(|t| (t.run)()).collect();
    for _ in 0..2 {
        for t in &tasks {
            black_box((t.run)());
        }
    }
    for _ in 0..rounds {
        for t in &mut tasks {
            let start = Instant::now();
            black_box((t.run)());
            t.times.push(start.elapsed());
        }
    }

    println!();
    println!(
        "{:<42} {:>10} {:>10} {:>10}   {:>10} {:>9}   {:>7} {:>7}",
        "task", "median ms", "p90 ms", "min ms", "out bytes", "identical", "-lines", "+lines"
    );
    for (t, out) in tasks.iter_mut().zip(&outputs) {
        t.times.sort();
        let (removed, added) = changed_lines(&bytes, out);
        println!(
            "{:<42} {:>10.3} {:>10.3} {:>10.3}   {:>10} {:>9}   {:>7} {:>7}",
            t.name,
            ms(median(&t.times)),
            ms(p90(&t.times)),
            ms(t.times[0]),
            out.len(),
            if out == &bytes { "yes" } else { "no" },
            removed,
            added
        );
    }
    println!();
    for pair in tasks.chunks(2) {
        let label = pair[0].name.trim_end_matches(": calattach");
        println!(
            "ratio calcard/calattach, {label}: median {:.1}x, p90 {:.1}x, min {:.1}x",
            ms(median(&pair[1].times)) / ms(median(&pair[0].times)),
            ms(p90(&pair[1].times)) / ms(p90(&pair[0].times)),
            ms(pair[1].times[0]) / ms(pair[0].times[0]),
        );
    }
    println!();
    println!("first lines calcard's round trip writes that are not in the input:");
    for l in sample_lines(&bytes, &outputs[1], 6) {
        println!("  {l}");
    }
    println!("lines calattach's master edit adds:");
    for l in sample_lines(&bytes, &outputs[2], 6) {
        println!("  {l}");
    }
}
