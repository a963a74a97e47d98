//! A child process under `scripts/lifeline.py`, in its own process group.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Guard for a started process. Drop kills the whole process group (the
/// lifeline and the command it runs) with SIGKILL.
pub struct Proc {
    name: String,
    lifeline: Child,
    /// Held open for the lifeline; closing it (our exit) stops the command.
    _stdin: Option<ChildStdin>,
    pid: u32,
    stdout: PathBuf,
    stderr: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` under the lifeline, stdout/stderr going to files in `dir`
    /// (files, not pipes: nobody has to drain them for the child to progress).
    /// `dir` is removed when the test binary exits while `cmd` still runs.
    pub fn spawn(name: &str, dir: &Path, cmd: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let pidfile = dir.join(format!("{name}.pid"));
        let _ = std::fs::remove_file(&pidfile);
        let mut command = Command::new(super::python());
        command
            .arg(super::script("lifeline.py"))
            .arg("--pidfile")
            .arg(&pidfile)
            // Statics are never dropped: the lifeline removes the state of
            // shared servers when the test binary exits.
            .arg("--cleanup")
            .arg(dir)
            .arg("--")
            .arg(cmd)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(File::create(&stdout).expect("create stdout log"))
            .stderr(File::create(&stderr).expect("create stderr log"))
            .process_group(0);
        // The proxy reads CALATTACH_* as config overrides; the test
        // environment must not leak into it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CALATTACH_") {
                command.env_remove(key);
            }
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut lifeline = command
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot spawn {}: {e}", cmd.display()));
        let stdin = lifeline.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile) {
                if let Ok(pid) = text.trim().parse() {
                    break pid;
                }
            }
            if let Ok(Some(status)) = lifeline.try_wait() {
                panic!("{name}: exited at start ({status})\n{}", read_log(&stderr));
            }
            assert!(Instant::now() < deadline, "{name}: no pid after 10s");
            std::thread::sleep(Duration::from_millis(10));
        };
        Proc {
            name: name.to_string(),
            lifeline,
            _stdin: stdin,
            pid,
            stdout,
            stderr,
            exited: None,
        }
    }

    /// The pid of the command itself (not the lifeline).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything the command wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_log(&self.stderr)
    }

    pub fn stdout(&self) -> String {
        read_log(&self.stdout)
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.lifeline.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics with the captured stderr when the process has exited.
    pub fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.try_wait() {
            panic!(
                "{} exited ({status}) {what}; stderr:\n{}",
                self.name,
                self.stderr()
            );
        }
    }

    /// Sends `signal` (e.g. "TERM") to the command only.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} {} ({}) failed", self.pid, self.name);
    }

    /// Polls `ready` every 50 ms until it returns true or `timeout` passes;
    /// fails the test with the captured stderr when the process exits first
    /// or the deadline passes.
    pub fn wait_ready(&mut self, timeout: Duration, ready: impl FnMut() -> bool) {
        if let Err(exited) = self.wait_ready_or_exit(timeout, ready) {
            panic!("{exited}");
        }
    }

    /// Like [`Proc::wait_ready`], but a process that exits first is an `Err` with its
    /// exit status and stderr, for a caller that can start it again.
    pub fn wait_ready_or_exit(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before it became ready; stderr:\n{}",
                    self.name,
                    self.stderr()
                ));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not ready after {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            // Negative pid: the whole group the lifeline leads.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.lifeline.id())])
                .stderr(Stdio::null())
                .status();
            let _ = self.lifeline.wait();
        }
    }
}

fn read_log(path: &Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    // Keep failure output readable: the tail is where the reason is.
    const MAX: usize = 16 * 1024;
    if text.len() > MAX {
        let mut cut = text.len() - MAX;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        format!("[... {cut} bytes cut ...]\n{}", &text[cut..])
    } else {
        text.into_owned()
    }
}

/// True when something accepts TCP connections on `port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&super::loopback(port), Duration::from_millis(200)).is_ok()
}
