//! Faults injected between the driver components and real emulators: each
//! must end in the right error class, within the call's deadline, without
//! a crash of the plugin.
//!
//! Needs `make setup` (venv) and `make plugins` (components).

use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingot_bmc_tests::http_stub::{Reply, StubRequest, StubServer};
use ingot_bmc_tests::peers::{self, BMC_PASSWORD, BMC_USER, FAKE_SYSTEM_UUID, SushyFakeOptions};
use ingot_bmc_tests::plugin::{DriverUnderTest, ErrorClass, address, error_class};
use ingot_plugin_host::bindings::types::PowerState;
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::limits::Limits;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TARGET_TMPDIR: &str = env!("CARGO_TARGET_TMPDIR");
const BUDGET: Duration = Duration::from_secs(6);

fn limits() -> Limits {
    Limits {
        timeout_ms: u64::try_from(BUDGET.as_millis()).unwrap_or(6_000),
        ..Limits::default()
    }
}

fn redfish(port: u16) -> Result<DriverUnderTest, Box<dyn std::error::Error>> {
    let address = address("redfish+http", port, "");
    Ok(DriverUnderTest::load(
        Path::new(TARGET_TMPDIR),
        "ingot-plugin-redfish",
        address,
        (BMC_USER, BMC_PASSWORD),
        limits(),
    )?)
}

fn is_system(request: &StubRequest) -> bool {
    request.method == "GET"
        && request.path.contains(FAKE_SYSTEM_UUID)
        && !request.path.contains("/VirtualMedia")
}

/// Calls get-power-state and returns the error class and the time taken.
async fn power_state_failure(driver: &DriverUnderTest) -> (Option<ErrorClass>, Duration, String) {
    let started = Instant::now();
    let result = driver.call(PluginCall::GetPowerState).await;
    let elapsed = started.elapsed();
    let text = format!("{result:?}");
    (result.err().as_ref().and_then(error_class), elapsed, text)
}

