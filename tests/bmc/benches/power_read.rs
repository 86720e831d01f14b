//! Latency of a power-state read through the Redfish driver component,
//! against a plain native HTTP GET of the same resource on the same
//! emulator, measured alternately in the same run.
//!
//! `make setup plugins && cargo bench -p ingot-bmc-tests`

use std::path::Path;
use std::time::{Duration, Instant};

use ingot_bmc_tests::peers::{self, BMC_PASSWORD, BMC_USER, FAKE_SYSTEM_UUID, SushyFakeOptions};
use ingot_bmc_tests::plugin::{DriverUnderTest, address};
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::limits::Limits;

const WARM_UP: usize = 20;
const SAMPLES: usize = 200;

type BenchResult = Result<(), Box<dyn std::error::Error>>;

struct Measured {
    plugin: Vec<Duration>,
    native: Vec<Duration>,
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

async fn native_read(
    client: &reqwest::Client,
    url: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let body = client
        .get(url)
        .basic_auth(BMC_USER, Some(BMC_PASSWORD))
        .send()
        .await?
        .bytes()
        .await?;
    let system: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(system["PowerState"].as_str().unwrap_or_default().to_owned())
}

async fn measure(
    port: u16,
    scheme: &str,
    system_path: &str,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let target_tmpdir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let driver = DriverUnderTest::load(
        target_tmpdir,
        "ingot-plugin-redfish",
        address(scheme, port, ""),
        (BMC_USER, BMC_PASSWORD),
        Limits::default(),
    )?;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}{system_path}");

    let mut measured = Measured {
        plugin: Vec::new(),
        native: Vec::new(),
    };
    for round in 0..WARM_UP + SAMPLES {
        let started = Instant::now();
        let reply = driver.call(PluginCall::GetPowerState).await?;
        let through_plugin = started.elapsed();
        if !matches!(reply, PluginReply::PowerState(_)) {
            return Err(format!("unexpected reply {reply:?}").into());
        }

        let started = Instant::now();
        native_read(&client, &url).await?;
        let native = started.elapsed();

        if round >= WARM_UP {
            measured.plugin.push(through_plugin);
            measured.native.push(native);
        }
    }
    Ok(measured)
}

fn report(name: &str, mut measured: Measured) {
    let plugin = median(&mut measured.plugin);
    let native = median(&mut measured.native);
    let ratio = plugin.as_secs_f64() / native.as_secs_f64().max(f64::EPSILON);
    println!(
        "{name}: power-state read, median of {SAMPLES}: plugin {:.3} ms, native HTTP {:.3} ms, ratio {ratio:.2} (goal <= 1.20)",
        plugin.as_secs_f64() * 1000.0,
        native.as_secs_f64() * 1000.0,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult {
    let emulator = peers::start_sushy_fake(&SushyFakeOptions::default())?;
    let system_path = format!("/redfish/v1/Systems/{FAKE_SYSTEM_UUID}");
    let measured = measure(emulator.port, "redfish+http", &system_path).await?;
    report("sushy-emulator (fake driver)", measured);

    if let Some(mockup) = peers::redfish_mockup("hpe-ilo5-dl325-gen10plus") {
        let tree = peers::start_sushy_static(&mockup)?;
        let measured = measure(tree.port, "ilo5-redfish+http", "/redfish/v1/Systems/1").await?;
        report("sushy-static (HPE iLO 5 tree)", measured);
    } else {
        println!("sushy-static: skipped: ../shared/fixtures not present");
    }
    Ok(())
}
