//! `calattach attach …` (the client) against the real calattach in front of real
//! Radicale: add, list, get, update, remove, credentials from flags, the environment
//! and a netrc file, and refusals explained from their RFC 8607 §3.11 bodies. The round
//! trip runs on every upstream; the credential and refusal cases concern the client
//! and calattach only, so they run on Radicale.

use crate::harness::calattach::{run_to_exit, Exit};
use crate::harness::{Calattach, Kind, Storage, Upstream};
use crate::transparency::on_each;
use std::path::Path;

const USER: &str = "user1";

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 253) as u8).collect()
}

/// `calattach attach <args>` with `CALDAV_USER`/`CALDAV_PASSWORD` set.
fn attach(cwd: &Path, up: &Upstream, args: &[&str]) -> Exit {
    let mut all = vec!["attach"];
    all.extend_from_slice(args);
    run_to_exit(
        cwd,
        &all,
        &[
            ("CALDAV_USER", USER),
            ("CALDAV_PASSWORD", up.password(USER)),
            ("NETRC", "/nonexistent"),
        ],
    )
}

fn ok(what: &str, out: Exit, proxy: &Calattach) -> String {
    assert_eq!(
        out.code,
        Some(0),
        "{what}: stdout:\n{}\nstderr:\n{}\ncalattach:\n{}",
        out.stdout,
        out.stderr,
        proxy.stderr()
    );
    out.stdout
}

async fn new_event(up: &Upstream, proxy: &Calattach) -> String {
    let cal = up.new_calendar(USER, "client").await;
    let href = format!("{cal}{}.ics", crate::harness::unique("ev"));
    let uid = crate::harness::unique("uid");
    up.put_event(
        USER,
        &href,
        &crate::transparency::event(&uid, "Client check", "20261201T100000Z"),
    )
    .await;
    proxy.url(&href)
}

async fn round_trip(kind: Kind) {
    let up = Upstream::get(kind);
    let proxy = Calattach::start(up, Storage::Local, "");
    let event = new_event(up, &proxy).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("Agenda Ü.pdf");
    let body = payload(300_000);
    std::fs::write(&file, &body).expect("write file");

    let out = ok(
        "add",
        attach(dir.path(), up, &["add", &event, &file.to_string_lossy()]),
        &proxy,
    );
    let mut fields = out.trim().split('\t');
    let id = fields.next().unwrap_or_default().to_string();
    let location = fields.next().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "add printed no managed id: {out:?}");
    assert!(location.starts_with(&proxy.origin()), "{out:?}");

    let listed = ok("list", attach(dir.path(), up, &["list", &event]), &proxy);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 1, "{listed}");
    let cols: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(cols[0], id, "{listed}");
    assert_eq!(cols[1], body.len().to_string(), "{listed}");
    assert_eq!(cols[2], "application/pdf", "{listed}");
    assert_eq!(cols[3], "Agenda Ü.pdf", "{listed}");
    assert_eq!(cols[5], location, "{listed}");

    let downloaded = dir.path().join("out.pdf");
    ok(
        "get",
        attach(
            dir.path(),
            up,
            &["get", &location, "-o", &downloaded.to_string_lossy()],
        ),
        &proxy,
    );
    assert!(
        std::fs::read(&downloaded).expect("downloaded file") == body,
        "downloaded bytes differ"
    );

    let replacement = dir.path().join("v2.txt");
    std::fs::write(&replacement, b"second version\n").expect("write file");
    let new_id = ok(
        "update",
        attach(
            dir.path(),
            up,
            &["update", &event, &id, &replacement.to_string_lossy()],
        ),
        &proxy,
    );
    let new_id = new_id.trim().to_string();
    assert!(
        !new_id.is_empty() && new_id != id,
        "update printed {new_id:?}"
    );
    let listed = ok("list", attach(dir.path(), up, &["list", &event]), &proxy);
    assert!(
        listed.starts_with(&format!("{new_id}\t15\ttext/plain\tv2.txt\t")),
        "{listed}"
    );

    ok(
        "remove",
        attach(dir.path(), up, &["remove", &event, &new_id]),
        &proxy,
    );
    let listed = ok("list", attach(dir.path(), up, &["list", &event]), &proxy);
    assert_eq!(listed, "", "attachments left after remove");
}

on_each!(round_trip: add_list_get_update_remove_round_trip);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_upload_is_explained_from_the_precondition_body() {
    let up = Upstream::radicale();
    let proxy = Calattach::start(
        up,
        Storage::Local,
        "[attachments]\nmax_attachment_size = \"1KiB\"\n",
    );
    let event = new_event(up, &proxy).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("big.bin");
    std::fs::write(&file, payload(4096)).expect("write file");
    let out = attach(dir.path(), up, &["add", &event, &file.to_string_lossy()]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("403 Forbidden: attachment too large (CALDAV:max-attachment-size)"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_managed_id_and_missing_credentials_are_named() {
    let up = Upstream::radicale();
    let proxy = Calattach::start(up, Storage::Local, "");
    let event = new_event(up, &proxy).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let out = attach(dir.path(), up, &["remove", &event, "no-such-id"]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("no attachment with this managed id")
            && out.stderr.contains("CALDAV:valid-managed-id"),
        "{}",
        out.stderr
    );

    let anonymous = run_to_exit(
        dir.path(),
        &["attach", "list", &event],
        &[("NETRC", "/nonexistent")],
    );
    assert_eq!(anonymous.code, Some(1), "{}", anonymous.stdout);
    assert!(
        anonymous.stderr.contains("401") && anonymous.stderr.contains("--user"),
        "{}",
        anonymous.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_a_netrc_file() {
    let up = Upstream::radicale();
    let proxy = Calattach::start(up, Storage::Local, "");
    let event = new_event(up, &proxy).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let netrc = dir.path().join("netrc");
    std::fs::write(
        &netrc,
        format!(
            "machine elsewhere.example login x password y\n\
             machine 127.0.0.1 login {USER} password {}\n",
            up.password(USER)
        ),
    )
    .expect("write netrc");
    let out = run_to_exit(
        dir.path(),
        &[
            "attach",
            "--netrc",
            &netrc.to_string_lossy(),
            "list",
            &event,
        ],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "");
}
