//! One scenario table run through the real plugin runtime against three
//! third-party BMCs: sushy-emulator (Redfish with state), sushy-static
//! serving a real HPE iLO 5 tree (read-only), and an IPMI BMC built on
//! pyghmi. After each change a reference client (plain HTTP, or ipmitool)
//! confirms what the driver did.
//!
//! Needs `make setup` (venv, ipmitool) and `make plugins` (components).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingot_bmc_tests::http_stub::{Reply, StubServer};
use ingot_bmc_tests::peers::{
    self, BMC_PASSWORD, BMC_USER, FAKE_SYSTEM_MAC, FAKE_SYSTEM_UUID, SushyFakeOptions,
};
use ingot_bmc_tests::plugin::{DriverUnderTest, ErrorClass, address, error_class};
use ingot_plugin_host::bindings::types::{
    BmcAddress, BootDevice, BootMode, BootPersistence, BootTarget, MediaKind, PowerAction,
    Progress, VirtualMedia,
};
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::limits::Limits;
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TARGET_TMPDIR: &str = env!("CARGO_TARGET_TMPDIR");
const POWER_LIMIT: Duration = Duration::from_secs(40);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    PowerOn,
    BootOnceCd,
    InsertMedia,
    EjectMedia,
    BootOnceDisk,
    PowerCycle,
    PowerOff,
    Inventory,
    BadCredentials,
    UnsupportedOperation,
}

