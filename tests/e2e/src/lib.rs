//! Drives a running `ingot dev` from the outside, the way a newcomer does: the `ingot`
//! binary started as a child process, and the real `kubectl` with its own cache directory.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the real kubectl is expected.
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `ingot` binary of this build, built first if needed.
pub fn ingot_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "-p", "ingot"]);
    // Benchmarks are built in release: measure a release `ingot` with them.
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let status = build.current_dir(repo_root()).status().expect("cargo runs");
    assert!(status.success(), "cargo build -p ingot failed");
    profile_dir.join("ingot")
}

/// A free loopback TCP port.
pub fn free_tcp_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// A free loopback UDP port.
pub fn free_udp_address() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("address")
}

/// A running `ingot dev` child process, stopped with SIGINT (as Ctrl-C) when dropped.
pub struct DevSession {
    child: Child,
    /// Lines the session printed on stdout so far.
    pub output: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
    /// The kubeconfig it announced.
    pub kubeconfig: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
}

impl DevSession {
    /// Starts `ingot dev` with `args` on `state_dir` and waits for its `export KUBECONFIG=` line.
    pub fn start(state_dir: &Path, args: &[String]) -> Self {
        let mut child = Command::new(ingot_binary())
            .arg("dev")
            .arg("--state")
            .arg(state_dir)
            .args(args)
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ingot dev starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (sender, lines) = std::sync::mpsc::channel();
        let recorded = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                recorded.lock().map(|mut o| o.push(line.clone())).ok();
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut session = Self {
            child,
            output,
            lines,
            kubeconfig: PathBuf::new(),
            state_dir: state_dir.to_path_buf(),
        };
        let line = session.wait_for_line("export KUBECONFIG=", Duration::from_secs(120));
        session.kubeconfig = PathBuf::from(line.trim_start_matches("export KUBECONFIG="));
        session
    }

    /// Waits for a stdout line starting with `prefix`.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line starting with {prefix:?} within {timeout:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!("ingot dev exited ({status:?}) before printing {prefix:?}")
                }
            }
        }
    }

    /// Sends SIGINT and waits for a clean exit; returns the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ingot dev did not stop within 30 s of Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DevSession {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The real kubectl with a fresh cache directory.
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    /// `None` when kubectl is not installed.
    pub fn new(kubeconfig: &Path) -> Option<Self> {
        Path::new(KUBECTL).exists().then(|| Self {
            kubeconfig: kubeconfig.to_path_buf(),
            cache: tempfile::tempdir().expect("cache dir"),
        })
    }

    /// Runs kubectl.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(KUBECTL)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--cache-dir={}", self.cache.path().display()))
            .args(args)
            .env("HOME", self.cache.path())
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl and returns stdout, failing the test on an error exit.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl get ... -o json` parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl prints JSON")
    }

    /// Items of a `kubectl get <resource> -o json` list, or `None` while kubectl fails, e.g.
    /// because `ingot dev` has printed its kubeconfig but not yet installed the CRDs.
    pub fn try_items(&self, resource: &str) -> Option<Vec<Value>> {
        let output = self.run(&["get", resource, "-o", "json"]);
        if !output.status.success() {
            return None;
        }
        let list: Value = serde_json::from_slice(&output.stdout).ok()?;
        Some(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Items of a `kubectl get <resource> -o json` list.
    pub fn items(&self, resource: &str) -> Vec<Value> {
        self.json(&["get", resource])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The virtual disk files of lab machine `machine`, in the lab directory `lab_dir`.
pub fn lab_disks(lab_dir: &Path, machine: &str) -> Vec<PathBuf> {
    let dir = lab_dir.join(machine);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "img"))
        .collect()
}

/// Whether a disk file holds a GPT (`EFI PART` at byte 512): a lab disk gets one only from a
/// written image. Lab disks are large sparse files, so only those bytes are read.
pub fn has_partition_table(disk: &Path) -> bool {
    use std::os::unix::fs::FileExt as _;
    let mut signature = [0u8; 8];
    std::fs::File::open(disk)
        .and_then(|file| file.read_exact_at(&mut signature, 512))
        .is_ok_and(|()| &signature == b"EFI PART")
}

/// Polls `check` every half second until it returns `Some`, or fails after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
