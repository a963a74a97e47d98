//! The attachment web page (src/web) in real headless Chromium, driven through
//! WebDriver (Debian's `chromium` and `chromium-driver`), against calattach in front
//! of Radicale (and Xandikos): sign in through the upstream's Basic challenge, pick the
//! calendar and an event, upload two files, download one, replace one, remove one,
//! drop one — with the event's `ATTACH` lines read directly from the upstream after
//! each step; refusals explained; no policy violation in the console and no request to
//! another origin.
//!
//! Without Chromium the browser tests print why they were skipped, unless
//! `TEST_REQUIRE_BROWSER=1` (set by `.ci/run`), which makes them fail instead.
//! `WEBPAGE_SCREENSHOTS=<dir>` saves screenshots of the main states there (the ones in
//! `docs/img/` come from `WEBPAGE_SCREENSHOTS=docs/img`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client as Driver, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::attach::{master, Prop};
use crate::harness::process::{port_open, Proc};
use crate::harness::{Calattach, Client, Kind, Storage, Upstream};

const USER: &str = "user3";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Headless Chromium under chromedriver, with a fresh profile and download directory.
struct Browser {
    driver: Driver,
    _chromedriver: Proc,
    dir: tempfile::TempDir,
    /// Whether `shot` saves screenshots (when `WEBPAGE_SCREENSHOTS` is set).
    shots: bool,
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
            if std::env::var("TEST_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("browser test cannot run: {why}; TEST_REQUIRE_BROWSER=1");
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
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
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
            shots: true,
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
        if !self.shots {
            return;
        }
        let dir = crate::harness::repo_root().join(dir);
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let png = self.driver.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("webpage-{name}.png")), png).expect("write screenshot");
    }

    /// The browser console's messages so far (chromedriver's log endpoint).
    async fn console(&self) -> Vec<String> {
        let entries = self
            .driver
            .issue_cmd(ConsoleLog)
            .await
            .expect("read the browser log");
        entries
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every console message the page's policy caused, and every resource it loaded
    /// from another origin: both must be empty.
    async fn assert_policy_kept(&self) {
        let refused: Vec<String> = self
            .console()
            .await
            .into_iter()
            .filter(|m| m.contains("Content Security Policy") || m.contains("Refused to"))
            .collect();
        assert!(refused.is_empty(), "policy violations: {refused:?}");
        let foreign = self
            .js("return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin + '/'))")
            .await;
        assert_eq!(foreign, json!([]), "requests to other origins");
    }

    async fn close(self) {
        let _ = self.driver.close().await;
    }
}

/// chromedriver's `POST /session/{id}/se/log` for the `browser` log.
#[derive(Debug)]
struct ConsoleLog;

impl fantoccini::wd::WebDriverCompatibleCommand for ConsoleLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_string()),
        )
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
    round_trip(Upstream::radicale()).await
}

/// The same on Xandikos, whose calendar home is not the principal
/// (`/<user>/calendars/`): the page finds it through `calendar-home-set`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_page_round_trip_on_xandikos_in_chromium() {
    round_trip(Upstream::xandikos()).await
}

