//! Attachment uploads in progress (src/store.rs `put_blob`, src/gc.rs): memory per upload,
//! the S3 upload-buffer budget, and what a crashed upload leaves behind.
//!
//! * Local storage writes each upload to its staging file as it arrives: 32 uploads at
//!   once keep calattach's peak RSS under 96 MiB, and every one is stored exactly.
//! * On S3, part buffers come from `storage.upload_buffer`: an upload that finds no room
//!   is refused with 503 and `Retry-After` rather than exceeding it.
//! * Every upload is recorded in `uploads/<id>.json` while it runs. After `SIGKILL`
//!   mid-upload, a restart notes the leftover and `calattach gc` deletes the staging
//!   file or aborts the multipart upload; an upload still running is left alone; two gc
//!   runs at once clear each leftover once.

use crate::attach::{Backend, Env};
use crate::faults::{File, Lab};
use crate::harness::calattach::run_to_exit;
use crate::harness::seaweedfs::SeaweedFs;
use crate::harness::{Calattach, Client, Kind, Storage, Upstream};
use bytes::Bytes;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const MIB: usize = 1024 * 1024;

/// A request body fed through a channel: the test decides when each piece goes.
fn channel_body() -> (
    mpsc::UnboundedSender<Bytes>,
    impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let body =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
        );
    (tx, body)
}

/// Sends `bytes` in 64 KiB pieces.
fn send_all(tx: &mpsc::UnboundedSender<Bytes>, bytes: &[u8]) {
    for piece in bytes.chunks(64 * 1024) {
        tx.send(Bytes::copy_from_slice(piece))
            .expect("upload still open");
    }
}

/// Starts an add to `href` whose body comes from the returned sender; the task ends with
/// calattach's answer (`None` when the connection broke).
fn start_upload(
    lab: &Lab,
    href: &str,
    name: &str,
) -> (
    mpsc::UnboundedSender<Bytes>,
    tokio::task::JoinHandle<Option<crate::harness::Reply>>,
) {
    let (tx, body) = channel_body();
    let request = lab
        .post(href, "action=attachment-add")
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Disposition",
            format!("attachment; filename=\"{name}\""),
        )
        .stream(body);
    let task = tokio::spawn(async move { request.try_send(Duration::from_secs(120)).await.ok() });
    (tx, task)
}

