//! Third-party BMC emulators, started on 127.0.0.1 ephemeral ports and
//! stopped when dropped.
//!
//! The Python peers (sushy-tools, pyghmi) live in `<repo>/.venv`, created by
//! `make setup-venv`; `ipmitool` comes from `make setup-packages`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fake system sushy-emulator serves.
pub const FAKE_SYSTEM_UUID: &str = "27946b59-9e44-4fa7-8e91-f3527a1ef094";
/// The MAC of the fake system's only NIC.
pub const FAKE_SYSTEM_MAC: &str = "00:5c:52:31:3a:9c";
/// User name the emulators accept.
pub const BMC_USER: &str = "admin";
/// Password the emulators accept.
pub const BMC_PASSWORD: &str = "password";

/// Why a peer could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The Python venv is missing.
    #[error(
        "{path} not found: create the test peers with `make setup-venv` (a Python venv at <repo>/.venv with tests/peers-requirements.txt)"
    )]
    MissingVenv {
        /// Expected executable.
        path: PathBuf,
    },

    /// A file or process operation failed.
    #[error("{step}: {source}")]
    Io {
        /// What was being done.
        step: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The peer did not come up in time.
    #[error("{name} did not become ready within {seconds} s; its output: {output}")]
    NotReady {
        /// Peer name.
        name: &'static str,
        /// Time waited.
        seconds: u64,
        /// What it printed.
        output: String,
    },
}

fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> PeerError {
    let step = step.into();
    move |source| PeerError::Io { step, source }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A real-hardware Redfish mockup from the shared fixtures, if present.
pub fn redfish_mockup(name: &str) -> Option<PathBuf> {
    let path = repo_root()
        .join("../shared/fixtures/redfish-mockups")
        .join(name);
    path.join("index.json").is_file().then_some(path)
}

fn venv_tool(name: &str) -> Result<PathBuf, PeerError> {
    let path = repo_root().join(".venv/bin").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(PeerError::MissingVenv { path })
    }
}

/// A free TCP port on 127.0.0.1.
///
/// # Errors
/// No port could be bound.
pub fn free_tcp_port() -> Result<u16, PeerError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind a TCP port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("read the TCP port"))?
        .port())
}

/// A free UDP port on 127.0.0.1.
///
/// # Errors
/// No port could be bound.
pub fn free_udp_port() -> Result<u16, PeerError> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(io("bind a UDP port"))?;
    Ok(socket.local_addr().map_err(io("read the UDP port"))?.port())
}

/// A running emulator process; killed and reaped on drop.
pub struct Peer {
    child: Child,
    /// Port it listens on.
    pub port: u16,
    _state: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    name: &'static str,
    command: &mut Command,
    port: u16,
    state: tempfile::TempDir,
) -> Result<Peer, PeerError> {
    let log = state.path().join("peer.log");
    let log_file = std::fs::File::create(&log).map_err(io("create the peer log"))?;
    let log_err = log_file.try_clone().map_err(io("share the peer log"))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(io(format!("start {name}")))?;
    Ok(Peer {
        child,
        port,
        _state: state,
    })
}

fn read_log(peer: &Peer) -> String {
    std::fs::read_to_string(peer._state.path().join("peer.log")).unwrap_or_default()
}

/// Options of a sushy-emulator started with the fake driver.
#[derive(Debug, Clone, Default)]
pub struct SushyFakeOptions {
    /// Require HTTP Basic with [`BMC_USER`]/[`BMC_PASSWORD`].
    pub basic_auth: bool,
}

