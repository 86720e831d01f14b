//! The real agent loop against the real agent API over HTTPS: commands and reports flow,
//! hosts cannot reach each other's commands, and a restarted API re-delivers an unfinished
//! command that the agent answers from its ledger instead of running it again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use ingot_agent::client::Agent;
use ingot_agent::hardware::SimulatedHardware;
use ingot_agent::inventory::{HardwareDetails, Nic, Storage};
use ingot_agent::protocol::{Command, CommandResult, Report};
use ingot_agent_api::{AgentApi, AgentApiConfig, CertificateAuthority, CommandState, Snapshot};

const MAC: &str = "52:54:00:aa:00:01";

fn hardware(dir: &std::path::Path) -> SimulatedHardware {
    let path = dir.join("sda.img");
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    file.set_len(64 << 20).unwrap_or_else(|e| panic!("{e}"));
    let storage = Storage {
        name: "/dev/sda".into(),
        size_bytes: 64 << 20,
        serial_number: "SER-1".into(),
        ..Storage::default()
    };
    let nics = vec![Nic {
        name: "eno1".into(),
        mac: MAC.into(),
        ..Nic::default()
    }];
    SimulatedHardware {
        details: HardwareDetails {
            storage: vec![storage],
            nics,
            ..HardwareDetails::default()
        },
        disk_files: BTreeMap::from([("/dev/sda".to_owned(), path)]),
    }
}

