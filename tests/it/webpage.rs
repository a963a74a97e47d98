//! The attachment web page (src/web) in real headless Chromium, driven through
//! WebDriver (Debian's `chromium` and `chromium-driver`), against calattach in front of
//! Radicale: sign in through the upstream's Basic challenge, pick the calendar and an
//! event, upload two files, download one, replace one, remove one — with the event's
//! `ATTACH` lines read directly from Radicale after each step.
//!
//! Without Chromium the browser tests print why they were skipped, unless
//! `CALATTACH_REQUIRE_BROWSER=1` (set by `.ci/run`), which makes them fail instead.
//! `WEBPAGE_SCREENSHOTS=<dir>` saves screenshots of the main states there (the ones in
//! `docs/img/` come from `WEBPAGE_SCREENSHOTS=docs/img`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client as Driver, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::attach::{master, Prop};
use crate::harness::process::{port_open, Proc};
use crate::harness::{Calattach, Client, Storage, Upstream};

const USER: &str = "user3";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Headless Chromium under chromedriver, with a fresh profile and download directory.
struct Browser {
    driver: Driver,
    _chromedriver: Proc,
    dir: tempfile::TempDir,
}

impl Browser {
    /// `None` (after saying why) when Chromium is not installed and not required.
    async fn start() -> Option<Browser> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            let why = format!(
                "{} not installed (apt-get install chromium chromium-driver)",
                missing.join(" and ")
            );
            if std::env::var("CALATTACH_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("browser test cannot run: {why}; CALATTACH_REQUIRE_BROWSER=1");
            }
            eprintln!("skipped: browser test: {why}");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("calattach-browser-")
            .tempdir()
            .expect("tempdir");
        let profile = dir.path().join("profile");
        let downloads = dir.path().join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads dir");
        let port = crate::harness::free_port();
        let mut chromedriver = Proc::spawn(
            "chromedriver",
            dir.path(),
            Path::new(CHROMEDRIVER),
            &[&format!("--port={port}"), "--allowed-ips=127.0.0.1"],
            &[],
        );
        chromedriver.wait_ready(Duration::from_secs(20), || port_open(port));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1000,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        let driver = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start a Chromium session: {e}\nchromedriver:\n{}",
                    chromedriver.stderr()
                )
            });
        Some(Browser {
            driver,
            _chromedriver: chromedriver,
            dir,
        })
    }

    fn downloads(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    async fn js(&self, script: &str) -> Value {
        self.driver
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `expr` (a JavaScript expression) until it is truthy; panics with the
    /// page's status line and `what` after 30 s.
    async fn until(&self, what: &str, expr: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let script = format!("return ({expr});");
        loop {
            let v = self.js(&script).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let status = self
                    .js("return document.getElementById('status').textContent + ' | account: ' + document.getElementById('account').textContent + ' | calendars: ' + Array.from(document.querySelectorAll('#calendar option')).map(o => o.textContent).join(', ') + ' | events: ' + document.getElementById('events').textContent + ' | uploads: ' + document.getElementById('uploads').textContent")
                    .await;
                panic!("timed out waiting for {what}; page says: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        self.driver
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("no element {selector}: {e}"))
    }

    async fn shot(&self, name: &str) {
        let Some(dir) = std::env::var_os("WEBPAGE_SCREENSHOTS") else {
            return;
        };
        let dir = crate::harness::repo_root().join(dir);
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let png = self.driver.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("webpage-{name}.png")), png).expect("write screenshot");
    }

    async fn close(self) {
        let _ = self.driver.close().await;
    }
}

