//! BMC transports: credentials are added by the host, and a driver reaches
//! only its own BMC.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ingot_plugin_host::bindings::driver::DriverError;
use ingot_plugin_host::bindings::imports::ingot::plugin::bmc_http::{Credentials, Request};
use ingot_plugin_host::bindings::imports::ingot::plugin::transport_types::TransportError;
use ingot_plugin_host::bindings::types::BmcAddress;
use ingot_plugin_host::bmc::{BmcAccess, BmcCredentials, HttpTarget};
use ingot_plugin_host::calls::PluginCall;
use ingot_plugin_host::error::{CallError, DomainError};
use ingot_plugin_host::limits::Limits;
use ingot_plugin_host::registry::Registry;
use ingot_plugin_host::state::CallScope;
use ingot_plugin_host::transport::{HttpCall, Transports};
use ingot_plugin_host::world::World;
use support::{FakeBmc, host_ref, registry, spec};

fn address(port: u16) -> BmcAddress {
    BmcAddress {
        scheme: "redfish+http".into(),
        host: "127.0.0.1".into(),
        port: Some(port),
        path: "/redfish/v1/Systems/1".into(),
        disable_certificate_verification: false,
    }
}

fn scope(port: u16, credentials: Option<BmcCredentials>) -> CallScope {
    CallScope {
        host: Some(host_ref("node-0")),
        bmc: Some(BmcAccess {
            host: host_ref("node-0"),
            address: address(port),
            credentials: credentials.map(Arc::new),
            boot_mac_address: None,
        }),
        ..CallScope::default()
    }
}

