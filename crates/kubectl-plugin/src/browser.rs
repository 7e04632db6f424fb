//! Headless Chromium for the dashboard's browser test and the demo's screenshot:
//! installed from Debian's `chromium` package when absent (once, under a file
//! lock), driven through the DevTools protocol over a pipe (no WebSocket needed).

use base64::Engine;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What can go wrong with the browser.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Installing or starting Chromium failed.
    #[error("chromium: {0}")]
    Start(String),
    /// A DevTools command failed or timed out.
    #[error("devtools {method}: {message}")]
    Protocol {
        /// The command.
        method: String,
        /// What went wrong.
        message: String,
    },
}

/// The flags every run uses: no sandbox (root), no GPU, nothing that reaches out to the network.
pub const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

fn find() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The Chromium binary, installing Debian's `chromium` package first when it is missing.
pub fn ensure_installed() -> Result<PathBuf, Error> {
    if let Some(p) = find() {
        return Ok(p);
    }
    // Two test binaries may ask at once; one installs, the other waits for it.
    let lock_path = std::env::temp_dir().join("promotion-chromium-install.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Start(format!("{}: {e}", lock_path.display())))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::Start(format!(
            "locking {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        )));
    }
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("[chromium] installing Debian's chromium package (first time only)");
    for args in [
        &["update", "-qq"][..],
        // With its recommended packages: they bring the fonts a screenshot needs.
        &["install", "-y", "-qq", "chromium"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| Error::Start(format!("running apt-get: {e}")))?;
        if !status.success() {
            return Err(Error::Start(format!(
                "apt-get {} failed ({status})",
                args.join(" ")
            )));
        }
    }
    drop(lock);
    find().ok_or_else(|| Error::Start("installed, yet /usr/bin/chromium is missing".into()))
}

/// Saves a PNG of `url` in a `width`x`height` page, once it is loaded and (for
/// the dashboard) its live updates are connected.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) -> Result<(), Error> {
    let mut browser = Browser::launch()?;
    browser.open_sized(url, width, height)?;
    browser.wait_for(
        "document.readyState",
        &json!("complete"),
        Duration::from_secs(30),
    )?;
    // Pages without live updates never set it; they are captured after the wait.
    browser.wait_for(
        "document.body.dataset.live",
        &json!("1"),
        Duration::from_secs(5),
    )?;
    let shot = browser.call("Page.captureScreenshot", json!({"format": "png"}), true)?;
    let data = shot["data"].as_str().unwrap_or_default();
    let png = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| Error::Start(format!("screenshot is not base64: {e}")))?;
    std::fs::write(path, png).map_err(|e| Error::Start(format!("{}: {e}", path.display())))
}

/// A headless Chromium driven over `--remote-debugging-pipe`, with one page attached.
pub struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile.
    pub fn launch() -> Result<Self, Error> {
        let bin = ensure_installed()?;
        let profile = tempfile::tempdir().map_err(|e| Error::Start(e.to_string()))?;
        let (their_commands, commands) =
            std::io::pipe().map_err(|e| Error::Start(e.to_string()))?;
        let (replies_reader, their_replies) =
            std::io::pipe().map_err(|e| Error::Start(e.to_string()))?;
        let (cmd_fd, reply_fd) = (their_commands.as_raw_fd(), their_replies.as_raw_fd());
        let mut command = Command::new(bin);
        command
            .args(FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--window-size=1400,900")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: dup2 is async-signal-safe. The browser reads commands on fd 3 and
        // writes replies on fd 4 (dup2 clears close-on-exec on the copies).
        unsafe {
            command.pre_exec(move || {
                // Move both out of the way first: either may already be fd 3 or 4.
                let high_cmd = libc::fcntl(cmd_fd, libc::F_DUPFD, 10);
                let high_reply = libc::fcntl(reply_fd, libc::F_DUPFD, 10);
                if high_cmd < 0
                    || high_reply < 0
                    || libc::dup2(high_cmd, 3) < 0
                    || libc::dup2(high_reply, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| Error::Start(e.to_string()))?;
        drop(their_commands);
        drop(their_replies);
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(replies_reader);
            let mut buf = Vec::new();
            while reader.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                    && tx.send(v).is_err()
                {
                    return;
                }
                buf.clear();
            }
        });
        Ok(Self {
            child,
            commands,
            replies,
            next_id: 0,
            session: None,
            _profile: profile,
        })
    }

    fn call(&mut self, method: &str, params: Value, session: bool) -> Result<Value, Error> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if session && let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let fail = |message: String| Error::Protocol {
            method: method.into(),
            message,
        };
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| fail(e.to_string()))?;
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .map_err(|e| fail(format!("writing: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self
                .replies
                .recv_timeout(left)
                .map_err(|_| fail("no answer within 30s".into()))?;
            if reply["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(err) = reply.get("error") {
                return Err(fail(err.to_string()));
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Opens `url` in a new page and attaches to it.
    pub fn open(&mut self, url: &str) -> Result<(), Error> {
        self.open_sized(url, 1400, 900)
    }

    /// Opens `url` in a new `width`x`height` page and attaches to it.
    pub fn open_sized(&mut self, url: &str, width: u32, height: u32) -> Result<(), Error> {
        let target = self.call("Target.createTarget", json!({"url": "about:blank"}), false)?;
        let id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
            false,
        )?;
        self.session = attached["sessionId"].as_str().map(str::to_string);
        // The viewport, not the window: a window's size includes the browser's own frame.
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            true,
        )?;
        self.call("Page.navigate", json!({"url": url}), true)?;
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub fn eval(&mut self, expression: &str) -> Result<Value, Error> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
            true,
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(Error::Protocol {
                method: "Runtime.evaluate".into(),
                message: ex.to_string(),
            });
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expression` until it returns `want` (or `timeout` passes: then the last value).
    pub fn wait_for(
        &mut self,
        expression: &str,
        want: &Value,
        timeout: Duration,
    ) -> Result<Value, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expression).unwrap_or(Value::Null);
            if &v == want || Instant::now() > deadline {
                return Ok(v);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("Browser.close", json!({}), false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