async fn round_trip(up: &'static Upstream) {
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    // The documentation's screenshots show Radicale's run.
    browser.shots = up.kind() == Kind::Radicale;
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

    // Sign-in: the browser answers the upstream's Basic challenge (relayed by the
    // page's first PROPFIND); the page itself never handles the password.
    sign_in_and_choose(&browser, up, &proxy, &calendar).await;
    let account = browser
        .js("return document.getElementById('account').textContent")
        .await;
    assert_eq!(account, json!(format!("Signed in as {USER}")));
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

    // Remove agenda.pdf, after the confirmation. Escape on the dialog (focus starts
    // on Cancel) removes nothing.
    let remove = "#attachments li[data-filename='agenda.pdf'] button.remove";
    browser.css(remove).await.click().await.expect("remove");
    browser
        .until(
            "the confirmation with the focus on Cancel",
            "document.getElementById('confirm').open && document.activeElement.id === 'confirm-cancel'",
        )
        .await;
    d.active_element()
        .await
        .expect("focused element")
        .send_keys("\u{E00C}")
        .await
        .expect("press Escape");
    browser
        .until(
            "the dialog closed",
            "!document.getElementById('confirm').open",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        names(&upstream_attaches(up, &href).await),
        ["agenda.pdf", "minutes.txt"],
        "cancelled"
    );
    browser.css(remove).await.click().await.expect("remove");
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

    // A file dropped on the event is added like a picked one.
    browser
        .js("const dt = new DataTransfer(); \
             dt.items.add(new File(['dropped on the page\\n'], 'dropped.txt', { type: 'text/plain' })); \
             const target = document.getElementById('drop'); \
             target.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true })); \
             target.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true })); \
             return null")
        .await;
    browser
        .until(
            "the dropped file listed",
            "!!document.querySelector(\"#attachments li[data-filename='dropped.txt']\")",
        )
        .await;
    let upstream = upstream_attaches(up, &href).await;
    assert_eq!(
        names(&upstream),
        ["dropped.txt", "minutes.txt"],
        "{upstream:?}"
    );
    assert_eq!(upstream[0].2, "20", "{upstream:?}");

    // Phone width: the same page in one column.
    if std::env::var_os("WEBPAGE_SCREENSHOTS").is_some() {
        d.set_window_size(390, 844).await.expect("resize");
        browser
            .js("document.getElementById('event-title').scrollIntoView(); return null")
            .await;
        browser.shot("phone").await;
    }
    browser.assert_policy_kept().await;
    browser.close().await;
}

/// Signs in as the browser would after a password prompt: the upstream's challenge on
/// a first request is answered with the URL's credentials, which the browser then
/// reuses for the realm. Then opens the page and chooses `calendar`.
async fn sign_in_and_choose(browser: &Browser, up: &Upstream, proxy: &Calattach, calendar: &str) {
    let origin = proxy.origin();
    let with_credentials = origin.replacen(
        "http://",
        &format!("http://{USER}:{}@", up.password(USER)),
        1,
    );
    let d = &browser.driver;
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
    browser
        .css("#calendar")
        .await
        .select_by_value(value.as_str().unwrap())
        .await
        .expect("choose the calendar");
}

/// Opens the one event whose title is `title` (after the calendar's events loaded).
async fn open_event(browser: &Browser, title: &str) {
    browser
        .until(
            "the event in the list",
            &format!(
                "Array.from(document.querySelectorAll('#events .title')).some(t => t.textContent === '{title}')"
            ),
        )
        .await;
    browser
        .js(&format!(
            "Array.from(document.querySelectorAll('#events button')).find(b => b.querySelector('.title').textContent === '{title}').click(); return null"
        ))
        .await;
    browser
        .until(
            "the event",
            &format!("document.getElementById('event-title').textContent === '{title}' && !document.getElementById('event-section').hidden"),
        )
        .await;
}

