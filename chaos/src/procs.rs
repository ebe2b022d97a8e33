//! Processes a drill starts (broker, nodes, generators): each in its own process group so a
//! Ctrl-C at the terminal reaches only the drill, which then undoes its faults; stdout
//! lines on a channel, stderr to a log file; SIGKILL, SIGSTOP/SIGCONT and SIGTERM; and on
//! drop always continued, killed and reaped, so no drill leaves a process behind.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Error;

/// How to start one process (kept to restart it).
#[derive(Debug, Clone)]
pub struct Spec {
    /// Name in logs and reports.
    pub name: String,
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Its stdout and stderr go to this file (appended across restarts).
    pub log: PathBuf,
}

/// A running child of the drill.
pub struct Proc {
    spec: Spec,
    child: Child,
    lines: mpsc::Receiver<String>,
    stopped: bool,
    /// Stdout lines seen so far.
    pub seen: Vec<String>,
}

impl Proc {
    /// Start `spec`.
    ///
    /// # Errors
    /// [`Error::Process`] if it cannot be started or its log opened.
    pub fn start(spec: Spec) -> Result<Self, Error> {
        let err = |what: String| Error::Process { name: spec.name.clone(), what };
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&spec.log).map_err(|e| err(format!("open {}: {e}", spec.log.display())))?;
        let mut stdout_log = log.try_clone().map_err(|e| err(e.to_string()))?;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log)).process_group(0);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| err(format!("start {}: {e}", spec.program.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| err("no stdout".into()))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(stdout_log, "{line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { spec, child, lines, stopped: false, seen: Vec::new() })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `timeout` for a stdout line matching `pred`.
    ///
    /// # Errors
    /// [`Error::Process`] naming what was awaited, whether the process exited, and its log.
    pub fn wait_line(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(200))) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return Ok(l);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    let exited = self.child.try_wait().ok().flatten();
                    return Err(Error::Process {
                        name: self.spec.name.clone(),
                        what: format!("no {what} within {timeout:?} (exit status {exited:?}); see {}", self.spec.log.display()),
                    });
                }
            }
        }
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stopped = false;
    }

    /// SIGSTOP: frozen, sockets open, nothing runs.
    pub fn freeze(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        self.stopped = true;
    }

    /// SIGCONT.
    pub fn thaw(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        self.stopped = false;
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how it ended.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.stopped {
            self.thaw();
        }
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }

    /// Start it again with the same spec (after a kill or stop).
    ///
    /// # Errors
    /// As [`Proc::start`].
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill9();
        let fresh = Self::start(self.spec.clone())?;
        let old = std::mem::replace(self, fresh);
        drop(old);
        Ok(())
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.spec.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.stopped {
            self.thaw();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