async fn escape_driver(other_port: u16) -> Registry {
    let registry = registry();
    let mut escape = spec(
        "ingot-fixture-bmc-escape",
        World::BmcDriver,
        Limits {
            timeout_ms: 5_000,
            ..Limits::default()
        },
    );
    escape.config = vec![("target".into(), format!("127.0.0.1:{other_port}"))];
    registry.load("escape", escape).await.expect("driver loads");
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_the_bmc_carry_host_side_credentials() {
    let bmc = FakeBmc::start(200, Vec::new(), "{}").await;
    let registry = escape_driver(9).await;

    let error = registry
        .call(
            "escape",
            PluginCall::Capabilities,
            scope(bmc.port, Some(BmcCredentials::new("admin", "s3cret"))),
        )
        .await
        .expect_err("the fixture reports what it reached");

    let CallError::Domain {
        error: DomainError::Driver(DriverError::Other(text)),
        ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(text, "reached it: status 200");
    let requests = bmc.requests();
    assert_eq!(requests[0].line, "GET /redfish/v1/ HTTP/1.1");
    assert_eq!(
        requests[0].header("authorization"),
        Some("Basic YWRtaW46czNjcmV0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_need_a_secret() {
    let bmc = FakeBmc::start(200, Vec::new(), "{}").await;
    let registry = escape_driver(9).await;

    let error = registry
        .call("escape", PluginCall::Capabilities, scope(bmc.port, None))
        .await
        .expect_err("no secret");

    assert!(format!("{error}").contains("NoCredentials"), "{error}");
    assert!(
        bmc.requests().is_empty(),
        "nothing was sent without credentials"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_addresses_are_denied() {
    let bmc = FakeBmc::start(200, Vec::new(), "{}").await;
    let elsewhere = FakeBmc::start(200, Vec::new(), "secret data").await;
    let registry = escape_driver(elsewhere.port).await;
    let credentials = Some(BmcCredentials::new("admin", "s3cret"));

    for call in [PluginCall::GetPowerState, PluginCall::Inventory] {
        let error = registry
            .call("escape", call, scope(bmc.port, credentials.clone()))
            .await
            .expect_err("denied");

        let CallError::DeniedCapability {
            capability, detail, ..
        } = &error
        else {
            panic!("{error:?}")
        };
        assert_eq!(capability, "bmc-http");
        assert!(detail.contains(&elsewhere.port.to_string()), "{detail}");
    }

    assert_eq!(
        elsewhere
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection left the host"
    );
    assert!(bmc.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_calls_need_a_bmc() {
    let registry = escape_driver(9).await;

    let error = registry
        .call("escape", PluginCall::GetPowerState, CallScope::default())
        .await
        .expect_err("no BMC");

    assert!(matches!(error, CallError::NoBmc { .. }), "{error:?}");
}

fn call<'a>(
    transports: &'a Transports,
    target: &'a HttpTarget,
    credentials: &'a BmcCredentials,
) -> HttpCall<'a> {
    call_for(transports, target, credentials, "default/host-0")
}

fn call_for<'a>(
    transports: &'a Transports,
    target: &'a HttpTarget,
    credentials: &'a BmcCredentials,
    host: &'a str,
) -> HttpCall<'a> {
    HttpCall {
        transports,
        plugin: "redfish",
        host,
        target,
        credentials: Some(credentials),
        deadline: Instant::now() + Duration::from_secs(5),
        response_cap: 1 << 20,
    }
}

fn request(method: &str, path: &str, body: &str, credentials: Credentials) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
        credentials,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_login_keeps_the_token_host_side() {
    let headers = vec![
        ("X-Auth-Token".to_owned(), "token-123".to_owned()),
        (
            "Location".to_owned(),
            "/redfish/v1/SessionService/Sessions/7".to_owned(),
        ),
    ];
    let bmc = FakeBmc::start(201, headers, "{}").await;
    let transports = Transports::new(&[]).expect("transports");
    let target = HttpTarget::from_address(&address(bmc.port));
    let credentials = BmcCredentials::new("admin", "p\"w");
    let http = call(&transports, &target, &credentials);

    let template = r#"{"UserName": "{{username}}", "Password": "{{password}}"}"#;
    let login = request(
        "POST",
        "/redfish/v1/SessionService/Sessions",
        template,
        Credentials::None,
    );
    let response = http
        .login(login, "X-Auth-Token")
        .await
        .expect("allowed")
        .expect("logged in");

    assert!(
        response
            .headers
            .iter()
            .all(|(name, _)| !name.eq_ignore_ascii_case("x-auth-token")),
        "token hidden"
    );
    assert!(
        response
            .headers
            .iter()
            .any(|(name, value)| name == "location" && value.ends_with("/7"))
    );
    let sent: serde_json::Value =
        serde_json::from_slice(&bmc.requests()[0].body).expect("JSON body");
    assert_eq!(sent["Password"], "p\"w");
    assert_eq!(bmc.requests()[0].header("authorization"), None);

    let get = request("GET", "/redfish/v1/Systems/1", "", Credentials::Session);
    http.send(get).await.expect("allowed").expect("sent");
    assert_eq!(bmc.requests()[1].header("x-auth-token"), Some("token-123"));

    transports.forget_session("redfish", &target, "default/host-0");
    let get = request("GET", "/redfish/v1/Systems/1", "", Credentials::Session);
    let answer = http.send(get).await.expect("allowed");
    assert!(
        matches!(answer, Err(TransportError::NoCredentials(_))),
        "{answer:?}"
    );
}

/// Hosts behind one Redfish service (one address, a system each) keep their own sessions:
/// one host's logout leaves another's session alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_behind_one_bmc_address_keep_their_own_sessions() {
    let headers = vec![("X-Auth-Token".to_owned(), "token-1".to_owned())];
    let bmc = FakeBmc::start(201, headers, "{}").await;
    let transports = Transports::new(&[]).expect("transports");
    let target = HttpTarget::from_address(&address(bmc.port));
    let credentials = BmcCredentials::new("admin", "pw");
    let first = call_for(&transports, &target, &credentials, "default/host-1");
    let second = call_for(&transports, &target, &credentials, "default/host-2");

    let template = r#"{"UserName": "{{username}}", "Password": "{{password}}"}"#;
    let login = || {
        request(
            "POST",
            "/redfish/v1/SessionService/Sessions",
            template,
            Credentials::None,
        )
    };
    first
        .login(login(), "X-Auth-Token")
        .await
        .expect("allowed")
        .expect("sent");
    second
        .login(login(), "X-Auth-Token")
        .await
        .expect("allowed")
        .expect("sent");
    transports.forget_session("redfish", &target, "default/host-2");

    let get = request("GET", "/redfish/v1/Systems/1", "", Credentials::Session);
    first.send(get).await.expect("allowed").expect("sent");
    let last = bmc.requests().len() - 1;
    assert_eq!(bmc.requests()[last].header("x-auth-token"), Some("token-1"));
    let get = request("GET", "/redfish/v1/Systems/2", "", Credentials::Session);
    let answer = second.send(get).await.expect("allowed");
    assert!(
        matches!(answer, Err(TransportError::NoCredentials(_))),
        "{answer:?}"
    );
}

/// A BMC that never answers the first connection it accepts, and answers every later one at
/// once: a system hanging on its first request.
async fn bmc_hanging_on_its_first_request() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            if held.is_empty() {
                held.push(stream);
                continue;
            }
            let mut head = [0_u8; 4096];
            let _ = stream.read(&mut head).await;
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (port, server)
}

/// One request at a time goes to a host's BMC, but hosts behind one address (a Redfish
/// service with a system each) do not wait for one another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_bmc_request_holds_up_its_own_host_only() {
    let (port, _server) = bmc_hanging_on_its_first_request().await;
    let transports = Transports::new(&[]).expect("transports");
    let target = HttpTarget::from_address(&address(port));
    let credentials = BmcCredentials::new("admin", "pw");
    let within = |host, limit| HttpCall {
        deadline: Instant::now() + limit,
        ..call_for(&transports, &target, &credentials, host)
    };
    let get = || request("GET", "/redfish/v1/Systems/1", "", Credentials::Basic);

    let hanging_call = within("default/host-1", Duration::from_secs(2));
    let hung = hanging_call.send(get());
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let other_host = within("default/host-2", Duration::from_secs(1))
            .send(get())
            .await;
        let same_host = within("default/host-1", Duration::from_millis(300))
            .send(get())
            .await;
        (other_host, same_host)
    };
    let (hung, (other_host, same_host)) = tokio::join!(hung, meanwhile);

    assert!(matches!(hung, Ok(Err(TransportError::Timeout))), "{hung:?}");
    let answered = other_host.expect("allowed").expect("answered");
    assert_eq!(answered.status, 200);
    assert!(
        matches!(same_host, Ok(Err(TransportError::Timeout))),
        "the host's second request waits for its first: {same_host:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_cannot_set_authentication_headers() {
    let bmc = FakeBmc::start(200, Vec::new(), "{}").await;
    let transports = Transports::new(&[]).expect("transports");
    let target = HttpTarget::from_address(&address(bmc.port));
    let credentials = BmcCredentials::new("admin", "pw");

    let mut sneaky = request("GET", "/redfish/v1/", "", Credentials::None);
    sneaky
        .headers
        .push(("Authorization".into(), "Basic Zm9vOmJhcg==".into()));

    assert!(
        call(&transports, &target, &credentials)
            .send(sneaky)
            .await
            .is_err(),
        "refused"
    );
    assert!(bmc.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_size_capped() {
    let bmc = FakeBmc::start(200, Vec::new(), &"x".repeat(4096)).await;
    let transports = Transports::new(&[]).expect("transports");
    let target = HttpTarget::from_address(&address(bmc.port));
    let credentials = BmcCredentials::new("admin", "pw");
    let mut http = call(&transports, &target, &credentials);
    http.response_cap = 1024;

    let answer = http
        .send(request("GET", "/big", "", Credentials::None))
        .await
        .expect("allowed");

    assert!(
        matches!(answer, Err(TransportError::TooLarge(1024))),
        "{answer:?}"
    );
}

fn tls_address(port: u16, disable_certificate_verification: bool) -> BmcAddress {
    BmcAddress {
        scheme: "redfish".into(),
        disable_certificate_verification,
        ..address(port)
    }
}

async fn get_over_tls(
    transports: &Transports,
    address: &BmcAddress,
) -> Result<u16, TransportError> {
    let target = HttpTarget::from_address(address);
    let credentials = BmcCredentials::new("admin", "pw");
    let answer = call(transports, &target, &credentials)
        .send(request("GET", "/redfish/v1/", "", Credentials::Basic))
        .await
        .expect("allowed");
    answer.map(|response| response.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificates_are_verified_unless_the_address_says_otherwise() {
    let (bmc, pem) = FakeBmc::start_tls(200, "{}").await;
    let transports = Transports::new(&[]).expect("transports");

    let verified = get_over_tls(&transports, &tls_address(bmc.port, false)).await;
    assert!(
        matches!(
            verified,
            Err(TransportError::Tls(_)) | Err(TransportError::Connect(_))
        ),
        "{verified:?}"
    );
    assert!(
        bmc.requests().is_empty(),
        "no request over an unverified connection"
    );

    let unverified = get_over_tls(&transports, &tls_address(bmc.port, true)).await;
    assert_eq!(unverified, Ok(200));

    let site_ca = reqwest::Certificate::from_pem(pem.as_bytes()).expect("certificate");
    let trusting = Transports::new(&[site_ca]).expect("transports");
    assert_eq!(
        get_over_tls(&trusting, &tls_address(bmc.port, false)).await,
        Ok(200),
        "a trusted root verifies"
    );
}
