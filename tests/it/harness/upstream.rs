//! Radicale 3.9 and Xandikos 0.4.10 as upstreams, one of each per test binary.
//!
//! Layouts (measured, see the project's server notes): Radicale's principal
//! and calendar home are `/<user>/`, its default calendar `/<user>/calendar/`
//! (predefined, created on the user's first authenticated request); Xandikos's
//! principal is `/<user>/`, home `/<user>/calendars/`, default calendar
//! `/<user>/calendars/calendar/` (created on first authenticated request).

use super::process::{port_open, Proc};
use super::{free_port, loopback, raw};
use std::sync::OnceLock;
use std::time::Duration;
use tempfile::TempDir;

/// The users every upstream knows: (name, password).
pub const USERS: [(&str, &str); 3] = [
    ("user1", "user1-pw"),
    ("user2", "user2-pw"),
    ("user3", "user3-pw"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Radicale,
    Xandikos,
}

/// A running CalDAV server with throw-away state.
pub struct Upstream {
    kind: Kind,
    port: u16,
    proc: Proc,
    _dir: TempDir,
}

static RADICALE: OnceLock<Upstream> = OnceLock::new();
static XANDIKOS: OnceLock<Upstream> = OnceLock::new();

impl Upstream {
    /// The Radicale shared by this test binary (started on first use).
    pub fn radicale() -> &'static Upstream {
        RADICALE.get_or_init(|| Upstream::start(Kind::Radicale))
    }

    /// The Xandikos shared by this test binary (started on first use).
    pub fn xandikos() -> &'static Upstream {
        XANDIKOS.get_or_init(|| Upstream::start(Kind::Xandikos))
    }

    pub fn get(kind: Kind) -> &'static Upstream {
        match kind {
            Kind::Radicale => Self::radicale(),
            Kind::Xandikos => Self::xandikos(),
        }
    }

    /// Starts a private instance (for tests that must own their upstream).
    pub fn start(kind: Kind) -> Upstream {
        let dir = tempfile::Builder::new()
            .prefix(&format!("calattach-{kind:?}-").to_lowercase())
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut proc = match kind {
            Kind::Radicale => start_radicale(dir.path(), port),
            Kind::Xandikos => start_xandikos(dir.path(), port),
        };
        proc.wait_ready(Duration::from_secs(30), || port_open(port));
        // The first authenticated request creates each user's principal and
        // default calendar; doing it here keeps tests from racing on it.
        let up = Upstream {
            kind,
            port,
            proc,
            _dir: dir,
        };
        for (user, password) in USERS {
            let path = up.calendar_path(user);
            let status = raw::blocking_request(
                loopback(port),
                &format!(
                    "PROPFIND {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {}\r\n\
                     Depth: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    super::basic(user, password)
                ),
            );
            assert_eq!(
                status,
                Some(207),
                "{kind:?}: PROPFIND {path} as {user} did not answer 207; stderr:\n{}",
                up.proc.stderr()
            );
        }
        up
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Radicale => "radicale",
            Kind::Xandikos => "xandikos",
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The direct URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    pub fn password(&self, user: &str) -> &'static str {
        password(user)
    }

    pub fn principal_path(&self, user: &str) -> String {
        format!("/{user}/")
    }

    pub fn home_path(&self, user: &str) -> String {
        match self.kind {
            Kind::Radicale => format!("/{user}/"),
            Kind::Xandikos => format!("/{user}/calendars/"),
        }
    }

    /// Path of the user's default calendar.
    pub fn calendar_path(&self, user: &str) -> String {
        format!("{}calendar/", self.home_path(user))
    }

    /// Direct URL of the user's default calendar.
    pub fn calendar_url(&self, user: &str) -> String {
        self.url(&self.calendar_path(user))
    }

    /// Path (not yet created) of a new calendar named `name` in `user`'s home.
    pub fn calendar_path_named(&self, user: &str, name: &str) -> String {
        format!("{}{name}/", self.home_path(user))
    }

    /// Creates a calendar with a unique name (MKCALENDAR, direct) and
    /// returns its path.
    pub async fn new_calendar(&self, user: &str, prefix: &str) -> String {
        let path = self.calendar_path_named(user, &super::unique(prefix));
        let reply = super::Client::new()
            .request("MKCALENDAR", &self.url(&path))
            .basic(user, password(user))
            .send()
            .await;
        assert_eq!(
            reply.status.as_u16(),
            201,
            "{}: MKCALENDAR {path}: {reply:?}",
            self.name()
        );
        path
    }

    /// PUTs `ics` (direct) at `path` and returns the ETag when there is one.
    pub async fn put_event(&self, user: &str, path: &str, ics: &str) -> Option<String> {
        let reply = super::Client::new()
            .request("PUT", &self.url(path))
            .basic(user, password(user))
            .header("Content-Type", "text/calendar; charset=utf-8")
            .body(ics.to_string())
            .send()
            .await;
        assert!(
            reply.status.as_u16() == 201 || reply.status.as_u16() == 204,
            "{}: PUT {path}: {reply:?}",
            self.name()
        );
        reply.header("etag").map(str::to_string)
    }

    /// The server's state directory (Radicale's `users` file lives here).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The server's stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }
}

pub fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(name, _)| *name == user)
        .map(|(_, pw)| *pw)
        .unwrap_or_else(|| panic!("unknown test user {user}"))
}

fn start_radicale(dir: &std::path::Path, port: u16) -> Proc {
    let users: String = USERS
        .iter()
        .map(|(user, pw)| format!("{user}:{pw}\n"))
        .collect();
    std::fs::write(dir.join("users"), users).expect("write users");
    // delay = 0 / delay_on_error = 0: Radicale otherwise sleeps a second on
    // every 401/403/5xx. max_connections: parallel tests share this server.
    let config = format!(
        r#"[server]
hosts = 127.0.0.1:{port}
max_connections = 64
delay_on_error = 0

[auth]
type = htpasswd
htpasswd_filename = {dir}/users
htpasswd_encryption = plain
delay = 0

[rights]
type = owner_only

[storage]
filesystem_folder = {dir}/collections
predefined_collections = {{"calendar": {{"tag": "VCALENDAR", "C:supported-calendar-component-set": "VEVENT,VTODO,VJOURNAL"}}}}

[web]
type = none

[logging]
level = warning
"#,
        dir = dir.display()
    );
    let config_path = dir.join("config");
    std::fs::write(&config_path, config).expect("write radicale config");
    let python = super::python();
    Proc::spawn(
        "radicale",
        dir,
        &python,
        &["-m", "radicale", "--config", &config_path.to_string_lossy()],
        &[],
    )
}

fn start_xandikos(dir: &std::path::Path, port: u16) -> Proc {
    let mut args = vec![
        super::script("xandikos_server.py")
            .to_string_lossy()
            .into_owned(),
        "--directory".into(),
        dir.join("data").to_string_lossy().into_owned(),
        "--htpasswd".into(),
        dir.join("htpasswd").to_string_lossy().into_owned(),
        "--port".into(),
        port.to_string(),
    ];
    for (user, pw) in USERS {
        args.push("--user".into());
        args.push(format!("{user}:{pw}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn("xandikos", dir, &super::python(), &args, &[])
}