const SCENARIOS: [Scenario; 10] = [
    Scenario::PowerOn,
    Scenario::BootOnceCd,
    Scenario::InsertMedia,
    Scenario::EjectMedia,
    Scenario::BootOnceDisk,
    Scenario::PowerCycle,
    Scenario::PowerOff,
    Scenario::Inventory,
    Scenario::BadCredentials,
    Scenario::UnsupportedOperation,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Done,
    Fails(ErrorClass),
    NotApplicable(&'static str),
}

const IMAGE_PATH: &str = "/images/boot.iso";

fn boot(target: BootTarget, mode: BootMode) -> BootDevice {
    BootDevice {
        target,
        persistence: BootPersistence::Once,
        mode,
    }
}

/// The call a scenario makes; `unsupported` is the target's own example.
fn call_for(scenario: Scenario, image_url: &str, unsupported: &PluginCall) -> PluginCall {
    match scenario {
        Scenario::PowerOn => PluginCall::SetPower(PowerAction::On),
        Scenario::PowerOff => PluginCall::SetPower(PowerAction::OffHard),
        Scenario::PowerCycle => PluginCall::SetPower(PowerAction::RebootHard),
        Scenario::BootOnceCd => PluginCall::SetBootDevice(boot(BootTarget::Cd, BootMode::Uefi)),
        Scenario::BootOnceDisk => {
            PluginCall::SetBootDevice(boot(BootTarget::Disk, BootMode::Legacy))
        }
        Scenario::InsertMedia => PluginCall::InsertMedia(VirtualMedia {
            image_url: image_url.to_owned(),
            kind: MediaKind::Cd,
        }),
        Scenario::EjectMedia => PluginCall::EjectMedia,
        Scenario::Inventory => PluginCall::Inventory,
        Scenario::BadCredentials => PluginCall::GetPowerState,
        Scenario::UnsupportedOperation => unsupported.clone(),
    }
}

/// One BMC under test with its reference checks.
trait Target {
    fn name(&self) -> &'static str;
    fn address(&self) -> BmcAddress;
    fn expect(&self, scenario: Scenario) -> Expect;
    fn unsupported_call(&self) -> PluginCall;
    /// Confirms with a reference client that a scenario's change happened.
    fn confirm(&self, scenario: Scenario, reply: &PluginReply) -> Result<(), String>;
}

async fn run_table(
    target: &dyn Target,
    image_url: &str,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let tmp = Path::new(TARGET_TMPDIR);
    let crate_name = if target.address().scheme.starts_with("ipmi") {
        "ingot-plugin-ipmi"
    } else {
        "ingot-plugin-redfish"
    };
    let driver = DriverUnderTest::load(
        tmp,
        crate_name,
        target.address(),
        (BMC_USER, BMC_PASSWORD),
        Limits::default(),
    )?;
    let wrong = DriverUnderTest::load(
        tmp,
        crate_name,
        target.address(),
        (BMC_USER, "not-the-password"),
        Limits::default(),
    )?;

    let mut rows = Vec::new();
    for scenario in SCENARIOS {
        let call = call_for(scenario, image_url, &target.unsupported_call());
        let used = if scenario == Scenario::BadCredentials {
            &wrong
        } else {
            &driver
        };
        let outcome = match target.expect(scenario) {
            Expect::NotApplicable(reason) => format!("n/a ({reason})"),
            Expect::Done => {
                let reply = used.until_done(call, POWER_LIMIT).await.map_err(|error| {
                    format!(
                        "{} {scenario:?}: expected success, got {error}",
                        target.name()
                    )
                })?;
                if let PluginReply::Progress(Progress::InProgress(pending)) = &reply {
                    return Err(format!(
                        "{} {scenario:?}: still in progress ({})",
                        target.name(),
                        pending.detail
                    )
                    .into());
                }
                tokio::task::block_in_place(|| target.confirm(scenario, &reply))
                    .map_err(|problem| format!("{} {scenario:?}: {problem}", target.name()))?;
                "done, confirmed".to_owned()
            }
            Expect::Fails(class) => {
                let result = used.call(call).await;
                let found = result.as_ref().err().and_then(error_class);
                if found != Some(class) {
                    return Err(format!(
                        "{} {scenario:?}: expected {class:?}, got {result:?}",
                        target.name()
                    )
                    .into());
                }
                format!("{class:?} as expected")
            }
        };
        rows.push(format!(
            "{:<22} {:<16} {outcome}",
            format!("{scenario:?}"),
            target.name()
        ));
    }
    Ok(rows)
}

fn get_json(origin: &str, path: &str) -> Result<Value, String> {
    let client = reqwest::blocking::Client::new();
    let response = client
        .get(format!("{origin}{path}"))
        .basic_auth(BMC_USER, Some(BMC_PASSWORD))
        .send()
        .map_err(|error| error.to_string())?;
    let body = response.bytes().map_err(|error| error.to_string())?;
    serde_json::from_slice(&body).map_err(|error| error.to_string())
}

/// sushy-emulator with the fake driver and Basic auth.
struct FakeRedfish {
    port: u16,
}

impl FakeRedfish {
    fn system(&self) -> Result<Value, String> {
        get_json(
            &format!("http://127.0.0.1:{}", self.port),
            &format!("/redfish/v1/Systems/{FAKE_SYSTEM_UUID}"),
        )
    }

    fn wait_power(&self, wanted: &str) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let state = self.system()?["PowerState"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if state == wanted {
                return Ok(());
            }
            if started.elapsed() > POWER_LIMIT {
                return Err(format!("PowerState is {state}, not {wanted}"));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn check_boot(&self, target: &str, mode: &str) -> Result<(), String> {
        let system = self.system()?;
        let boot = &system["Boot"];
        let found = (
            boot["BootSourceOverrideTarget"].as_str(),
            boot["BootSourceOverrideMode"].as_str(),
        );
        if found == (Some(target), Some(mode)) {
            Ok(())
        } else {
            Err(format!("Boot shows {found:?}"))
        }
    }

    fn cd(&self) -> Result<Value, String> {
        get_json(
            &format!("http://127.0.0.1:{}", self.port),
            &format!("/redfish/v1/Systems/{FAKE_SYSTEM_UUID}/VirtualMedia/Cd"),
        )
    }
}

impl Target for FakeRedfish {
    fn name(&self) -> &'static str {
        "sushy-emulator"
    }

    fn address(&self) -> BmcAddress {
        address("redfish-virtualmedia+http", self.port, "")
    }

    fn expect(&self, scenario: Scenario) -> Expect {
        match scenario {
            Scenario::BadCredentials => Expect::Fails(ErrorClass::Unauthorized),
            Scenario::UnsupportedOperation => Expect::Fails(ErrorClass::Unsupported),
            _ => Expect::Done,
        }
    }

    fn unsupported_call(&self) -> PluginCall {
        // The fake driver implements no BIOS resource.
        PluginCall::BiosAttributes
    }

    fn confirm(&self, scenario: Scenario, reply: &PluginReply) -> Result<(), String> {
        match scenario {
            Scenario::PowerOn | Scenario::PowerCycle => self.wait_power("On"),
            Scenario::PowerOff => self.wait_power("Off"),
            Scenario::BootOnceCd => self.check_boot("Cd", "UEFI"),
            Scenario::BootOnceDisk => self.check_boot("Hdd", "Legacy"),
            Scenario::InsertMedia => {
                let cd = self.cd()?;
                let image = cd["Image"].as_str().unwrap_or_default();
                if cd["Inserted"] == Value::Bool(true) && image.ends_with(IMAGE_PATH) {
                    Ok(())
                } else {
                    Err(format!(
                        "virtual CD shows Inserted={} Image={image}",
                        cd["Inserted"]
                    ))
                }
            }
            Scenario::EjectMedia => {
                let cd = self.cd()?;
                if cd["Inserted"] == Value::Bool(false) {
                    Ok(())
                } else {
                    Err(format!(
                        "virtual CD still shows Inserted={}",
                        cd["Inserted"]
                    ))
                }
            }
            Scenario::Inventory => {
                let PluginReply::Inventory(hardware) = reply else {
                    return Err(format!("unexpected reply {reply:?}"));
                };
                let macs: Vec<&str> = hardware.nics.iter().map(|nic| nic.mac.as_str()).collect();
                let sizes: Vec<u64> = hardware
                    .storage
                    .iter()
                    .map(|disk| disk.size_bytes)
                    .collect();
                if macs == [FAKE_SYSTEM_MAC] && sizes == [899_527_000_000, 12_345_670_000] {
                    Ok(())
                } else {
                    Err(format!("inventory shows NICs {macs:?} and disks {sizes:?}"))
                }
            }
            Scenario::BadCredentials | Scenario::UnsupportedOperation => Ok(()),
        }
    }
}

/// sushy-static serving the HPE iLO 5 tree, behind a logging proxy that
/// shows the driver never wrote to it.
struct StaticIlo5 {
    port: u16,
}

impl Target for StaticIlo5 {
    fn name(&self) -> &'static str {
        "sushy-static iLO 5"
    }

    fn address(&self) -> BmcAddress {
        address("ilo5-redfish+http", self.port, "/redfish/v1/Systems/1")
    }

    fn expect(&self, scenario: Scenario) -> Expect {
        match scenario {
            // The tree shows the machine on: asking for "on" must be a no-op.
            Scenario::PowerOn | Scenario::Inventory => Expect::Done,
            Scenario::UnsupportedOperation => Expect::Fails(ErrorClass::Unsupported),
            Scenario::BadCredentials => Expect::NotApplicable("sushy-static has no authentication"),
            _ => Expect::NotApplicable("static tree: read-only operations"),
        }
    }

    fn unsupported_call(&self) -> PluginCall {
        // `ilo5-redfish` selects network boot, so virtual media is refused.
        PluginCall::InsertMedia(VirtualMedia {
            image_url: "http://127.0.0.1:9/boot.iso".to_owned(),
            kind: MediaKind::Cd,
        })
    }

    fn confirm(&self, scenario: Scenario, reply: &PluginReply) -> Result<(), String> {
        match (scenario, reply) {
            (Scenario::PowerOn, PluginReply::Progress(Progress::Done)) => Ok(()),
            (Scenario::Inventory, PluginReply::Inventory(hardware)) => {
                let vendor = hardware.system_vendor.as_ref().ok_or("no system vendor")?;
                let cpu = hardware.cpu.as_ref().ok_or("no CPU")?;
                let bios = hardware.bios.as_ref().ok_or("no BIOS")?;
                let facts = (
                    vendor.manufacturer.as_str(),
                    vendor.product_name.as_str(),
                    vendor.serial_number.as_str(),
                    cpu.count,
                    cpu.arch.as_str(),
                    hardware.ram_mebibytes,
                    hardware.nics.len(),
                    bios.version.as_str(),
                );
                let expected = (
                    "HPE",
                    "ProLiant DL325 Gen10 Plus",
                    "MXQ019020B",
                    32,
                    "x86_64",
                    65_536,
                    4,
                    "A43 v2.52 (10/29/2021)",
                );
                if facts == expected {
                    Ok(())
                } else {
                    Err(format!("inventory shows {facts:?}"))
                }
            }
            _ => Err(format!("unexpected reply {reply:?}")),
        }
    }
}

/// The pyghmi-based IPMI BMC, checked with ipmitool.
struct Ipmi {
    port: u16,
}

impl Ipmi {
    fn ipmitool(&self, args: &[&str], wanted: &str) -> Result<(), String> {
        let output = peers::ipmitool(self.port, args).map_err(|error| error.to_string())?;
        if output.contains(wanted) {
            Ok(())
        } else {
            Err(format!("ipmitool {} shows: {output}", args.join(" ")))
        }
    }
}

impl Target for Ipmi {
    fn name(&self) -> &'static str {
        "pyghmi IPMI"
    }

    fn address(&self) -> BmcAddress {
        address("ipmi", self.port, "")
    }

    fn expect(&self, scenario: Scenario) -> Expect {
        match scenario {
            Scenario::InsertMedia
            | Scenario::EjectMedia
            | Scenario::Inventory
            | Scenario::UnsupportedOperation => Expect::Fails(ErrorClass::Unsupported),
            Scenario::BadCredentials => Expect::Fails(ErrorClass::Unauthorized),
            _ => Expect::Done,
        }
    }

    fn unsupported_call(&self) -> PluginCall {
        PluginCall::BiosAttributes
    }

    fn confirm(&self, scenario: Scenario, _reply: &PluginReply) -> Result<(), String> {
        match scenario {
            Scenario::PowerOn | Scenario::PowerCycle => {
                self.ipmitool(&["chassis", "power", "status"], "Chassis Power is on")
            }
            Scenario::PowerOff => {
                self.ipmitool(&["chassis", "power", "status"], "Chassis Power is off")
            }
            // Valid, next boot only, EFI, CD/DVD.
            Scenario::BootOnceCd => self.ipmitool(
                &["chassis", "bootparam", "get", "5"],
                "Boot parameter data: a014000000",
            ),
            // Valid, next boot only, legacy, disk.
            Scenario::BootOnceDisk => self.ipmitool(
                &["chassis", "bootparam", "get", "5"],
                "Boot parameter data: 8008000000",
            ),
            _ => Ok(()),
        }
    }
}