/// Waits until `ready` holds for the lab's store (10 s).
async fn wait_for(lab: &Lab, what: &str, ready: impl Fn(&Lab) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready(lab) {
        assert!(
            Instant::now() < deadline,
            "{what} never happened\nkeys: {:?}\n{}",
            lab.keys(),
            lab.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn records(lab: &Lab) -> Vec<String> {
    lab.keys()
        .into_iter()
        .filter(|k| k.starts_with("uploads/"))
        .collect()
}

fn staging_files(lab: &Lab) -> Vec<String> {
    lab.keys()
        .into_iter()
        .filter(|k| k.starts_with("blobs/") && k.contains('#'))
        .collect()
}

/// What an interrupted upload leaves: its record, and its staging file (local) or an
/// incomplete multipart upload (S3).
fn leftover_count(lab: &Lab, backend: Backend) -> usize {
    match backend {
        Backend::Local => staging_files(lab).len(),
        Backend::S3 => lab.incomplete_uploads(),
    }
}

/// Starts `n` uploads of 6 MiB (more than one S3 part) that then stall, and waits until
/// each has its record and its staging file or multipart upload with data in it.
async fn stalled_uploads(
    lab: &Lab,
    backend: Backend,
    n: usize,
) -> Vec<(
    mpsc::UnboundedSender<Bytes>,
    tokio::task::JoinHandle<Option<crate::harness::Reply>>,
)> {
    let mut uploads = Vec::new();
    for i in 0..n {
        let href = lab.new_event(&format!("stalled {i}")).await;
        let file = File::new(&format!("stalled-{i}.bin"), 6 * MIB);
        let (tx, task) = start_upload(lab, &href, &file.name);
        send_all(&tx, &file.bytes);
        uploads.push((tx, task));
    }
    wait_for(lab, "records and data of every upload", |lab| {
        records(lab).len() == n && leftover_count(lab, backend) == n
    })
    .await;
    // The first part (S3) or the first writes (local) are in the store by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    uploads
}

async fn sigkill_mid_upload_then_gc_leaves_nothing(backend: Backend) {
    let mut lab = Lab::start(backend, "").await;
    let uploads = stalled_uploads(&lab, backend, 1).await;
    lab.kill();
    drop(uploads);
    assert_eq!(records(&lab).len(), 1, "the record survives the crash");
    assert_eq!(leftover_count(&lab, backend), 1, "{:?}", lab.keys());

    lab.restart();
    wait_for(&lab, "the start noting the leftover", |lab| {
        lab.stderr()
            .contains("interrupted upload left data in storage")
    })
    .await;
    let dry = lab.gc(&["--dry-run"]);
    assert_eq!(dry.code, Some(0), "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("would clear interrupted upload")
            && dry.stdout.contains("1 interrupted uploads cleared"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        leftover_count(&lab, backend),
        1,
        "a dry run changed the store"
    );

    let out = lab.gc_ok();
    assert!(
        out.contains("cleared interrupted upload") && out.contains("1 interrupted uploads cleared"),
        "{out}"
    );
    assert_eq!(lab.keys(), Vec::<String>::new(), "the store after gc");
    assert_eq!(lab.incomplete_uploads(), 0, "incomplete multipart uploads");
}

/// Killed while its staging file is half written: gc deletes it (and its record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_gc_deletes_the_staging_file_local() {
    sigkill_mid_upload_then_gc_leaves_nothing(Backend::Local).await
}

/// Killed with a multipart upload in progress: gc aborts it through the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_gc_aborts_the_multipart_upload_s3() {
    sigkill_mid_upload_then_gc_leaves_nothing(Backend::S3).await
}

async fn upload_running_during_gc_is_untouched_and_completes(backend: Backend) {
    let lab = Lab::start(backend, "").await;
    let href = lab.new_event("running").await;
    let file = File::new("running.bin", 9 * MIB + 5);
    let (tx, task) = start_upload(&lab, &href, &file.name);
    send_all(&tx, &file.bytes[..6 * MIB]);
    wait_for(&lab, "the upload's record and data", |lab| {
        records(lab).len() == 1 && leftover_count(lab, backend) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // pending_grace is 0: only the owner process, alive on this host, protects it.
    let out = lab.gc_ok();
    assert!(out.contains("still running"), "{out}");
    assert!(out.contains("0 interrupted uploads cleared"), "{out}");
    assert_eq!(records(&lab).len(), 1);
    assert_eq!(leftover_count(&lab, backend), 1);

    send_all(&tx, &file.bytes[6 * MIB..]);
    drop(tx);
    let reply = task.await.unwrap().expect("an answer");
    assert_eq!(reply.status, 201, "{reply:?}\n{}", lab.stderr());
    let files = [(file.name.clone(), file.bytes.clone())]
        .into_iter()
        .collect();
    let ids = lab.assert_object_sound(&href, &files).await;
    assert_eq!(ids.len(), 1);
    assert_eq!(records(&lab), Vec::<String>::new());
    assert_eq!(leftover_count(&lab, backend), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_running_during_gc_is_untouched_and_completes_local() {
    upload_running_during_gc_is_untouched_and_completes(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_running_during_gc_is_untouched_and_completes_s3() {
    upload_running_during_gc_is_untouched_and_completes(Backend::S3).await
}

async fn two_gc_runs_in_parallel_clear_each_leftover_once(backend: Backend) {
    let mut lab = Lab::start(backend, "").await;
    let uploads = stalled_uploads(&lab, backend, 3).await;
    lab.kill();
    drop(uploads);
    lab.restart();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| lab.gc_in(dirs[0].path(), &[]));
        let b = s.spawn(|| lab.gc_in(dirs[1].path(), &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    for run in [&a, &b] {
        assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    }
    let cleared = |out: &str| out.matches("cleared interrupted upload").count();
    assert_eq!(
        cleared(&a.stdout) + cleared(&b.stdout),
        3,
        "each leftover cleared once:\n{}\n---\n{}",
        a.stdout,
        b.stdout
    );
    assert_eq!(lab.keys(), Vec::<String>::new(), "the store after gc");
    assert_eq!(lab.incomplete_uploads(), 0, "incomplete multipart uploads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gc_runs_in_parallel_clear_each_interrupted_upload_once_local() {
    two_gc_runs_in_parallel_clear_each_leftover_once(Backend::Local).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gc_runs_in_parallel_clear_each_interrupted_upload_once_s3() {
    two_gc_runs_in_parallel_clear_each_leftover_once(Backend::S3).await
}

/// 32 uploads of 8 MiB at once, each sent in 64 KiB pieces spread over about two
/// seconds so that all are in flight together. Before local uploads were written as they
/// arrived, each held an 8 MiB multipart buffer (about 280 MiB for 32).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_local_uploads_keep_peak_rss_under_96_mib() {
    const UPLOADS: usize = 32;
    const LEN: usize = 8 * MIB;
    let env = Env::start(
        Kind::Radicale,
        Backend::Local,
        // One user makes all 32 uploads: its share of the upload slots is all of them.
        "[attachments]\nmax_attachment_size = \"16MiB\"\nmax_concurrent_uploads_per_user = 64\n",
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..UPLOADS {
        let href = env.new_event().await;
        let bytes = Bytes::from(crate::faults::content(&format!("rss-{i}"), LEN));
        let pieces: Vec<Bytes> = (0..LEN)
            .step_by(64 * 1024)
            .map(|at| bytes.slice(at..(at + 64 * 1024).min(LEN)))
            .collect();
        let body = futures_util::stream::unfold(pieces.into_iter(), |mut it| async move {
            let piece = it.next()?;
            tokio::time::sleep(Duration::from_millis(15)).await;
            Some((Ok::<_, std::io::Error>(piece), it))
        });
        let request = env
            .post(&href, "action=attachment-add")
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Disposition",
                format!("attachment; filename=\"f{i}.bin\""),
            )
            .header("Content-Length", LEN.to_string())
            .stream(body);
        tasks.push(tokio::spawn(async move {
            (
                request.send_with_timeout(Duration::from_secs(120)).await,
                bytes,
            )
        }));
    }
    let mut stored = Vec::new();
    for task in tasks {
        let (reply, bytes) = task.await.unwrap();
        stored.push((env.added(&reply), bytes));
    }
    let peak = env.proxy.peak_rss();
    eprintln!(
        "peak RSS with {UPLOADS} uploads at once: {} MiB",
        peak >> 20
    );
    for (added, bytes) in stored {
        let got = env.download(&added.location).await;
        assert!(got.body == bytes, "{} is not stored exactly", added.id);
    }
    assert!(
        peak < 96 << 20,
        "calattach peak RSS {} MiB >= 96 MiB with {UPLOADS} uploads at once",
        peak >> 20
    );
    assert_eq!(
        env.store_keys()
            .iter()
            .filter(|k| k.starts_with("uploads/") || k.contains('#'))
            .count(),
        0,
        "records or staging files left: {:?}",
        env.store_keys()
    );
}

/// With room for one part buffer, a second upload while the first holds it gets 503
/// with Retry-After (after waiting 5 s for room) instead of exceeding the budget; the
/// first completes and is stored exactly, and the next one is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_upload_buffer_budget_refuses_with_503_rather_than_exceeding_itself() {
    let lab = Lab::start(
        Backend::S3,
        "[storage]\npart_size = \"5MiB\"\nupload_buffer = \"5MiB\"\n",
    )
    .await;
    let href = lab.new_event("budget").await;
    let first = File::new("first.bin", 7 * MIB + 3);
    let (tx, task) = start_upload(&lab, &href, &first.name);
    send_all(&tx, &first.bytes[..6 * MIB]);
    wait_for(&lab, "the first upload's multipart upload", |lab| {
        lab.incomplete_uploads() == 1
    })
    .await;

    let other = lab.new_event("budget other").await;
    let small = File::new("small.bin", 1000);
    let started = Instant::now();
    let refused = lab
        .upload(&other, "action=attachment-add", &small.name, &small.bytes)
        .send()
        .await;
    assert_eq!(refused.status, 503, "{refused:?}\n{}", lab.stderr());
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    assert!(
        refused.text().contains("try again later"),
        "{}",
        refused.text()
    );
    assert!(started.elapsed() >= Duration::from_secs(5));

    send_all(&tx, &first.bytes[6 * MIB..]);
    drop(tx);
    let reply = task.await.unwrap().expect("an answer");
    assert_eq!(reply.status, 201, "{reply:?}\n{}", lab.stderr());
    let files = [(first.name.clone(), first.bytes.clone())]
        .into_iter()
        .collect();
    assert_eq!(lab.assert_object_sound(&href, &files).await.len(), 1);

    let accepted = lab
        .upload(&other, "action=attachment-add", &small.name, &small.bytes)
        .send()
        .await;
    assert_eq!(accepted.status, 201, "{accepted:?}");
    let files = [(small.name.clone(), small.bytes.clone())]
        .into_iter()
        .collect();
    assert_eq!(lab.assert_object_sound(&other, &files).await.len(), 1);
    assert_eq!(records(&lab), Vec::<String>::new());
}

/// The same on SeaweedFS (the S3 server docker-compose ships): killed with a multipart
/// upload in progress, restarted, `calattach gc` aborts it and nothing remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_gc_aborts_the_multipart_upload_seaweedfs() {
    let up = Upstream::radicale();
    let sw = SeaweedFs::shared();
    let (storage, bucket) = sw.storage_toml();
    let extra = format!(
        "{storage}[attachments]\nmax_attachment_size = \"32MiB\"\n\
         [gc]\nretention = \"0\"\npending_grace = \"0\"\n"
    );
    let mut proxy = Calattach::start(up, Storage::Local, &extra);
    let cal = up.new_calendar(crate::attach::USER, "uploads").await;
    let href = format!("{cal}{}.ics", crate::harness::unique("ev"));
    let uid = crate::harness::unique("uid");
    up.put_event(
        crate::attach::USER,
        &href,
        &crate::transparency::event(&uid, "Killed upload", "20261201T100000Z"),
    )
    .await;
    let (tx, body) = channel_body();
    let request = Client::new()
        .request("POST", &proxy.url(&format!("{href}?action=attachment-add")))
        .basic(crate::attach::USER, up.password(crate::attach::USER))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Disposition", "attachment; filename=\"big.bin\"")
        .stream(body);
    let task = tokio::spawn(async move { request.try_send(Duration::from_secs(60)).await.ok() });
    send_all(&tx, &crate::faults::content("seaweedfs-killed", 6 * MIB));
    let deadline = Instant::now() + Duration::from_secs(20);
    let recorded = || {
        sw.shell(&format!("fs.ls /buckets/{bucket}/uploads/"))
            .contains(".json")
    };
    while sw.incomplete_uploads(&bucket).is_empty() || !recorded() {
        assert!(
            Instant::now() < deadline,
            "no multipart upload and record\n{}",
            proxy.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.proc.signal("KILL");
    assert!(proxy.proc.wait_timeout(Duration::from_secs(10)).is_some());
    drop((tx, task));
    let left = sw.incomplete_uploads(&bucket);
    eprintln!("multipart uploads after the kill: {left:?}");
    assert_eq!(left.len(), 1, "after the kill");

    let again = Calattach::start(up, Storage::Local, &extra);
    let config = again.dir().join("proxy.toml");
    let gc = run_to_exit(again.dir(), &["gc", "-c", &config.to_string_lossy()], &[]);
    assert_eq!(gc.code, Some(0), "{}{}", gc.stdout, gc.stderr);
    assert!(
        gc.stdout.contains("1 interrupted uploads cleared"),
        "{}{}\nfirst calattach:\n{}",
        gc.stdout,
        gc.stderr,
        proxy.stderr()
    );
    assert_eq!(sw.incomplete_uploads(&bucket), Vec::<String>::new());
    let records = sw.shell(&format!("fs.ls /buckets/{bucket}/uploads/"));
    assert!(!records.contains(".json"), "records left: {records}");
}
