//! The lab end to end: a Redfish client inserts the deploy media and powers a machine on, the
//! machine runs the real agent against a real agent API, the image is written, and the
//! machine then boots from its disk. Also covers authentication, injected faults and network
//! boot from the agent API's network boot server over IPMI.

use std::net::SocketAddr;
use std::time::Duration;

use ingot_agent::protocol::{
    Checksum, ChecksumAlgorithm, ChecksumSource, Command, CommandResult, ConfigDrive, ImageFormat,
    WriteImage,
};
use ingot_agent_api::{AgentApi, AgentApiConfig, CertificateAuthority, CommandState, Snapshot};
use ingot_lab::machine::{Activity, Faults, MachineEvent};
use ingot_lab::profile::Profile;
use ingot_lab::{Credentials, Lab, LabConfig};
use serde_json::{Value, json};

const USER: &str = "admin";
const PASSWORD: &str = "lab-password";

struct Setup {
    _dir: tempfile::TempDir,
    lab: Lab,
    api: AgentApi,
    http: reqwest::Client,
}

async fn setup(machines: u32) -> Setup {
    setup_with(machines, false).await
}

/// A lab and an agent API; with `network_boot`, the machines' firmware trusts the API's CA
/// and network-boots from its network boot server.
async fn setup_with(machines: u32, network_boot: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut profile = Profile {
        power_delay_ms: 100,
        ..Profile::default()
    };
    profile.disks[0].size_gib = 1;
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    let ca = CertificateAuthority::generate().unwrap_or_else(|e| panic!("{e}"));
    let api_listen = std::net::TcpListener::bind(localhost)
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    let config = LabConfig {
        machines,
        profile,
        dir: dir.path().to_owned(),
        listen: localhost,
        credentials: Credentials {
            username: USER.into(),
            password: PASSWORD.into(),
        },
        ipmi: true,
        trusted_ca_pem: network_boot.then(|| ca.cert_pem.clone()),
        network_boot_url: network_boot.then(|| format!("https://{api_listen}/v1/network-boot")),
    };
    let lab = Lab::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let api_config = AgentApiConfig {
        listen: api_listen,
        server_names: vec!["127.0.0.1".into()],
        advertised_url: None,
        ca,
        silence_limit: ingot_agent_api::DEFAULT_SILENCE_LIMIT,
    };
    let api = AgentApi::start(api_config, Snapshot::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Setup {
        _dir: dir,
        lab,
        api,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    fn redfish(&self, path: &str) -> String {
        format!("{}/redfish/v1/{path}", self.lab.url())
    }

    /// The MAC addresses of machine `id`.
    fn macs(&self, id: &str) -> Vec<String> {
        let machine = self
            .lab
            .machines()
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no {id}"));
        machine
            .details()
            .nics
            .iter()
            .map(|n| n.mac.clone())
            .collect()
    }

    /// Registers the machine with the agent API and publishes its deploy document.
    async fn publish_deploy_image(&self, id: &str) -> String {
        let macs = self.macs(id);
        let token = self
            .api
            .register_host(id, &macs)
            .unwrap_or_else(|e| panic!("{e}"));
        let document = serde_json::to_vec(&self.api.boot_config(id, &token)).unwrap_or_default();
        let url = format!("{}/images/deploy-{id}.json", self.lab.url());
        let uploaded = self
            .http
            .put(&url)
            .body(document)
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(uploaded.ok(), Some(201));
        url
    }

    async fn login(&self) -> String {
        let response = self
            .http
            .post(self.redfish("SessionService/Sessions"))
            .json(&json!({"UserName": USER, "Password": PASSWORD}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status().as_u16(), 201);
        response
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.redfish(path))
            .header("X-Auth-Token", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Inserts the deploy media, sets a one-time CD boot and powers on, all through Redfish.
    async fn boot_deploy_image(&self, token: &str, id: &str) {
        let media = self.publish_deploy_image(id).await;
        let insert = json!({"Image": media, "Inserted": true, "WriteProtected": true});
        let inserted = self
            .call(
                token,
                reqwest::Method::POST,
                &format!("Managers/{id}/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia"),
                Some(insert),
            )
            .await;
        assert_eq!(inserted.0, 204);
        let boot = json!({"Boot": {"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Once"}});
        assert_eq!(
            self.call(
                token,
                reqwest::Method::PATCH,
                &format!("Systems/{id}"),
                Some(boot)
            )
            .await
            .0,
            204
        );
        let reset = json!({"ResetType": "On"});
        assert_eq!(
            self.call(
                token,
                reqwest::Method::POST,
                &format!("Systems/{id}/Actions/ComputerSystem.Reset"),
                Some(reset)
            )
            .await
            .0,
            204
        );
        self.wait_activity(token, id, "agent").await;
    }

    async fn wait_activity(&self, token: &str, id: &str, wanted: &str) -> Value {
        for _ in 0..100 {
            let (_, system) = self
                .call(token, reqwest::Method::GET, &format!("Systems/{id}"), None)
                .await;
            if system["Oem"]["IngotLab"]["Activity"]["state"] == wanted {
                return system;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{id} never reached activity {wanted}");
    }

    /// The status code of a GET of Redfish `path` with session `token`.
    async fn get_status(&self, token: String, path: String) -> u16 {
        self.call(&token, reqwest::Method::GET, &path, None).await.0
    }

    /// Replaces the faults of machine `id` through the control API.
    async fn set_faults(&self, id: &str, faults: Faults) {
        let url = format!("{}/lab/v1/machines/{id}/faults", self.lab.url());
        self.http
            .put(url)
            .json(&faults)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn run(&self, host: &str, id: &str, command: Command) -> CommandState {
        self.api
            .enqueue(host, id, command)
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..600 {
            if let Ok(state) = self.api.status(host, id)
                && state.is_final()
            {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "command {id} did not finish: {:?}",
            self.api.status(host, id)
        );
    }
}

fn write_image(lab: &Lab, image: &str) -> Command {
    let url = format!("{}/images/{image}", lab.url());
    Command::WriteImage(Box::new(WriteImage {
        checksum: Some(Checksum {
            algorithm: ChecksumAlgorithm::Auto,
            value: ChecksumSource::Url(format!("{url}.sha256sum")),
        }),
        url,
        format: ImageFormat::Auto,
        root_device_hints: serde_json::from_value(json!({"deviceName": "/dev/sda"}))
            .unwrap_or_default(),
        config_drive: Some(ConfigDrive {
            user_data: Some("#cloud-config\n".into()),
            meta_data: json!({"uuid": "lab-0", "name": "lab-0"}),
            network_data: None,
        }),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_deploys_through_redfish_virtual_media_and_boots_its_disk() {
    let setup = setup(2).await;
    ingot_lab::images::generate(setup.lab.image_dir(), "lab-os", 96 << 20)
        .unwrap_or_else(|e| panic!("{e}"));
    let token = setup.login().await;
    let (_, systems) = setup
        .call(&token, reqwest::Method::GET, "Systems", None)
        .await;
    assert_eq!(systems["Members@odata.count"], 2);

    setup.boot_deploy_image(&token, "lab-0").await;

    let inventory = setup.run("lab-0", "inspect", Command::Inventory).await;
    let CommandState::Succeeded { result } = inventory else {
        panic!("inventory: {inventory:?}")
    };
    let CommandResult::Inventory { hardware } = *result else {
        panic!("unexpected {result:?}")
    };
    assert_eq!(
        hardware.nics[0].mac,
        setup.lab.machines()[0].details().nics[0].mac
    );
    assert_eq!(hardware.storage.len(), 2);
    let (_, drive) = setup
        .call(
            &token,
            reqwest::Method::GET,
            "Systems/lab-0/Storage/1/Drives/2",
            None,
        )
        .await;
    assert_eq!(
        drive["SerialNumber"],
        hardware.storage[1].serial_number.as_str()
    );

    let written = setup
        .run(
            "lab-0",
            "provision",
            write_image(&setup.lab, "lab-os.qcow2"),
        )
        .await;
    let CommandState::Succeeded { result } = written else {
        panic!("write: {written:?}")
    };
    let CommandResult::ImageWritten(written) = *result else {
        panic!("unexpected {result:?}")
    };
    assert_eq!(
        (written.format, written.image_bytes),
        (ImageFormat::Qcow2, 96 << 20)
    );
    assert!(
        written
            .verified_checksum
            .is_some_and(|c| c.starts_with("sha256:"))
    );
    let downloads: Value = setup
        .http
        .get(format!(
            "{}/lab/v1/images/lab-os.qcow2/downloads",
            setup.lab.url()
        ))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        downloads,
        json!({"started": 1, "completedByHost": {"lab-0": 1}}),
        "one download, served to the end, named for the host the agent serves"
    );

    let eject = setup
        .call(
            &token,
            reqwest::Method::POST,
            "Managers/lab-0/VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia",
            Some(json!({})),
        )
        .await;
    assert_eq!(eject.0, 204);
    let restart = json!({"ResetType": "ForceRestart"});
    assert_eq!(
        setup
            .call(
                &token,
                reqwest::Method::POST,
                "Systems/lab-0/Actions/ComputerSystem.Reset",
                Some(restart)
            )
            .await
            .0,
        204
    );
    let system = setup.wait_activity(&token, "lab-0", "bootedFromDisk").await;

    assert_eq!(system["BootProgress"]["LastState"], "OSRunning");
    assert_eq!(system["PowerState"], "On");
    assert_eq!(
        system["Boot"]["BootSourceOverrideEnabled"], "Disabled",
        "a Once override is consumed by the boot"
    );
    let (_, other) = setup
        .call(&token, reqwest::Method::GET, "Systems/lab-1", None)
        .await;
    assert_eq!(other["PowerState"], "Off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_internal_errors_and_dropped_sessions_hit_only_their_machine() {
    let setup = setup(2).await;
    let token = setup.login().await;
    let status = |token: &str, path: &str| setup.get_status(token.to_owned(), path.to_owned());

    setup
        .set_faults(
            "lab-0",
            Faults {
                bmc_internal_error: true,
                ..Faults::default()
            },
        )
        .await;
    assert_eq!(status(&token, "Systems/lab-0").await, 500);
    assert_eq!(status(&token, "Managers/lab-0").await, 500);
    assert_eq!(status(&token, "Systems/lab-1").await, 200);

    setup
        .set_faults(
            "lab-0",
            Faults {
                bmc_sessions_dropped: true,
                ..Faults::default()
            },
        )
        .await;
    assert_eq!(
        status(&token, "Systems/lab-0").await,
        401,
        "the old session"
    );
    assert_eq!(
        status(&token, "Systems/lab-1").await,
        200,
        "another machine"
    );
    let fresh = setup.login().await;
    assert_eq!(status(&fresh, "Systems/lab-0").await, 200, "a new login");

    setup.set_faults("lab-0", Faults::default()).await;
    assert_eq!(
        status(&token, "Systems/lab-0").await,
        401,
        "a dropped session stays dropped"
    );
    assert_eq!(status(&fresh, "Systems/lab-0").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_authentication_is_enforced() {
    let setup = setup(1).await;
    let get = |path: &str| setup.http.get(setup.redfish(path));
    let status = |r: Result<reqwest::Response, reqwest::Error>| {
        r.map(|r| r.status().as_u16()).unwrap_or_default()
    };

    assert_eq!(
        status(get("").send().await),
        200,
        "the service root needs no credentials"
    );
    assert_eq!(status(get("Systems").send().await), 401);
    assert_eq!(
        status(get("Systems").basic_auth(USER, Some("wrong")).send().await),
        401
    );
    assert_eq!(
        status(get("Systems").header("X-Auth-Token", "forged").send().await),
        401
    );
    assert_eq!(
        status(
            get("Systems/lab-0")
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await
        ),
        200
    );
    let bad_login = setup
        .http
        .post(setup.redfish("SessionService/Sessions"))
        .json(&json!({"UserName": USER, "Password": "x"}))
        .send()
        .await;
    assert_eq!(status(bad_login), 401);

    let token = setup.login().await;
    let (_, sessions) = setup
        .call(
            &token,
            reqwest::Method::GET,
            "SessionService/Sessions",
            None,
        )
        .await;
    let location = sessions["Members"][0]["@odata.id"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("/redfish/v1/")
        .to_owned();
    assert_eq!(
        setup
            .call(&token, reqwest::Method::DELETE, &location, None)
            .await
            .0,
        204
    );
    assert_eq!(
        setup
            .call(&token, reqwest::Method::GET, "Systems", None)
            .await
            .0,
        401,
        "a deleted session is dead"
    );
    let (_, system) = setup
        .call(
            &setup.login().await,
            reqwest::Method::GET,
            "Systems/lab-0",
            None,
        )
        .await;
    let bad_reset = json!({"ResetType": "Nmi"});
    let allowed = &system["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"];
    assert!(
        allowed
            .as_array()
            .is_some_and(|values| !values.contains(&json!("Nmi")))
    );
    let token = setup.login().await;
    assert_eq!(
        setup
            .call(
                &token,
                reqwest::Method::POST,
                "Systems/lab-0/Actions/ComputerSystem.Reset",
                Some(bad_reset)
            )
            .await
            .0,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_surface_as_bmc_errors_write_errors_and_a_dead_agent() {
    let setup = setup(1).await;
    ingot_lab::images::write_raw_image(&setup.lab.image_dir().join("os.raw"), 64 << 20)
        .unwrap_or_else(|e| panic!("{e}"));
    let token = setup.login().await;
    let faults_url = format!("{}/lab/v1/machines/lab-0/faults", setup.lab.url());
    let set = |faults: Faults| setup.http.put(&faults_url).json(&faults).send();

    set(Faults {
        bmc_unreachable: true,
        ..Faults::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        setup
            .call(&token, reqwest::Method::GET, "Systems/lab-0", None)
            .await
            .0,
        503
    );
    set(Faults {
        bmc_delay_ms: 300,
        ..Faults::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let started = std::time::Instant::now();
    assert_eq!(
        setup
            .call(&token, reqwest::Method::GET, "Systems/lab-0", None)
            .await
            .0,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    set(Faults {
        disk_write_error: true,
        ..Faults::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    setup.boot_deploy_image(&token, "lab-0").await;
    let failed = setup
        .run("lab-0", "write", write_image(&setup.lab, "os.raw"))
        .await;
    let CommandState::Failed { error } = failed else {
        panic!("expected a failure: {failed:?}")
    };
    assert!(error.contains("writing the disk failed"), "{error}");

    set(Faults {
        agent_crash: true,
        ..Faults::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let system = setup.wait_activity(&token, "lab-0", "agentStopped").await;
    assert!(
        system["Oem"]["IngotLab"]["Activity"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("crashed"))
    );
    let after_crash = setup.api.enqueue("lab-0", "inspect", Command::Inventory);
    assert!(after_crash.is_ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A long-poll already held open may still hand the command over, but nobody runs it.
    let state = setup.api.status("lab-0", "inspect");
    assert!(
        matches!(state, Ok(CommandState::Pending | CommandState::Delivered)),
        "a crashed agent runs nothing: {state:?}"
    );
}

fn ipmitool(
    address: SocketAddr,
    cipher_suite: &str,
    password: &str,
    command: &[&str],
) -> (bool, String) {
    let port = address.port().to_string();
    let mut args = vec![
        "-I",
        "lanplus",
        "-H",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        USER,
        "-P",
        password,
        "-C",
        cipher_suite,
        "-R",
        "1",
        "-N",
        "1",
    ];
    args.extend_from_slice(command);
    let output = std::process::Command::new("ipmitool")
        .args(&args)
        .output()
        .unwrap_or_else(|e| {
            panic!("ipmitool is required (install it with `make setup-packages`): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmitool_controls_power_and_boot_device_over_rmcp_plus() {
    let setup = setup(1).await;
    let address = setup
        .lab
        .ipmi_address("lab-0")
        .unwrap_or_else(|| panic!("IPMI is enabled"));
    let machine = setup.lab.machines()[0].clone();

    for suite in ["3", "17"] {
        let (ok, status) = tokio::task::spawn_blocking(move || {
            ipmitool(address, suite, PASSWORD, &["chassis", "power", "status"])
        })
        .await
        .unwrap_or_default();
        assert!(
            ok && status.contains("Chassis Power is off"),
            "cipher suite {suite}: {status}"
        );
    }

    let (ok, out) = tokio::task::spawn_blocking(move || {
        ipmitool(address, "17", PASSWORD, &["chassis", "bootdev", "cdrom"])
    })
    .await
    .unwrap_or_default();
    assert!(ok, "{out}");
    assert_eq!(machine.status().boot.boot_source_override_target, "Cd");
    let (ok, out) = tokio::task::spawn_blocking(move || {
        ipmitool(address, "3", PASSWORD, &["chassis", "power", "on"])
    })
    .await
    .unwrap_or_default();
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, status) = tokio::task::spawn_blocking(move || {
        ipmitool(address, "17", PASSWORD, &["chassis", "power", "status"])
    })
    .await
    .unwrap_or_default();
    assert!(ok && status.contains("Chassis Power is on"), "{status}");

    let (ok, out) = tokio::task::spawn_blocking(move || {
        ipmitool(address, "17", "wrong", &["chassis", "power", "status"])
    })
    .await
    .unwrap_or_default();
    assert!(!ok, "a wrong password must be refused: {out}");
}

/// Sets a one-time network boot on machine `id` and powers it on, both over IPMI.
async fn network_boot_over_ipmi(setup: &Setup, id: &str) {
    let address = setup
        .lab
        .ipmi_address(id)
        .unwrap_or_else(|| panic!("IPMI is enabled"));
    for command in [["chassis", "bootdev", "pxe"], ["chassis", "power", "on"]] {
        let (ok, out) =
            tokio::task::spawn_blocking(move || ipmitool(address, "17", PASSWORD, &command))
                .await
                .unwrap_or_default();
        assert!(ok, "{out}");
    }
}

/// Waits until machine `id` stops booting and returns what it does then.
async fn settled_activity(setup: &Setup, id: &str) -> Activity {
    let machine = setup
        .lab
        .machines()
        .iter()
        .find(|m| m.id == id)
        .cloned()
        .unwrap_or_else(|| panic!("no {id}"));
    for _ in 0..200 {
        let activity = machine.status().activity;
        if !matches!(activity, Activity::Off | Activity::Booting) {
            return activity;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} never finished booting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_boot_runs_the_agent_served_for_the_pxe_nic_and_nothing_for_unknown_macs() {
    let setup = setup_with(2, true).await;
    let media = setup
        .api
        .publish_media("lab-0", &setup.macs("lab-0"))
        .unwrap_or_else(|e| panic!("{e}"));

    network_boot_over_ipmi(&setup, "lab-0").await;
    network_boot_over_ipmi(&setup, "lab-1").await;
    let booted = settled_activity(&setup, "lab-0").await;
    let unknown = settled_activity(&setup, "lab-1").await;

    let Activity::Agent { image } = booted else {
        panic!("lab-0 did not boot the agent: {booted:?}");
    };
    assert!(image.contains("/v1/network-boot/"), "{image}");
    assert!(
        !image.contains(&media),
        "network boot does not use the virtual media URL"
    );
    let inventory = setup.run("lab-0", "inspect", Command::Inventory).await;
    assert!(
        matches!(inventory, CommandState::Succeeded { .. }),
        "the network-booted agent runs commands: {inventory:?}"
    );
    assert_eq!(
        unknown,
        Activity::NoBootableDevice {
            reason: "network boot server answered 404 Not Found".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_network_boot_server_network_boot_finds_nothing() {
    let setup = setup(1).await;

    network_boot_over_ipmi(&setup, "lab-0").await;
    let activity = settled_activity(&setup, "lab-0").await;

    assert_eq!(
        activity,
        Activity::NoBootableDevice {
            reason: "network boot requested but no network boot server is configured".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_iso_boots_from_virtual_media_and_the_machine_history_tells_what_was_done() {
    let setup = setup(1).await;
    let iso = setup.lab.image_dir().join("live.iso");
    ingot_lab::images::write_live_iso(&iso, "LAB LIVE").unwrap_or_else(|e| panic!("{e}"));
    let iso_url = format!("{}/images/live.iso", setup.lab.url());
    let machine = setup.lab.machines()[0].clone();
    let token = setup.login().await;

    let insert = json!({"Image": iso_url, "Inserted": true});
    let boot = json!({"Boot": {"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Continuous"}});
    let requests = [
        (
            reqwest::Method::POST,
            "Managers/lab-0/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia",
            insert,
        ),
        (reqwest::Method::PATCH, "Systems/lab-0", boot),
        (
            reqwest::Method::POST,
            "Systems/lab-0/Actions/ComputerSystem.Reset",
            json!({"ResetType": "On"}),
        ),
    ];
    for (method, path, body) in requests {
        assert_eq!(setup.call(&token, method, path, Some(body)).await.0, 204);
    }
    assert_eq!(machine.bmc_requests(), 3, "the login names no machine");

    let system = setup.wait_activity(&token, "lab-0", "liveIso").await;
    assert_eq!(system["BootProgress"]["LastState"], "OSRunning");
    assert_eq!(setup.lab.image_downloads("live.iso"), 1);
    let disk = machine.hardware.disk_files.values().next().cloned();
    let mut head = vec![1u8; 64 << 10];
    std::fs::File::open(disk.unwrap_or_default())
        .and_then(|file| std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        head.iter().all(|byte| *byte == 0),
        "a live ISO leaves the disk alone"
    );
    assert_eq!(
        machine.history(),
        vec![
            MachineEvent::MediaInserted {
                image: iso_url.clone()
            },
            MachineEvent::PowerRequest {
                reset_type: "On".into()
            },
            MachineEvent::Booted {
                activity: Activity::LiveIso { image: iso_url }
            },
        ]
    );
}