fn image_server() -> std::io::Result<StubServer> {
    StubServer::start(None, |request| {
        if request.path == IMAGE_PATH {
            Reply::Respond {
                status: 200,
                headers: vec![(
                    "Content-Type".to_owned(),
                    "application/octet-stream".to_owned(),
                )],
                body: vec![0u8; 64 * 1024],
            }
        } else {
            Reply::Respond {
                status: 404,
                headers: Vec::new(),
                body: Vec::new(),
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_table_on_sushy_emulator() -> TestResult {
    let bmc = peers::start_sushy_fake(&SushyFakeOptions { basic_auth: true })?;
    let images = image_server()?;
    let target = FakeRedfish { port: bmc.port };
    let rows = run_table(&target, &format!("{}{IMAGE_PATH}", images.origin())).await?;
    println!("{}", rows.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_table_on_static_ilo5_tree() -> TestResult {
    let Some(mockup) = peers::redfish_mockup("hpe-ilo5-dl325-gen10plus") else {
        println!("skipped: ../shared/fixtures not present");
        return Ok(());
    };
    let bmc = peers::start_sushy_static(&mockup)?;
    let writes = Arc::new(Mutex::new(Vec::new()));
    let seen = writes.clone();
    let proxy = StubServer::start(Some(bmc.port), move |request| {
        let is_login =
            request.method == "POST" && request.path.ends_with("/SessionService/Sessions");
        let is_read = matches!(request.method.as_str(), "GET" | "HEAD");
        if !is_read
            && !is_login
            && let Ok(mut writes) = seen.lock()
        {
            writes.push(format!("{} {}", request.method, request.path));
        }
        Reply::Forward
    })?;
    let target = StaticIlo5 { port: proxy.port };
    let rows = run_table(&target, "http://127.0.0.1:9/unused.iso").await?;
    println!("{}", rows.join("\n"));

    let writes = writes.lock().map(|w| w.clone()).unwrap_or_default();
    assert!(
        writes.is_empty(),
        "read-only scenarios wrote to the BMC: {writes:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_table_on_ipmi_simulator() -> TestResult {
    let bmc = peers::start_ipmi_sim()?;
    let target = Ipmi { port: bmc.port };
    let rows = run_table(&target, "http://127.0.0.1:9/unused.iso").await?;
    println!("{}", rows.join("\n"));
    Ok(())
}