fn within_deadline(elapsed: Duration) -> bool {
    elapsed <= BUDGET + Duration::from_secs(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_unreachable() -> TestResult {
    let stub = StubServer::start(None, |_| Reply::Drop)?;
    let (class, elapsed, detail) = power_state_failure(&redfish(stub.port)?).await;
    assert_eq!(class, Some(ErrorClass::Unreachable), "{detail}");
    assert!(within_deadline(elapsed), "took {elapsed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_transient() -> TestResult {
    let bmc = peers::start_sushy_fake(&SushyFakeOptions::default())?;
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let stub = StubServer::start(Some(bmc.port), move |request| {
        if is_system(request) {
            count.fetch_add(1, Ordering::SeqCst);
            Reply::json(
                500,
                r#"{"error": {"code": "Base.1.0.InternalError", "message": "BMC firmware fault"}}"#,
            )
        } else {
            Reply::Forward
        }
    })?;
    let (class, elapsed, detail) = power_state_failure(&redfish(stub.port)?).await;
    assert_eq!(class, Some(ErrorClass::Transient), "{detail}");
    assert!(detail.contains("BMC firmware fault"), "{detail}");
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "a failed GET is retried once"
    );
    assert!(within_deadline(elapsed), "took {elapsed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_a_protocol_error() -> TestResult {
    let bmc = peers::start_sushy_fake(&SushyFakeOptions::default())?;
    let stub = StubServer::start(Some(bmc.port), |request| {
        if is_system(request) {
            Reply::json(200, r#"{"PowerState": "On", "Boot": {"#)
        } else {
            Reply::Forward
        }
    })?;
    let (class, elapsed, detail) = power_state_failure(&redfish(stub.port)?).await;
    assert_eq!(class, Some(ErrorClass::Protocol), "{detail}");
    assert!(within_deadline(elapsed), "took {elapsed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_bmc_fails_by_the_deadline() -> TestResult {
    let bmc = peers::start_sushy_fake(&SushyFakeOptions::default())?;
    let stub = StubServer::start(Some(bmc.port), |request| {
        if is_system(request) {
            Reply::Stall(Duration::from_secs(10))
        } else {
            Reply::Forward
        }
    })?;
    let (class, elapsed, detail) = power_state_failure(&redfish(stub.port)?).await;
    assert_eq!(
        class,
        Some(ErrorClass::Unreachable),
        "the driver reports the stall itself, not the runtime's timeout: {detail}"
    );
    assert!(detail.contains("in time"), "{detail}");
    assert!(
        within_deadline(elapsed),
        "took {elapsed:?}, the stall was 10 s"
    );
    println!("stalled BMC after {elapsed:?}: {detail}");
    Ok(())
}

/// A SessionService in front of sushy-emulator (which has none): issues
/// numbered tokens, records logins and logouts, and answers 401 to the
/// tokens the test marks as expired.
struct SessionProxy {
    server: StubServer,
    logins: Arc<AtomicUsize>,
    logouts: Arc<Mutex<Vec<String>>>,
}

fn session_proxy(
    upstream: u16,
    expire: impl Fn(usize) -> bool + Send + Sync + 'static,
) -> std::io::Result<SessionProxy> {
    let logins = Arc::new(AtomicUsize::new(0));
    let logouts = Arc::new(Mutex::new(Vec::new()));
    let (issued, closed) = (logins.clone(), logouts.clone());
    let server = StubServer::start(Some(upstream), move |request| {
        let sessions = "/redfish/v1/SessionService/Sessions";
        if request.method == "POST" && request.path == sessions {
            let number = issued.fetch_add(1, Ordering::SeqCst) + 1;
            let body = String::from_utf8_lossy(&request.body);
            if !body.contains(BMC_PASSWORD) {
                return Reply::json(401, "{}");
            }
            return Reply::Respond {
                status: 201,
                headers: vec![
                    ("X-Auth-Token".to_owned(), format!("token-{number}")),
                    ("Location".to_owned(), format!("{sessions}/{number}")),
                ],
                body: b"{}".to_vec(),
            };
        }
        if request.method == "DELETE" && request.path.starts_with(sessions) {
            if let Ok(mut closed) = closed.lock() {
                closed.push(request.path.clone());
            }
            return Reply::Respond {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
            };
        }
        if request.path == "/redfish/v1/" {
            return Reply::Forward;
        }
        let token = request
            .header("X-Auth-Token")
            .and_then(|t| t.strip_prefix("token-"))
            .and_then(|n| n.parse().ok());
        match token {
            Some(number) if !expire(number) => Reply::Forward,
            _ => Reply::json(401, r#"{"error": {"message": "session expired"}}"#),
        }
    })?;
    Ok(SessionProxy {
        server,
        logins,
        logouts,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_renewed_once_and_every_session_is_closed() -> TestResult {
    let bmc = peers::start_sushy_fake(&SushyFakeOptions::default())?;
    // The first session expires as soon as it is used.
    let proxy = session_proxy(bmc.port, |number| number == 1)?;
    let driver = redfish(proxy.server.port)?;

    let reply = driver.call(PluginCall::GetPowerState).await?;
    assert!(
        matches!(
            reply,
            PluginReply::PowerState(PowerState::Off | PowerState::On)
        ),
        "{reply:?}"
    );
    assert_eq!(
        proxy.logins.load(Ordering::SeqCst),
        2,
        "one login, one renewal"
    );
    let logouts = proxy.logouts.lock().map(|l| l.clone()).unwrap_or_default();
    assert_eq!(
        logouts,
        ["/redfish/v1/SessionService/Sessions/2"],
        "the live session is closed"
    );

    driver.call(PluginCall::GetPowerState).await?;
    assert_eq!(proxy.logins.load(Ordering::SeqCst), 3);
    let logouts = proxy.logouts.lock().map(|l| l.len()).unwrap_or_default();
    assert_eq!(logouts, 2, "a later call closes its session too");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_rejected_after_renewal_is_unauthorized() -> TestResult {
    let bmc = peers::start_sushy_fake(&SushyFakeOptions::default())?;
    let proxy = session_proxy(bmc.port, |_| true)?;
    let (class, elapsed, detail) = power_state_failure(&redfish(proxy.server.port)?).await;
    assert_eq!(class, Some(ErrorClass::Unauthorized), "{detail}");
    assert_eq!(
        proxy.logins.load(Ordering::SeqCst),
        2,
        "renewed exactly once"
    );
    assert!(within_deadline(elapsed), "took {elapsed:?}");
    Ok(())
}

/// Relays datagrams between the driver and the IPMI BMC, cutting every
/// answer from the BMC short.
fn truncating_udp_proxy(bmc_port: u16) -> std::io::Result<(u16, Arc<AtomicBool>)> {
    let front = UdpSocket::bind("127.0.0.1:0")?;
    let back = UdpSocket::bind("127.0.0.1:0")?;
    back.connect(("127.0.0.1", bmc_port))?;
    let port = front.local_addr()?.port();
    let stop = Arc::new(AtomicBool::new(false));
    front.set_read_timeout(Some(Duration::from_millis(100)))?;
    back.set_read_timeout(Some(Duration::from_millis(100)))?;

    let stopping = stop.clone();
    std::thread::spawn(move || {
        let mut client = None;
        let mut buffer = [0u8; 2048];
        while !stopping.load(Ordering::Relaxed) {
            if let Ok((len, from)) = front.recv_from(&mut buffer) {
                client = Some(from);
                let _ = back.send(&buffer[..len]);
            }
            if let (Ok(len), Some(client)) = (back.recv(&mut buffer), client) {
                let _ = front.send_to(&buffer[..len / 2], client);
            }
        }
    });
    Ok((port, stop))
}

fn ipmi(port: u16, budget: Duration) -> Result<DriverUnderTest, Box<dyn std::error::Error>> {
    let limits = Limits {
        timeout_ms: u64::try_from(budget.as_millis()).unwrap_or(5_000),
        ..Limits::default()
    };
    let config = vec![("ipmi-timeout-ms".to_owned(), "200".to_owned())];
    Ok(DriverUnderTest::load_with_config(
        Path::new(TARGET_TMPDIR),
        "ingot-plugin-ipmi",
        address("ipmi", port, ""),
        (BMC_USER, BMC_PASSWORD),
        limits,
        config,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_ipmi_answers_are_a_protocol_error() -> TestResult {
    let bmc = peers::start_ipmi_sim()?;
    let (port, stop) = truncating_udp_proxy(bmc.port)?;
    let budget = Duration::from_secs(5);
    let driver = ipmi(port, budget)?;
    let started = Instant::now();
    let result = driver.call(PluginCall::GetPowerState).await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        result.as_ref().err().and_then(error_class),
        Some(ErrorClass::Protocol),
        "{result:?}"
    );
    assert!(
        started.elapsed() <= budget + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_ipmi_port_is_unreachable() -> TestResult {
    let silent = UdpSocket::bind("127.0.0.1:0")?;
    let port = silent.local_addr()?.port();
    let budget = Duration::from_secs(5);
    let driver = ipmi(port, budget)?;
    let started = Instant::now();
    let result = driver.call(PluginCall::GetPowerState).await;
    assert_eq!(
        result.as_ref().err().and_then(error_class),
        Some(ErrorClass::Unreachable),
        "{result:?}"
    );
    assert!(
        started.elapsed() <= budget + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    drop(silent);
    Ok(())
}