async fn upstream_ics(up: &Upstream, href: &str) -> (String, String) {
    let reply = Client::new()
        .request("GET", &up.url(href))
        .basic(USER, up.password(USER))
        .send()
        .await;
    assert_eq!(reply.status.as_u16(), 200, "GET {href}: {reply:?}");
    let etag = reply.header("etag").unwrap_or_default().to_string();
    (reply.text(), etag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_page_attaches_to_one_occurrence_and_explains_refusals_in_chromium() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let up = Upstream::radicale();
    let proxy = Calattach::start(
        up,
        Storage::Local,
        "[attachments]\nmax_attachment_size = \"1KiB\"\nmax_attachments_per_resource = 1\n\
         [identity]\naddress_template = \"mailto:{user}@example.org\"\n",
    );
    let calendar = up.new_calendar(USER, "web").await;
    // An invitation from user1, as it lands in user3's calendar: the attendee's copy.
    let invitation = format!("{calendar}{}.ics", crate::harness::unique("ev"));
    let later = (chrono::Utc::now() + chrono::Duration::days(60))
        .format("%Y%m%dT090000Z")
        .to_string();
    let ics = crate::transparency::event(&crate::harness::unique("uid"), "Invitation", &later)
        .replace(
            "DURATION:PT1H\r\n",
            &format!(
                "DURATION:PT1H\r\nORGANIZER:mailto:user1@example.org\r\n\
                 ATTENDEE;PARTSTAT=ACCEPTED:mailto:{USER}@example.org\r\n"
            ),
        );
    up.put_event(USER, &invitation, &ics).await;

    let href = format!("{calendar}{}.ics", crate::harness::unique("ev"));
    let start = chrono::Utc::now() + chrono::Duration::days(7);
    let dtstart = start.format("%Y%m%dT090000Z").to_string();
    let second = (start + chrono::Duration::days(7))
        .format("%Y%m%dT090000Z")
        .to_string();
    let ics = crate::transparency::event(&crate::harness::unique("uid"), "Weekly review", &dtstart)
        .replace(
            "DURATION:PT1H\r\n",
            "DURATION:PT1H\r\nRRULE:FREQ=WEEKLY;COUNT=4\r\n",
        );
    up.put_event(USER, &href, &ics).await;

    sign_in_and_choose(&browser, up, &proxy, &calendar).await;
    open_event(&browser, "Weekly review").await;
    browser
        .until(
            "the occurrence choice",
            "!document.getElementById('occurrence-row').hidden && document.querySelectorAll('#occurrence option').length === 5",
        )
        .await;
    browser
        .css("#occurrence")
        .await
        .select_by_value(&second)
        .await
        .expect("choose the second occurrence");

    let files = tempfile::tempdir().expect("tempdir");
    std::fs::write(files.path().join("slides.txt"), b"slides for one week\n").expect("write");
    std::fs::write(files.path().join("video.bin"), vec![7u8; 4096]).expect("write");
    std::fs::write(files.path().join("extra.txt"), b"one too many\n").expect("write");
    browser
        .css("#add-files")
        .await
        .send_keys(&format!(
            "{}\n{}\n{}",
            files.path().join("slides.txt").display(),
            files.path().join("video.bin").display(),
            files.path().join("extra.txt").display()
        ))
        .await
        .expect("pick three files");
    browser
        .until(
            "all uploads settled",
            "Array.from(document.querySelectorAll('#uploads li')).every(l => l.dataset.state === 'done' || l.dataset.state === 'error') && document.querySelectorAll('#uploads li').length === 3",
        )
        .await;
    let rows = browser
        .js("return Array.from(document.querySelectorAll('#uploads li')).map(l => [l.dataset.filename, l.dataset.state, l.querySelector('.msg').textContent])")
        .await;
    assert_eq!(rows[0][1], json!("done"), "{rows}");
    assert_eq!(
        rows[1],
        json!([
            "video.bin",
            "error",
            "not added: the file is too large for this server (at most 1.0 KiB)"
        ]),
        "{rows}"
    );
    assert_eq!(
        rows[2],
        json!([
            "extra.txt",
            "error",
            "not added: this event already has the most attachments allowed (1)"
        ]),
        "{rows}"
    );
    // Upstream: the occurrence got an override holding the attachment; the series none.
    let (ics, _) = upstream_ics(up, &href).await;
    let events = crate::attach::vevents(&ics);
    assert!(master(&ics).attaches().is_empty(), "{ics}");
    let instance = events
        .iter()
        .find(|c| c.rid().is_some_and(|r| r.contains(&second[..8])))
        .unwrap_or_else(|| panic!("no override for {second}:\n{ics}"));
    let names: Vec<&str> = instance
        .attaches()
        .iter()
        .filter_map(|p| p.param("FILENAME"))
        .collect();
    assert_eq!(names, ["slides.txt"], "{ics}");
    browser
        .until(
            "the occurrence's attachment",
            "document.querySelectorAll('#attachments li').length === 1",
        )
        .await;
    // The series itself shows none.
    browser
        .css("#occurrence")
        .await
        .select_by_value("")
        .await
        .expect("choose all occurrences");
    browser
        .until(
            "no attachment on the series",
            "document.querySelectorAll('#attachments li').length === 0 && !document.getElementById('no-attachments').hidden",
        )
        .await;

    // Changed elsewhere meanwhile: a remove with the page's (now stale) ETag is refused
    // with 412, explained, and the event reloaded.
    browser
        .css("#occurrence")
        .await
        .select_by_value(&second)
        .await
        .expect("choose the second occurrence");
    let (ics, etag) = upstream_ics(up, &href).await;
    let edited = ics.replacen("SUMMARY:Weekly review", "SUMMARY:Weekly review (moved)", 1);
    let reply = Client::new()
        .request("PUT", &up.url(&href))
        .basic(USER, up.password(USER))
        .header("Content-Type", "text/calendar; charset=utf-8")
        .header("If-Match", etag)
        .body(edited)
        .send()
        .await;
    assert!(reply.status.is_success(), "{reply:?}");
    browser
        .css("#attachments li[data-filename='slides.txt'] button.remove")
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
    browser
        .css("#confirm-ok")
        .await
        .click()
        .await
        .expect("confirm");
    browser
        .until(
            "the explanation",
            "document.getElementById('status').textContent.includes('changed elsewhere meanwhile')",
        )
        .await;
    browser
        .until(
            "the reloaded event",
            "document.getElementById('event-title').textContent === 'Weekly review (moved)'",
        )
        .await;
    let (ics, _) = upstream_ics(up, &href).await;
    assert!(
        ics.contains("FILENAME=slides.txt"),
        "the refused remove changed nothing:\n{ics}"
    );

    // The attendee's copy: the page says only the organizer may add.
    open_event(&browser, "Invitation").await;
    browser
        .css("#add-files")
        .await
        .send_keys(&files.path().join("slides.txt").display().to_string())
        .await
        .expect("pick a file");
    let row = browser
        .until(
            "the refusal",
            "(Array.from(document.querySelectorAll('#uploads li')).find(l => l.dataset.state === 'error') || {}).textContent",
        )
        .await;
    assert!(
        row.as_str().unwrap().contains(
            "this is your copy of someone else's invitation: only the organizer can add attachments"
        ),
        "{row}"
    );
    let (ics, _) = upstream_ics(up, &invitation).await;
    assert!(!ics.contains("ATTACH"), "{ics}");
    browser.assert_policy_kept().await;
    browser.close().await;
}

/// The page's own responses, over plain HTTP: the policy headers, revalidation, the
/// redirect to the slash, unknown assets, and `web_page = false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_page_is_served_with_a_strict_policy_and_can_be_turned_off() {
    let up = Upstream::radicale();
    let proxy = Calattach::start(up, Storage::Local, "");
    let http = Client::new();
    let page = http
        .request("GET", &proxy.url("/.attachments/"))
        .send()
        .await;
    assert_eq!(page.status.as_u16(), 200, "{page:?}");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        page.header("content-security-policy"),
        Some(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        )
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let text = page.text();
    assert!(text.contains("<script src=\"_/app.js\" defer>"), "{text}");
    assert!(
        !text.contains("http://") && !text.contains("https://"),
        "nothing from elsewhere"
    );

    let js = http
        .request("GET", &proxy.url("/.attachments/_/app.js"))
        .send()
        .await;
    assert_eq!(js.status.as_u16(), 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let etag = js.header("etag").expect("etag").to_string();
    let again = http
        .request("GET", &proxy.url("/.attachments/_/app.js"))
        .header("If-None-Match", etag.clone())
        .send()
        .await;
    assert_eq!(again.status.as_u16(), 304);
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let css = http
        .request("HEAD", &proxy.url("/.attachments/_/app.css"))
        .send()
        .await;
    assert_eq!(css.status.as_u16(), 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));

    let bare = http
        .request("GET", &proxy.url("/.attachments"))
        .send()
        .await;
    assert_eq!(bare.status.as_u16(), 301);
    assert_eq!(bare.header("location"), Some("/.attachments/"));
    let unknown = http
        .request("GET", &proxy.url("/.attachments/_/nope.js"))
        .send()
        .await;
    assert_eq!(unknown.status.as_u16(), 404);
    let post = http
        .request("POST", &proxy.url("/.attachments/"))
        .send()
        .await;
    assert_eq!(post.status.as_u16(), 405);

    let off = Calattach::start(up, Storage::Local, "[attachments]\nweb_page = false\n");
    let page = http.request("GET", &off.url("/.attachments/")).send().await;
    assert_eq!(page.status.as_u16(), 401, "a download path again: {page:?}");
    let page = http
        .request("GET", &off.url("/.attachments/_/app.js"))
        .basic(USER, up.password(USER))
        .send()
        .await;
    assert_eq!(page.status.as_u16(), 404, "{page:?}");
}
