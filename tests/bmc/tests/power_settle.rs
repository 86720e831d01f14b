//! How many calls a power change takes through the Redfish driver, against the lab's Redfish
//! BMCs: the driver looks at the system again right after a reset, so a BMC that applies it at
//! once has the change finished in the call that asked for it, while one that takes its time is
//! waited for. The lab is used because its machines' power delay can be set; sushy-emulator's
//! fake systems take a random one to eleven seconds.
//!
//! Needs `make plugins` (components).

use std::path::Path;
use std::time::Duration;

use ingot_bmc_tests::plugin::{DriverUnderTest, address};
use ingot_lab::profile::Profile;
use ingot_lab::{Credentials, Lab, LabConfig};
use ingot_plugin_host::bindings::types::{PowerAction, PowerState, Progress};
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::limits::Limits;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TARGET_TMPDIR: &str = env!("CARGO_TARGET_TMPDIR");
const USER: &str = "admin";
const PASSWORD: &str = "lab-password";
const POWER_LIMIT: Duration = Duration::from_secs(20);

async fn lab_with_power_delay(dir: &Path, power_delay_ms: u64) -> Result<Lab, ingot_lab::Error> {
    let config = LabConfig {
        machines: 1,
        profile: Profile {
            power_delay_ms,
            ..Profile::default()
        },
        dir: dir.to_owned(),
        listen: ([127, 0, 0, 1], 0).into(),
        credentials: Credentials {
            username: USER.into(),
            password: PASSWORD.into(),
        },
        ipmi: false,
        trusted_ca_pem: None,
        network_boot_url: None,
    };
    Lab::start(config).await
}

fn driver_for(lab: &Lab) -> Result<DriverUnderTest, Box<dyn std::error::Error>> {
    let port = lab.url().rsplit(':').next().unwrap_or_default().parse()?;
    let system = address("redfish+http", port, "/redfish/v1/Systems/lab-0");
    Ok(DriverUnderTest::load(
        Path::new(TARGET_TMPDIR),
        "ingot-plugin-redfish",
        system,
        (USER, PASSWORD),
        Limits::default(),
    )?)
}

async fn power_state(driver: &DriverUnderTest) -> Result<PluginReply, Box<dyn std::error::Error>> {
    Ok(driver.call(PluginCall::GetPowerState).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_change_the_bmc_applies_at_once_finishes_in_one_call() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lab = lab_with_power_delay(dir.path(), 0).await?;
    let driver = driver_for(&lab)?;

    for (action, wanted) in [
        (PowerAction::On, PowerState::On),
        (PowerAction::OffHard, PowerState::Off),
    ] {
        let reply = driver.call(PluginCall::SetPower(action)).await?;

        assert!(
            matches!(reply, PluginReply::Progress(Progress::Done)),
            "{action:?} answered {reply:?}"
        );
        assert_eq!(power_state(&driver).await?, PluginReply::PowerState(wanted));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_change_the_bmc_takes_time_over_is_waited_for() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lab = lab_with_power_delay(dir.path(), 1_500).await?;
    let driver = driver_for(&lab)?;

    let first = driver.call(PluginCall::SetPower(PowerAction::On)).await?;

    assert!(
        matches!(first, PluginReply::Progress(Progress::InProgress(_))),
        "answered {first:?}"
    );
    let last = driver
        .until_done(PluginCall::SetPower(PowerAction::On), POWER_LIMIT)
        .await?;
    assert!(
        matches!(last, PluginReply::Progress(Progress::Done)),
        "answered {last:?}"
    );
    assert_eq!(
        power_state(&driver).await?,
        PluginReply::PowerState(PowerState::On)
    );
    Ok(())
}
