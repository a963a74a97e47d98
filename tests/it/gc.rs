//! `calattach gc` (DESIGN §4 invariant, §8; src/gc.rs): a dry run changes nothing, two
//! runs in parallel both succeed and leave exactly what is referenced, and without a
//! service credential pending attachments are reported and kept.
//!
//! Each test builds the four kinds of leftovers gc handles on a real Radicale through
//! a [`Lab`] (faults.rs): a tombstone (an attachment removed), a pending attachment
//! the object does not reference (its commit PUT never reached the upstream), a
//! pending one it does reference (the commit was applied, its answer lost), and an
//! orphan blob (a blob without metadata, written directly into the store).

use crate::attach::Backend;
use crate::faults::{File, Lab};
use crate::harness::faultproxy::{Action, Release};
use crate::harness::Kind;
use std::collections::BTreeSet;
use std::time::Duration;

/// What one scenario left behind, by id.
struct Leftovers {
    href: String,
    live: BTreeSet<String>,
    tombstones: BTreeSet<String>,
    unreferenced: BTreeSet<String>,
    referenced: BTreeSet<String>,
    orphans: BTreeSet<String>,
    files: Vec<File>,
}

impl Leftovers {
    fn all_ids(&self) -> BTreeSet<String> {
        [
            &self.live,
            &self.tombstones,
            &self.unreferenced,
            &self.referenced,
            &self.orphans,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }

    /// What must remain after a full gc: everything the object references.
    fn kept(&self) -> BTreeSet<String> {
        self.live.union(&self.referenced).cloned().collect()
    }
}

/// Adds `file`, asserting 201; returns the id.
async fn add(lab: &Lab, href: &str, file: &File) -> String {
    let reply = lab
        .upload(href, "action=attachment-add", &file.name, &file.bytes)
        .send()
        .await;
    assert_eq!(reply.status, 201, "{reply:?}\n{}", lab.stderr());
    reply.header("cal-managed-id").expect("id").to_string()
}

/// An add whose commit PUT is held by the fault proxy: `applied` lets the upstream
/// apply it (its answer is then lost), otherwise it never arrives. Either way the
/// client gets 504 and the id stays pending. Returns the new pending id.
async fn lost_commit(lab: &Lab, href: &str, file: &File, applied: bool) -> String {
    let before = lab.blob_ids();
    let action = if applied {
        Action::HoldResponse
    } else {
        Action::HoldRequest
    };
    let mut trigger = lab.upstream_fp.on(&format!("PUT {href} "), action);
    let reply = lab
        .upload(href, "action=attachment-add", &file.name, &file.bytes)
        .send_with_timeout(Duration::from_secs(30))
        .await;
    assert_eq!(reply.status, 504, "{reply:?}\n{}", lab.stderr());
    if applied {
        trigger.answered(Duration::from_secs(1)).await;
    } else {
        trigger.passed(Duration::from_secs(1)).await;
    }
    trigger.release(Release::Drop);
    let new: Vec<String> = lab.blob_ids().difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "{:?}", lab.keys());
    new.into_iter().next().expect("one")
}

/// A blob without metadata, as a crash between the blob write and the metadata write
/// leaves it (local storage: written directly into the directory).
fn orphan_blob(lab: &Lab, n: u8) -> String {
    let id = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([n; 16])
    };
    let path = lab.dir().join("data/blobs").join(&id);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, b"orphan bytes").expect("write orphan");
    id
}

/// `n` of each kind of leftover on one event (local storage).
async fn leftovers(lab: &Lab, n: usize) -> Leftovers {
    let href = lab.new_event("Leftovers").await;
    let mut out = Leftovers {
        href: href.clone(),
        live: BTreeSet::new(),
        tombstones: BTreeSet::new(),
        unreferenced: BTreeSet::new(),
        referenced: BTreeSet::new(),
        orphans: BTreeSet::new(),
        files: Vec::new(),
    };
    for i in 0..n {
        let kept = File::new(&format!("kept{i}.txt"), 100 + i);
        out.live.insert(add(lab, &href, &kept).await);
        out.files.push(kept);

        let gone = File::new(&format!("gone{i}.txt"), 200 + i);
        let id = add(lab, &href, &gone).await;
        let reply = lab
            .post(&href, &format!("action=attachment-remove&managed-id={id}"))
            .send()
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
        out.tombstones.insert(id);

        let lost = File::new(&format!("lost{i}.txt"), 300 + i);
        out.unreferenced
            .insert(lost_commit(lab, &href, &lost, false).await);

        let late = File::new(&format!("late{i}.txt"), 400 + i);
        out.referenced
            .insert(lost_commit(lab, &href, &late, true).await);
        out.files.push(late);

        out.orphans.insert(orphan_blob(lab, i as u8 + 1));
    }
    assert_eq!(lab.blob_ids(), out.all_ids(), "setup");
    out
}

