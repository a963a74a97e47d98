//! Configuration errors stop calattach before it serves, with exit code 64
//! and a message naming the key (STYLE "Config"); the environment
//! (`CALATTACH_<SECTION>__<KEY>`) wins over the file.

use crate::harness::calattach::{config, run_to_exit, Calattach, Storage};
use crate::harness::raw;
use crate::harness::{free_port, Client, Kind, Upstream};

/// Writes a generated config with `extra` merged in and runs `serve` on it.
fn serve_with(extra: &str) -> crate::harness::calattach::Exit {
    let dir = tempfile::tempdir().expect("tempdir");
    let (text, _) = config(
        dir.path(),
        free_port(),
        &raw::down_origin(),
        Storage::Local,
        extra,
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).expect("write config");
    run_to_exit(dir.path(), &["serve", "-c", &path.to_string_lossy()], &[])
}

#[test]
fn unknown_config_key_exits_64_naming_the_key() {
    let exit = serve_with("[upstream]\nresponse_timeuot = \"5s\"\n");
    assert_eq!(exit.code, Some(64), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("response_timeuot"),
        "the error does not name the unknown key:\n{}",
        exit.stderr
    );
}

#[test]
fn bad_upstream_url_exits_64_naming_the_key() {
    let exit = serve_with("[upstream]\nurl = \"htp//calendar.example\"\n");
    assert_eq!(exit.code, Some(64), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("upstream.url"),
        "the error does not name upstream.url:\n{}",
        exit.stderr
    );
}

#[test]
fn invalid_duration_exits_64_naming_the_key() {
    let exit = serve_with("[upstream]\nresponse_timeout = \"soon\"\n");
    assert_eq!(exit.code, Some(64), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("upstream.response_timeout"),
        "the error does not name upstream.response_timeout:\n{}",
        exit.stderr
    );
}

#[test]
fn missing_config_file_exits_64_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-proxy.toml");
    let exit = run_to_exit(dir.path(), &["serve", "-c", &path.to_string_lossy()], &[]);
    assert_eq!(exit.code, Some(64), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("no-such-proxy.toml"),
        "the error does not name the missing file:\n{}",
        exit.stderr
    );
}

#[test]
fn env_override_with_an_invalid_value_exits_64_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (text, _) = config(
        dir.path(),
        free_port(),
        &raw::down_origin(),
        Storage::Local,
        "",
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).expect("write config");
    let exit = run_to_exit(
        dir.path(),
        &["serve", "-c", &path.to_string_lossy()],
        &[("CALATTACH_UPSTREAM__URL", "htp//nope")],
    );
    assert_eq!(exit.code, Some(64), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("upstream.url"),
        "stderr:\n{}",
        exit.stderr
    );
}

/// The file points at a port where nothing listens; the environment points
/// at Radicale. Requests reach Radicale.
#[tokio::test]
async fn env_upstream_url_overrides_the_file() {
    let up = Upstream::get(Kind::Radicale);
    let origin = up.origin();
    let proxy = Calattach::start_with_env(
        raw::down_origin().as_str(),
        Storage::Local,
        "",
        &[("CALATTACH_UPSTREAM__URL", origin.as_str())],
    );
    let reply = Client::new()
        .request("PROPFIND", &proxy.url(&up.calendar_path("user1")))
        .basic("user1", up.password("user1"))
        .header("Depth", "0")
        .send()
        .await;
    assert_eq!(
        reply.status,
        207,
        "{reply:?}\ncalattach stderr:\n{}",
        proxy.stderr()
    );
}

/// `[storage]` as an `s3://` URL plus object_store options (path-style, plain
/// HTTP) is accepted, and the proxy serves with it.
#[tokio::test]
async fn s3_storage_on_moto_is_accepted_and_proxy_serves() {
    let up = Upstream::get(Kind::Radicale);
    let moto = crate::harness::Moto::shared();
    let proxy = Calattach::start(up, Storage::S3(moto), "");
    assert!(proxy.bucket.is_some());
    let reply = Client::new()
        .request("PROPFIND", &proxy.url(&up.calendar_path("user1")))
        .basic("user1", up.password("user1"))
        .header("Depth", "0")
        .send()
        .await;
    assert_eq!(
        reply.status,
        207,
        "{reply:?}\ncalattach stderr:\n{}",
        proxy.stderr()
    );
}

/// The rows of the "Errors" table in docs/configuration.md: (file, exit, message).
fn documented_errors() -> Vec<(String, i32, String)> {
    let doc = std::fs::read_to_string(crate::harness::repo_root().join("docs/configuration.md"))
        .expect("read docs/configuration.md");
    let section = doc
        .split("\n## Errors\n")
        .nth(1)
        .expect("docs/configuration.md has an Errors section");
    let spans = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut rows = Vec::new();
    for line in section
        .lines()
        .skip_while(|l| !l.starts_with("| file |"))
        .skip(2)
    {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 3, "row {line:?}");
        let file = spans(cells[0]).join("\n");
        let exit = cells[1].trim().parse().expect("exit status");
        let message = spans(cells[2]).concat();
        assert!(!message.is_empty(), "row {line:?} names no message");
        rows.push((file, exit, message));
    }
    assert!(rows.len() >= 5, "too few rows found: {rows:?}");
    rows
}

#[test]
fn documented_config_errors_exit_64_with_their_message() {
    for (file, exit, message) in documented_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.toml");
        // Listeners that cannot collide with anything: the file must fail before them.
        let text = format!(
            "{file}\nserver.listen = \"127.0.0.1:{}\"\nserver.admin_listen = \"\"\n",
            free_port()
        );
        std::fs::write(&path, text).expect("write config");
        for command in ["serve", "check-config"] {
            let out = run_to_exit(dir.path(), &[command, "-c", "proxy.toml"], &[]);
            assert_eq!(
                out.code,
                Some(exit),
                "{command} with {file:?}:\n{}{}",
                out.stdout,
                out.stderr
            );
            assert!(
                out.stderr.contains("calattach: configuration error: ")
                    && out.stderr.contains(&message),
                "{command} with {file:?}: stderr lacks {message:?}:\n{}",
                out.stderr
            );
            assert!(
                !out.stdout.contains(": ok"),
                "{command} with {file:?} reported ok:\n{}",
                out.stdout
            );
        }
    }
}

#[test]
fn healthcheck_without_its_config_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_to_exit(dir.path(), &["healthcheck", "-c", "missing.toml"], &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("missing.toml"), "{}", out.stderr);
}
