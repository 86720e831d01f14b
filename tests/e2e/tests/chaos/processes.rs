//! The site's processes: each an `ingot` child process whose stdout and stderr go to its own
//! log file in the run's directory, so a failed run can be read afterwards.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One running `ingot` subcommand.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `ingot <args>`, appending its output to `log`. Logs at `info`, or as the
    /// test's own `RUST_LOG` says.
    pub fn spawn(binary: &Path, args: &[String], log: &Path) -> Process {
        let file = open_log(log);
        let stderr = file
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", log_filter())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {args:?}: {e}", binary.display()));
        Process {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a node failure or the OOM killer would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails the test when the process has exited by itself.
    pub fn assert_running(&mut self, name: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{name} exited on its own ({status}); its log ends with:\n{}",
                log_tail(&self.log, 30)
            );
        }
    }

    /// Waits until a line of the log contains `needle` and returns that line.
    pub fn wait_for_line(&mut self, name: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|line| line.contains(needle)) {
                return line.to_owned();
            }
            self.assert_running(name);
            assert!(
                Instant::now() < deadline,
                "{name} did not print {needle:?} within {timeout:?}:\n{}",
                log_tail(&self.log, 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn log_filter() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned())
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes a marker line into a log, e.g. where one run of a restarted process ends.
pub fn mark_log(log: &Path, marker: &str) {
    let mut file = open_log(log);
    let _ = writeln!(file, "===== {marker} =====");
}

/// The last `lines` lines of a log file.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn open_log(log: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
}