/// Starts `sushy-emulator` with its fake driver: one system, powered off,
/// with a NIC, a storage controller with two drives, and a virtual CD.
///
/// # Errors
/// A missing venv, or an emulator that does not start.
pub fn start_sushy_fake(options: &SushyFakeOptions) -> Result<Peer, PeerError> {
    let emulator = venv_tool("sushy-emulator")?;
    let state = tempfile::tempdir().map_err(io("create a state directory"))?;
    let port = free_tcp_port()?;

    let auth_line = if options.basic_auth {
        let htpasswd = state.path().join("htpasswd");
        std::fs::write(
            &htpasswd,
            format!("{BMC_USER}:{}\n", bcrypt_hash(BMC_PASSWORD)?),
        )
        .map_err(io("write htpasswd"))?;
        format!(
            "SUSHY_EMULATOR_AUTH_FILE = {:?}\n",
            htpasswd.display().to_string()
        )
    } else {
        String::new()
    };
    let config = format!(
        r#"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = {port}
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_STATE_DIR = {state_dir:?}
{auth_line}SUSHY_EMULATOR_FAKE_SYSTEMS = [
    {{'uuid': '{FAKE_SYSTEM_UUID}', 'name': 'node-0', 'power_state': 'Off',
      'nics': [{{'mac': '{FAKE_SYSTEM_MAC}', 'ip': '172.22.0.100'}}]}},
]
SUSHY_EMULATOR_STORAGE = {{
    '{FAKE_SYSTEM_UUID}': [{{'Id': '1', 'Name': 'Local Storage Controller',
        'StorageControllers': [{{'MemberId': '0', 'Name': 'RAID', 'SpeedGbps': 12}}],
        'Drives': ['32ADF365C6C1B7BD', '58CFF987G8J2V9KL']}}],
}}
SUSHY_EMULATOR_DRIVES = {{
    ('{FAKE_SYSTEM_UUID}', '1'): [
        {{'Id': '32ADF365C6C1B7BD', 'Name': 'Drive1', 'CapacityBytes': 899527000000, 'Protocol': 'SAS'}},
        {{'Id': '58CFF987G8J2V9KL', 'Name': 'Drive2', 'CapacityBytes': 12345670000, 'Protocol': 'SATA'}},
    ],
}}
"#,
        state_dir = state.path().join("sushy").display().to_string(),
    );
    let config_path = state.path().join("emulator.conf");
    std::fs::write(&config_path, config).map_err(io("write the emulator config"))?;

    let mut command = Command::new(emulator);
    command.arg("--config").arg(&config_path);
    let peer = spawn("sushy-emulator", &mut command, port, state)?;
    wait_for_http(&peer, "sushy-emulator")?;
    Ok(peer)
}

fn bcrypt_hash(password: &str) -> Result<String, PeerError> {
    let python = venv_tool("python")?;
    let output = Command::new(python)
        .args([
            "-c",
            "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(rounds=4)).decode())",
            password,
        ])
        .output()
        .map_err(io("hash the emulator password"))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Starts `sushy-static` serving a mockup tree.
///
/// # Errors
/// A missing venv, or a server that does not start.
pub fn start_sushy_static(mockup: &Path) -> Result<Peer, PeerError> {
    let server = venv_tool("sushy-static")?;
    let state = tempfile::tempdir().map_err(io("create a state directory"))?;
    let port = free_tcp_port()?;
    let mut command = Command::new(server);
    command
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m"])
        .arg(mockup);
    let peer = spawn("sushy-static", &mut command, port, state)?;
    wait_for_http(&peer, "sushy-static")?;
    Ok(peer)
}

/// Starts the pyghmi-based IPMI simulator of `peers/ipmi_sim.py`.
///
/// # Errors
/// A missing venv, or a simulator that does not start.
pub fn start_ipmi_sim() -> Result<Peer, PeerError> {
    let python = venv_tool("python")?;
    let state = tempfile::tempdir().map_err(io("create a state directory"))?;
    let port = free_udp_port()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/ipmi_sim.py");
    let mut command = Command::new(python);
    command
        .arg("-u")
        .arg(script)
        .args([&port.to_string(), BMC_USER, BMC_PASSWORD]);
    let peer = spawn("ipmi simulator", &mut command, port, state)?;
    wait_until("ipmi simulator", &peer, || {
        read_log(&peer).contains("listening")
    })?;
    Ok(peer)
}

fn wait_for_http(peer: &Peer, name: &'static str) -> Result<(), PeerError> {
    wait_until(name, peer, || http_root_answers(peer.port))
}

fn wait_until(name: &'static str, peer: &Peer, ready: impl Fn() -> bool) -> Result<(), PeerError> {
    let limit = Duration::from_secs(20);
    let started = Instant::now();
    while started.elapsed() < limit {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(PeerError::NotReady {
        name,
        seconds: limit.as_secs(),
        output: read_log(peer),
    })
}

fn http_root_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /redfish/v1/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut status = String::new();
    let _ = BufReader::new(&mut stream).read_line(&mut status);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    status.contains(" 200")
}

/// Runs `ipmitool -I lanplus` against a peer and returns its output.
///
/// # Errors
/// ipmitool missing (`make setup-packages` installs it) or failing.
pub fn ipmitool(port: u16, args: &[&str]) -> Result<String, PeerError> {
    let output = Command::new("ipmitool")
        .args([
            "-I",
            "lanplus",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            BMC_USER,
            "-P",
            BMC_PASSWORD,
        ])
        .args(args)
        .output()
        .map_err(io("run ipmitool (install it with `make setup-packages`)"))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}