/// The event's `ATTACH` lines as Radicale stores them (read directly, not through
/// calattach): `(FILENAME, MANAGED-ID, SIZE)`, sorted by file name.
async fn upstream_attaches(up: &Upstream, href: &str) -> Vec<(String, String, String)> {
    let reply = Client::new()
        .request("GET", &up.url(href))
        .basic(USER, up.password(USER))
        .send()
        .await;
    assert_eq!(
        reply.status.as_u16(),
        200,
        "GET {href} on radicale: {reply:?}"
    );
    let ics = reply.text();
    let mut out: Vec<(String, String, String)> = master(&ics)
        .attaches()
        .iter()
        .map(|p: &&Prop| {
            (
                p.param("FILENAME").unwrap_or_default().to_string(),
                p.param("MANAGED-ID").unwrap_or_default().to_string(),
                p.param("SIZE").unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn names(attaches: &[(String, String, String)]) -> Vec<&str> {
    attaches.iter().map(|a| a.0.as_str()).collect()
}

/// Sets the calendar's `DAV:displayname` (directly on the upstream).
async fn name_calendar(up: &Upstream, path: &str, name: &str) {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><D:propertyupdate xmlns:D=\"DAV:\">\
         <D:set><D:prop><D:displayname>{name}</D:displayname></D:prop></D:set></D:propertyupdate>"
    );
    let reply = Client::new()
        .request("PROPPATCH", &up.url(path))
        .basic(USER, up.password(USER))
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(body)
        .send()
        .await;
    assert_eq!(reply.status.as_u16(), 207, "PROPPATCH {path}: {reply:?}");
}

/// A date a year from now, as an iCalendar UTC date-time: always "upcoming".
fn next_year() -> String {
    let t = chrono::Utc::now() + chrono::Duration::days(365);
    t.format("%Y%m%dT100000Z").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_page_signs_in_uploads_downloads_replaces_and_removes_in_chromium() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let up = Upstream::radicale();
    let proxy = Calattach::start(up, Storage::Local, "");
    let calendar = up.new_calendar(USER, "web").await;
    name_calendar(up, &calendar, "Team").await;
    let href = format!("{calendar}{}.ics", crate::harness::unique("ev"));
    let summary = "Project kick-off";
    up.put_event(
        USER,
        &href,
        &crate::transparency::event(&crate::harness::unique("uid"), summary, &next_year()),
    )
    .await;
    // A second, earlier event: the list is ordered earliest first.
    let earlier = chrono::Utc::now() + chrono::Duration::days(30);
    up.put_event(
        USER,
        &format!("{calendar}{}.ics", crate::harness::unique("ev")),
        &crate::transparency::event(
            &crate::harness::unique("uid"),
            "Team lunch",
            &earlier.format("%Y%m%dT120000Z").to_string(),
        ),
    )
    .await;

    let files = tempfile::tempdir().expect("tempdir");
    let agenda: Vec<u8> = (0..200_000).map(|i| (i * 31 % 251) as u8).collect();
    let notes = b"Notes for the kick-off\n".to_vec();
    let minutes = b"Minutes, second version\n".to_vec();
    for (name, bytes) in [
        ("agenda.pdf", &agenda),
        ("notes.txt", &notes),
        ("minutes.txt", &minutes),
    ] {
        std::fs::write(files.path().join(name), bytes).expect("write file");
    }
    let d = &browser.driver;
    if std::env::var_os("WEBPAGE_SCREENSHOTS").is_some() {
        d.set_window_size(1000, 1100).await.expect("resize");
    }

    // Sign-in: the browser answers the upstream's Basic challenge with the credentials
    // of the first URL (as after a password prompt) and reuses them, for the same realm,
    // on the page's own requests; the page itself never handles the password.
    let origin = proxy.origin();
    let with_credentials = origin.replacen(
        "http://",
        &format!("http://{USER}:{}@", up.password(USER)),
        1,
    );
    d.goto(&format!("{with_credentials}/{USER}/"))
        .await
        .expect("open the calendar home with credentials");
    d.goto(&format!("{origin}/.attachments/"))
        .await
        .expect("open the page");
    let value = browser
        .until(
            "the calendar list",
            &format!(
                "(document.querySelector('#calendar option[data-href=\"{calendar}\"]') || {{}}).value"
            ),
        )
        .await;
    let account = browser.js("return document.getElementById('account').textContent").await;
    assert_eq!(account, json!(format!("Signed in as {USER}")));
    browser
        .css("#calendar")
        .await
        .select_by_value(value.as_str().unwrap())
        .await
        .expect("choose the calendar");
    browser
        .until(
            "both events in the list",
            "document.querySelectorAll('#events button').length === 2",
        )
        .await;
    let titles = browser
        .js("return Array.from(document.querySelectorAll('#events .title')).map(e => e.textContent)")
        .await;
    assert_eq!(titles, json!(["Team lunch", summary]), "earliest first");

    // Search by title.
    browser
        .css("#q")
        .await
        .send_keys("kick")
        .await
        .expect("type");
    browser
        .css("#search-button")
        .await
        .click()
        .await
        .expect("search");
    browser
        .until(
            "the search result",
            "document.querySelectorAll('#events button').length === 1",
        )
        .await;
    browser
        .css("#events button")
        .await
        .click()
        .await
        .expect("open the event");
    browser
        .until(
            "the event",
            &format!("document.getElementById('event-title').textContent === '{summary}' && !document.getElementById('event-section').hidden"),
        )
        .await;
    assert!(upstream_attaches(up, &href).await.is_empty());

    // Two files at once.
    let paths = format!(
        "{}\n{}",
        files.path().join("agenda.pdf").display(),
        files.path().join("notes.txt").display()
    );
    browser
        .css("#add-files")
        .await
        .send_keys(&paths)
        .await
        .expect("pick two files");
    browser
        .until(
            "two finished uploads",
            "Array.from(document.querySelectorAll('#uploads li')).filter(l => l.dataset.state === 'done').length === 2",
        )
        .await;
    browser
        .until(
            "two attachments listed",
            "document.querySelectorAll('#attachments li').length === 2",
        )
        .await;
    let upstream = upstream_attaches(up, &href).await;
    assert_eq!(
        names(&upstream),
        ["agenda.pdf", "notes.txt"],
        "{upstream:?}"
    );
    assert_eq!(upstream[0].2, agenda.len().to_string());
    let listed = browser
        .js("return Array.from(document.querySelectorAll('#attachments li')).map(l => [l.dataset.filename, l.dataset.managedId, l.querySelector('.meta').textContent])")
        .await;
    for (name, id, _) in &upstream {
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l[0] == json!(name) && l[1] == json!(id)),
            "{name} {id} not listed: {listed}"
        );
    }
    assert!(
        listed.to_string().contains("195 KiB · application/pdf"),
        "{listed}"
    );
    browser
        .js("document.getElementById('event-section').scrollIntoView(); return null")
        .await;
    browser.shot("event").await;

    // Download: the link, clicked, saves the same bytes.
    browser
        .css("#attachments li[data-filename='agenda.pdf'] a")
        .await
        .click()
        .await
        .expect("click the download link");
    let saved = browser.downloads().join("agenda.pdf");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(saved.exists() && std::fs::read(&saved).map(|b| b.len()).unwrap_or(0) == agenda.len()) {
        assert!(
            Instant::now() < deadline,
            "no download at {} ({:?})",
            saved.display(),
            std::fs::read_dir(browser.downloads()).map(|d| d.count())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::fs::read(&saved).unwrap() == agenda,
        "downloaded bytes differ"
    );

    // Replace notes.txt with minutes.txt.
    let old_id = upstream[1].1.clone();
    browser
        .css("#attachments li[data-filename='notes.txt'] input.replace-input")
        .await
        .send_keys(&files.path().join("minutes.txt").display().to_string())
        .await
        .expect("pick the replacement");
    browser
        .until(
            "the replacement listed",
            "!!document.querySelector(\"#attachments li[data-filename='minutes.txt']\") && !document.querySelector(\"#attachments li[data-filename='notes.txt']\")",
        )
        .await;
    let upstream = upstream_attaches(up, &href).await;
    assert_eq!(
        names(&upstream),
        ["agenda.pdf", "minutes.txt"],
        "{upstream:?}"
    );
    assert_ne!(upstream[1].1, old_id, "the update issues a new managed id");
    assert_eq!(upstream[1].2, minutes.len().to_string());

    // Remove agenda.pdf, after the confirmation.
    browser
        .css("#attachments li[data-filename='agenda.pdf'] button.remove")
        .await
        .click()
        .await
        .expect("remove");
    browser
        .until(
            "the confirmation",
            "document.getElementById('confirm').open",
        )
        .await;
    browser.shot("confirm").await;
    browser
        .css("#confirm-ok")
        .await
        .click()
        .await
        .expect("confirm");
    browser
        .until(
            "one attachment left",
            "document.querySelectorAll('#attachments li').length === 1",
        )
        .await;
    let upstream = upstream_attaches(up, &href).await;
    assert_eq!(names(&upstream), ["minutes.txt"], "{upstream:?}");

    // Phone width: the same page in one column.
    if std::env::var_os("WEBPAGE_SCREENSHOTS").is_some() {
        d.set_window_size(390, 844).await.expect("resize");
        browser.shot("phone").await;
    }
    browser.close().await;
}
