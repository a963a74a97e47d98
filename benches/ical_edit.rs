//! Benchmark of the lossless iCalendar engine (issue 12, RFC 8607 §3.4 2.C and
//! §3.3.2): add one managed `ATTACH` to a 1.3 MB event with 1000 overrides, to its
//! master, to all of its components, and to an instance that has no override yet.
//! Target: ≤ 10 ms per operation (parse + edit + serialise) in a release build.
//!
//! Run with `cargo bench --bench ical_edit` (optional: `-- ROUNDS`, default 30).
//! A plain `harness = false` binary timed with `std::time::Instant`; it prints the
//! median, 90th percentile and minimum of the rounds. The calendar object comes from the
//! comparison crate's generator so that `bench/ical-compare` (calattach against
//! calcard in one run) measures the same bytes.

#[path = "../bench/ical-compare/src/big_event.rs"]
mod big_event;

use std::hint::black_box;
use std::time::{Duration, Instant};

use calattach::ical::{edit, parse_rid_list, Calendar, NewAttach};

fn measure(name: &str, rounds: usize, mut f: impl FnMut() -> usize) {
    // Warm-up: page in the input and settle the allocator.
    for _ in 0..3 {
        black_box(f());
    }
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
    println!(
        "{name:<58} median {:>7.3} ms   p90 {:>7.3} ms   min {:>7.3} ms",
        ms(times[times.len() / 2]),
        ms(p90),
        ms(times[0])
    );
}

fn main() {
    // `cargo bench` passes `--bench`; the first numeric argument is the round count.
    let rounds = std::env::args()
        .skip(1)
        .find_map(|s| s.parse::<usize>().ok())
        .unwrap_or(30)
        .max(1);
    let bytes = big_event::big_event();
    let cal = Calendar::parse(&bytes).unwrap();
    println!(
        "input: {} bytes ({:.2} MB), 1 master + {} overrides, {} instances; {rounds} rounds",
        bytes.len(),
        bytes.len() as f64 / 1e6,
        cal.override_count(),
        big_event::INSTANCES
    );
    let a = NewAttach {
        managed_id: "bench-managed-id".into(),
        fmttype: "application/pdf".into(),
        filename: "agenda.pdf".into(),
        size: 123_456,
        uri: "https://cal.example.com/attachments/bench-managed-id".into(),
    };
    let master = parse_rid_list("M").unwrap();
    let new_rid = big_event::rid_without_override();
    let new_instance = parse_rid_list(&new_rid).unwrap();

    // What each timed operation produces, checked once so that a fast wrong answer
    // cannot pass as a result.
    let added = edit::add_attach(&cal, Some(&master), &a).unwrap();
    let prefix = bytes.iter().zip(&added).take_while(|(x, y)| x == y).count();
    let suffix = bytes
        .iter()
        .rev()
        .zip(added.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    assert!(
        prefix + suffix >= bytes.len() && added.len() > bytes.len(),
        "the master edit must be one insertion into the unchanged input"
    );
    let all = Calendar::parse(&edit::add_attach(&cal, None, &a).unwrap()).unwrap();
    assert_eq!(
        all.managed_ids()
            .iter()
            .filter(|c| c.managed_ids == ["bench-managed-id"])
            .count(),
        cal.override_count() + 1
    );
    let created =
        Calendar::parse(&edit::add_attach(&cal, Some(&new_instance), &a).unwrap()).unwrap();
    assert_eq!(created.override_count(), cal.override_count() + 1);

    measure("parse", rounds, || {
        Calendar::parse(black_box(&bytes)).unwrap().override_count()
    });
    measure(
        "parse + add ATTACH to master (rid=M) + serialise",
        rounds,
        || {
            let cal = Calendar::parse(black_box(&bytes)).unwrap();
            edit::add_attach(&cal, Some(&master), &a).unwrap().len()
        },
    );
    measure(
        "parse + add ATTACH to all 1001 components + serialise",
        rounds,
        || {
            let cal = Calendar::parse(black_box(&bytes)).unwrap();
            edit::add_attach(&cal, None, &a).unwrap().len()
        },
    );
    measure(
        &format!("parse + add to new instance {new_rid} + serialise"),
        rounds,
        || {
            let cal = Calendar::parse(black_box(&bytes)).unwrap();
            edit::add_attach(&cal, Some(&new_instance), &a)
                .unwrap()
                .len()
        },
    );
    measure("parse + distinct_managed_ids + attach_refs", rounds, || {
        let cal = Calendar::parse(black_box(&bytes)).unwrap();
        cal.distinct_managed_ids().len() + cal.attach_refs("https://cal.example.com/").len()
    });
}