/// `--dry-run` names every action it would take — delete the tombstone, delete the
/// unreferenced pending id, promote the referenced one, delete the orphan blob — and
/// leaves the store byte-for-byte as it was (same keys); the real run then does it.
async fn dry_run(kind: Kind) {
    let lab = Lab::start_kind(kind, Backend::Local, "").await;
    let left = leftovers(&lab, 1).await;
    let before = lab.keys();
    let exit = lab.gc(&["--dry-run"]);
    assert_eq!(exit.code, Some(0), "{}\n{}", exit.stdout, exit.stderr);
    let out = exit.stdout;
    for id in &left.tombstones {
        assert!(
            out.contains(&format!("would delete tombstone {id}")),
            "{out}"
        );
    }
    for id in &left.unreferenced {
        assert!(out.contains(&format!("would delete pending {id}")), "{out}");
    }
    for id in &left.referenced {
        assert!(
            out.contains(&format!("would promote pending {id}")),
            "{out}"
        );
    }
    for id in &left.orphans {
        assert!(
            out.contains(&format!("would delete orphan blob {id}")),
            "{out}"
        );
    }
    assert!(out.contains("gc (dry run): 1 tombstones, 1 pending and 1 orphan blobs deleted; 0 interrupted uploads cleared; 1 pending promoted, 0 left; 0 errors"), "{out}");
    assert_eq!(lab.keys(), before, "the dry run changed the store");

    let out = lab.gc_ok();
    assert!(out.contains("gc: 1 tombstones, 1 pending and 1 orphan blobs deleted; 0 interrupted uploads cleared; 1 pending promoted, 0 left; 0 errors"), "{out}");
    let files: std::collections::BTreeMap<String, Vec<u8>> = left
        .files
        .iter()
        .map(|f| (f.name.clone(), f.bytes.clone()))
        .collect();
    let referenced = lab.assert_object_sound(&left.href, &files).await;
    assert_eq!(referenced, left.kept());
    lab.assert_store_holds_exactly(&referenced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_every_action_and_changes_nothing() {
    dry_run(Kind::Radicale).await;
}

/// The same on Baïkal: gc reads the objects with its service credential at the
/// object's own path (under `/dav.php/`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_every_action_and_changes_nothing_on_baikal() {
    let name = "gc::dry_run_reports_every_action_and_changes_nothing_on_baikal";
    if crate::harness::upstream::usable(Kind::Baikal, name) {
        dry_run(Kind::Baikal).await;
    }
}

/// `--older-than` overrides `gc.retention`: a tombstone younger than it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_than_keeps_younger_tombstones() {
    let lab = Lab::start(Backend::Local, "").await;
    let href = lab.new_event("Retention").await;
    let id = add(&lab, &href, &File::new("young.txt", 10)).await;
    let reply = lab
        .post(&href, &format!("action=attachment-remove&managed-id={id}"))
        .send()
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let exit = lab.gc(&["--older-than", "1h"]);
    assert_eq!(exit.code, Some(0), "{}\n{}", exit.stdout, exit.stderr);
    assert!(exit.stdout.contains("gc: 0 tombstones"), "{}", exit.stdout);
    assert_eq!(lab.blob_ids(), BTreeSet::from([id.clone()]));
    let exit = lab.gc(&["--older-than", "0"]);
    assert_eq!(exit.code, Some(0), "{}\n{}", exit.stdout, exit.stderr);
    assert!(
        exit.stdout.contains(&format!("deleted tombstone {id}")),
        "{}",
        exit.stdout
    );
    assert_eq!(lab.blob_ids(), BTreeSet::new(), "{:?}", lab.keys());
}