async fn start(ca: &CertificateAuthority, listen: SocketAddr, snapshot: Snapshot) -> AgentApi {
    let config = AgentApiConfig {
        listen,
        server_names: vec!["127.0.0.1".into()],
        advertised_url: None,
        ca: ca.clone(),
        silence_limit: ingot_agent_api::DEFAULT_SILENCE_LIMIT,
    };
    // The previous server's socket may take a moment to close after a restart.
    for _ in 0..50 {
        if let Ok(api) = AgentApi::start(config.clone(), snapshot.clone()).await {
            return api;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("agent API did not start on {listen}");
}

/// A new CA and an API without history on an ephemeral port.
async fn start_fresh() -> (CertificateAuthority, AgentApi) {
    let ca = CertificateAuthority::generate().unwrap_or_else(|e| panic!("{e}"));
    let listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    let api = start(&ca, listen, Snapshot::default()).await;
    (ca, api)
}

/// The address the API listens on, for a restart on the same one.
fn listen_address(api: &AgentApi) -> SocketAddr {
    api.url()
        .trim_start_matches("https://")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn wait_final(api: &AgentApi, host: &str, id: &str) -> CommandState {
    for _ in 0..200 {
        if let Ok(state) = api.status(host, id)
            && state.is_final()
        {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("command {id} did not finish: {:?}", api.status(host, id));
}

fn https_client(ca: &CertificateAuthority) -> reqwest::Client {
    let cert =
        reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_commands_and_a_restarted_api_gets_the_ledgered_result() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (ca, api) = start_fresh().await;
    let listen = listen_address(&api);
    let token = api
        .register_host("node-0", &[MAC.to_uppercase()])
        .unwrap_or_else(|e| panic!("{e}"));
    let hardware = Arc::new(hardware(dir.path()));
    let disk = hardware.disk_files["/dev/sda"].clone();
    let agent = Agent::new(
        api.boot_config("node-0", &token),
        hardware,
        dir.path().to_owned(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let agent_task = tokio::spawn(async move { agent.run().await });

    api.enqueue("node-0", "inspect-1", Command::Inventory)
        .unwrap_or_else(|e| panic!("{e}"));
    let inventory = wait_final(&api, "node-0", "inspect-1").await;
    let CommandState::Succeeded { result } = inventory else {
        panic!("inventory failed: {inventory:?}")
    };
    let CommandResult::Inventory { hardware } = *result else {
        panic!("unexpected result {result:?}")
    };
    assert_eq!(hardware.storage[0].serial_number, "SER-1");

    std::fs::File::options()
        .write(true)
        .open(&disk)
        .and_then(|f| f.write_all_at(b"\x55\xaa", 510))
        .unwrap_or_else(|e| panic!("{e}"));
    api.enqueue("node-0", "clean-1", Command::EraseMetadata)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        wait_final(&api, "node-0", "clean-1").await,
        CommandState::Succeeded { .. }
    ));

    // The operator persisted its state while the erase was still running, then restarted.
    let mut stale = api.snapshot();
    if let Some(host) = stale.hosts.get_mut("node-0") {
        for command in &mut host.commands {
            if command.id == "clean-1" {
                command.state = CommandState::Delivered;
            }
        }
    }
    drop(api);
    // Data written after the erase must survive: a second erase would wipe it.
    std::fs::File::options()
        .write(true)
        .open(&disk)
        .and_then(|f| f.write_all_at(b"MARK", 0))
        .unwrap_or_else(|e| panic!("{e}"));
    let api = start(&ca, listen, stale).await;

    let state = wait_final(&api, "node-0", "clean-1").await;

    assert!(matches!(state, CommandState::Succeeded { .. }), "{state:?}");
    let mut mark = [0u8; 4];
    std::fs::File::open(&disk)
        .and_then(|f| f.read_exact_at(&mut mark, 0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&mark, b"MARK", "the agent ran the erase a second time");
    assert!(!agent_task.is_finished());
    agent_task.abort();
}

/// A deployment whose agent died mid-write fails; the cleaning that follows boots new media.
/// The agent booted from it runs the cleaning's commands, never the dead agent's image write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_booted_from_new_media_never_runs_the_commands_of_an_earlier_boot() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (ca, api) = start_fresh().await;
    api.publish_media("lab-0", &[MAC.into()])
        .unwrap_or_else(|e| panic!("{e}"));
    api.enqueue("lab-0", "deploy-1.write-image", Command::Sync)
        .unwrap_or_else(|e| panic!("{e}"));

    let url = api
        .publish_media("lab-0", &[MAC.into()])
        .unwrap_or_else(|e| panic!("{e}"));
    api.enqueue("lab-0", "deprovision-2.erase", Command::Inventory)
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, config) = fetch_boot_config(&https_client(&ca), &url).await;
    let config = config.unwrap_or_else(|| panic!("no boot configuration"));
    let agent = Agent::new(
        config,
        Arc::new(hardware(dir.path())),
        dir.path().to_owned(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let agent_task = tokio::spawn(async move { agent.run().await });

    let cleaning = wait_final(&api, "lab-0", "deprovision-2.erase").await;

    assert!(
        matches!(cleaning, CommandState::Succeeded { .. }),
        "{cleaning:?}"
    );
    assert!(
        api.status("lab-0", "deploy-1.write-image").is_err(),
        "the earlier boot's command is still queued"
    );
    agent_task.abort();
}

#[tokio::test]
async fn hosts_cannot_see_or_answer_each_others_commands() {
    let (ca, api) = start_fresh().await;
    let token_a = api
        .register_host("a", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let token_b = api
        .register_host("b", &["52:54:00:00:00:0b".into()])
        .unwrap_or_else(|e| panic!("{e}"));
    api.enqueue("b", "secret", Command::Inventory)
        .unwrap_or_else(|e| panic!("{e}"));
    let client = https_client(&ca);
    let url = |path: &str| format!("{}/v1/hosts/{path}", api.url());
    let hello = serde_json::json!({"version": 1, "macs": [], "agentVersion": "test"});
    let failed = serde_json::to_value(Report::Failed {
        error: "forged".into(),
    })
    .unwrap_or_default();
    let status = |response: Result<reqwest::Response, reqwest::Error>| {
        response.map(|r| r.status().as_u16()).unwrap_or_default()
    };

    let with_a_token_on_b = client
        .get(url("b/commands/next"))
        .bearer_auth(&token_a)
        .send()
        .await;
    let forged_report = client
        .post(url("b/commands/secret/report"))
        .bearer_auth(&token_a)
        .json(&failed)
        .send()
        .await;
    let report_through_own_path = client
        .post(url("a/commands/secret/report"))
        .bearer_auth(&token_a)
        .json(&failed)
        .send()
        .await;
    let no_token = client.post(url("a/hello")).json(&hello).send().await;
    let wrong_macs = client
        .post(url("b/hello"))
        .bearer_auth(&token_b)
        .json(&hello)
        .send()
        .await;
    let poll_before_hello = client
        .get(url("a/commands/next"))
        .bearer_auth(&token_a)
        .send()
        .await;

    assert_eq!(status(with_a_token_on_b), 401);
    assert_eq!(status(forged_report), 401);
    assert_eq!(status(report_through_own_path), 404);
    assert_eq!(status(no_token), 401);
    assert_eq!(status(wrong_macs), 403);
    assert_eq!(status(poll_before_hello), 428);
    assert_eq!(api.status("b", "secret").ok(), Some(CommandState::Pending));

    let untrusted = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        untrusted.get(url("a/commands/next")).send().await.is_err(),
        "the server certificate must chain to the CA only"
    );
}

#[tokio::test]
async fn published_media_boots_one_agent_and_republishing_revokes_it() {
    let (ca, api) = start_fresh().await;
    let http = https_client(&ca);

    let first = api
        .publish_media("lab-0", &[MAC.into()])
        .unwrap_or_else(|e| panic!("{e}"));
    let config: ingot_agent::bootconfig::BootConfig = http
        .get(&first)
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.host, "lab-0");
    assert_eq!(config.api_url, api.url());
    assert!(!api.connected("lab-0"));

    let second = api
        .publish_media("lab-0", &[MAC.into()])
        .unwrap_or_else(|e| panic!("{e}"));
    let stale = http
        .get(&first)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stale_hello = say_hello(&http, &api, "lab-0", &config.token).await;

    assert_ne!(first, second);
    assert_eq!(stale.status(), reqwest::StatusCode::NOT_FOUND);
    assert_eq!(stale_hello.status(), reqwest::StatusCode::UNAUTHORIZED);
}

/// An agent's hello for `host` with `token`, as the agent sends it.
async fn say_hello(
    http: &reqwest::Client,
    api: &AgentApi,
    host: &str,
    token: &str,
) -> reqwest::Response {
    http.post(format!("{}/v1/hosts/{host}/hello", api.url()))
        .bearer_auth(token)
        .json(&serde_json::json!({"version": 1, "macs": [MAC], "agentVersion": "test"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Fetches `url` and returns its status and, on success, the boot configuration it serves.
async fn fetch_boot_config(
    http: &reqwest::Client,
    url: &str,
) -> (
    reqwest::StatusCode,
    Option<ingot_agent::bootconfig::BootConfig>,
) {
    let response = http.get(url).send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = response.status();
    if !status.is_success() {
        return (status, None);
    }
    let config = response.json().await.unwrap_or_else(|e| panic!("{e}"));
    (status, Some(config))
}

#[tokio::test]
async fn network_boot_serves_the_current_media_by_mac_only_to_the_hosts_nics() {
    let (ca, api) = start_fresh().await;
    let http = https_client(&ca);
    let by_mac = |mac: &str| format!("{}/v1/network-boot/{mac}", api.url());
    let other_mac = "52:54:00:bb:00:02";

    let first = api
        .publish_media("lab-0", &[MAC.to_uppercase()])
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, from_media) = fetch_boot_config(&http, &first).await;
    let (status, from_network) = fetch_boot_config(&http, &by_mac(MAC)).await;
    let (upper_status, _) = fetch_boot_config(&http, &by_mac(&MAC.to_uppercase())).await;
    let (stranger_status, stranger) = fetch_boot_config(&http, &by_mac(other_mac)).await;

    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(upper_status, reqwest::StatusCode::OK);
    assert!(from_media.is_some());
    assert_eq!(from_network, from_media);
    assert_eq!(stranger_status, reqwest::StatusCode::NOT_FOUND);
    assert!(stranger.is_none());

    api.publish_media("lab-0", &[other_mac.into()])
        .unwrap_or_else(|e| panic!("{e}"));
    let (old_mac_status, _) = fetch_boot_config(&http, &by_mac(MAC)).await;
    let (_, republished) = fetch_boot_config(&http, &by_mac(other_mac)).await;

    assert_eq!(old_mac_status, reqwest::StatusCode::NOT_FOUND);
    let republished = republished.unwrap_or_else(|| panic!("the new MAC boots"));
    assert_ne!(
        Some(&republished.token),
        from_media.as_ref().map(|c| &c.token)
    );
    assert!(!api.connected("lab-0"));

    api.remove_host("lab-0");
    let response = http
        .get(by_mac(other_mac))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = response.status();
    let message = response.text().await.unwrap_or_default();

    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    assert!(
        message.contains("no deploy media is published for MAC 52:54:00:bb:00:02"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_report_is_acknowledged_only_once_the_state_holding_it_is_saved() {
    let (ca, api) = start_fresh().await;
    api.acknowledge_reports_once_saved();
    let token = api
        .register_host("a", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    api.enqueue("a", "erase", Command::Inventory)
        .unwrap_or_else(|e| panic!("{e}"));
    let failed = Report::Failed {
        error: "disk gone".into(),
    };
    let report = https_client(&ca)
        .post(format!("{}/v1/hosts/a/commands/erase/report", api.url()))
        .bearer_auth(&token)
        .json(&failed)
        .send();
    let report = tokio::spawn(report);

    let recorded = wait_final(&api, "a", "erase").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!report.is_finished(), "acknowledged before it was saved");
    api.saved(*api.changes().borrow());

    let answer = tokio::time::timeout(Duration::from_secs(5), report)
        .await
        .unwrap_or_else(|e| panic!("not acknowledged after the save: {e}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.status().as_u16(), 204);
    assert!(matches!(recorded, CommandState::Failed { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_names_a_host_when_its_agent_checks_in_and_when_a_command_finishes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (_ca, api) = start_fresh().await;
    let mut news = api.news();
    let token = api
        .register_host("node-0", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::new(
        api.boot_config("node-0", &token),
        Arc::new(hardware(dir.path())),
        dir.path().to_owned(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let agent_task = tokio::spawn(async move { agent.run().await });

    let checked_in = tokio::time::timeout(Duration::from_secs(10), news.recv()).await;
    assert_eq!(
        checked_in.ok().and_then(Result::ok).as_deref(),
        Some("node-0")
    );
    assert!(api.connected("node-0"));

    api.enqueue("node-0", "inspect-1", Command::Inventory)
        .unwrap_or_else(|e| panic!("{e}"));
    let finished = tokio::time::timeout(Duration::from_secs(10), news.recv()).await;
    assert_eq!(
        finished.ok().and_then(Result::ok).as_deref(),
        Some("node-0")
    );
    assert!(
        api.status("node-0", "inspect-1")
            .is_ok_and(|state| state.is_final())
    );

    // Progress reports and idle long-polls are no news.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(news.try_recv().is_err(), "news without anything new");
    agent_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_api_serves_the_media_a_machine_boots_from_with_a_new_token() {
    let (ca, api) = start_fresh().await;
    let listen = listen_address(&api);
    let replaced = api
        .publish_media("lab-0", &[MAC.into()])
        .unwrap_or_else(|e| panic!("{e}"));
    let url = api
        .publish_media("lab-0", &[MAC.into()])
        .unwrap_or_else(|e| panic!("{e}"));
    let http = https_client(&ca);
    let (_, before) = fetch_boot_config(&http, &url).await;
    let snapshot = api.snapshot();
    drop(api);

    let api = start(&ca, listen, snapshot).await;
    let (status, config) = fetch_boot_config(&http, &url).await;
    let (again, same) = fetch_boot_config(&http, &url).await;
    let (by_mac, network) =
        fetch_boot_config(&http, &format!("{}/v1/network-boot/{MAC}", api.url())).await;
    let (old, _) = fetch_boot_config(&http, &replaced).await;

    assert_eq!(status, reqwest::StatusCode::OK);
    let config = config.unwrap_or_else(|| panic!("no boot configuration"));
    let before = before.unwrap_or_else(|| panic!("no boot configuration before the restart"));
    assert_ne!(config.token, before.token, "the token was kept somewhere");
    assert_eq!(
        (again, same),
        (reqwest::StatusCode::OK, Some(config.clone()))
    );
    assert_eq!(
        (by_mac, network),
        (reqwest::StatusCode::OK, Some(config.clone()))
    );
    assert_eq!(
        old,
        reqwest::StatusCode::NOT_FOUND,
        "replaced media came back"
    );
    let hello = say_hello(&http, &api, "lab-0", &config.token).await;
    assert!(hello.status().is_success(), "{}", hello.status());
    assert!(api.connected("lab-0"));
    let saved = serde_json::to_string(&api.snapshot()).unwrap_or_default();
    let id = url.rsplit('/').next().unwrap_or_default();
    assert!(!saved.contains(id), "the media id was saved");
}