/// Two gc processes started together over the same store (three of each leftover):
/// both exit 0 with no error, every deletable thing is gone, each was reported
/// deleted by at least one of them, nothing referenced was touched, and the
/// referenced pending ids are live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gc_runs_in_parallel_both_succeed_and_delete_everything_once() {
    let lab = Lab::start(Backend::Local, "").await;
    let left = leftovers(&lab, 3).await;
    let dirs = [
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    ];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| lab.gc_in(dirs[0].path(), &[]));
        let b = s.spawn(|| lab.gc_in(dirs[1].path(), &[]));
        (a.join().expect("gc a"), b.join().expect("gc b"))
    });
    for exit in [&a, &b] {
        assert_eq!(exit.code, Some(0), "{}\n{}", exit.stdout, exit.stderr);
        assert!(exit.stdout.contains("; 0 errors"), "{}", exit.stdout);
        assert!(!exit.stdout.contains("error:"), "{}", exit.stdout);
    }
    let both = format!("{}{}", a.stdout, b.stdout);
    for id in &left.tombstones {
        assert!(both.contains(&format!("deleted tombstone {id}")), "{both}");
    }
    for id in &left.unreferenced {
        assert!(both.contains(&format!("deleted pending {id}")), "{both}");
    }
    for id in &left.orphans {
        assert!(
            both.contains(&format!("deleted orphan blob {id}")),
            "{both}"
        );
    }
    for id in left.kept() {
        assert!(!both.contains(&format!("deleted pending {id}")), "{both}");
    }
    let files: std::collections::BTreeMap<String, Vec<u8>> = left
        .files
        .iter()
        .map(|f| (f.name.clone(), f.bytes.clone()))
        .collect();
    let referenced = lab.assert_object_sound(&left.href, &files).await;
    assert_eq!(referenced, left.kept());
    lab.assert_store_holds_exactly(&referenced);
}

/// Without `gc.username` gc cannot prove a pending id unreferenced: it reports each
/// one as left (naming the missing credentials), keeps its blob, and still deletes
/// tombstones; it exits 0 (leaving is not an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_gc_leaves_pending_ids_and_says_so() {
    let lab = Lab::start(Backend::Local, "[gc]\nusername = \"\"\npassword = \"\"\n").await;
    let href = lab.new_event("No credentials").await;
    let lost = lost_commit(&lab, &href, &File::new("lost.txt", 50), false).await;
    let late = lost_commit(&lab, &href, &File::new("late.txt", 60), true).await;
    let gone = add(&lab, &href, &File::new("gone.txt", 70)).await;
    let reply = lab
        .post(
            &href,
            &format!("action=attachment-remove&managed-id={gone}"),
        )
        .send()
        .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let out = lab.gc_ok();
    assert!(
        out.contains(&format!("left pending {lost}")) && out.contains("no gc credentials"),
        "{out}"
    );
    // `late` was committed upstream; the later attachment POSTs to the same object
    // reconciled it (promoted to live), so gc has nothing to decide about it.
    assert!(!out.contains(&late.to_string()), "{out}");
    assert!(
        out.contains("0 pending promoted, 1 left; 0 errors"),
        "{out}"
    );
    assert!(out.contains(&format!("deleted tombstone {gone}")), "{out}");
    assert_eq!(
        lab.blob_ids(),
        BTreeSet::from([lost, late]),
        "{:?}",
        lab.keys()
    );
}

/// With credentials the upstream refuses, pending ids are left too, with the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_refused_credentials_gc_leaves_pending_ids_and_names_the_status() {
    let lab = Lab::start(
        Backend::Local,
        "[gc]\nusername = \"user2\"\npassword = \"wrong\"\n",
    )
    .await;
    let href = lab.new_event("Refused credentials").await;
    let lost = lost_commit(&lab, &href, &File::new("lost.txt", 50), false).await;
    let out = lab.gc_ok();
    assert!(
        out.contains(&format!("left pending {lost}")) && out.contains("answered 401"),
        "{out}"
    );
    assert_eq!(lab.blob_ids(), BTreeSet::from([lost]));
}
