//! The IPMI driver's protocol logic, run natively against the pyghmi-based
//! simulator, with ipmitool confirming every change.

use ingot_bmc_tests::native::{NativeDatagram, NativeSecrets, random};
use ingot_bmc_tests::peers::{self, BMC_PASSWORD, BMC_USER};
use ingot_plugin_ipmi::chassis::{BootDeviceSelector, BootFlags};
use ingot_plugin_ipmi::session::Retransmit;
use ingot_plugin_ipmi::{Driver, ErrorKind, Outcome, PowerGoal};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn with_driver<T>(
    port: u16,
    password: &str,
    operation: impl FnOnce(&mut Driver<'_>) -> T,
) -> Result<T, Box<dyn std::error::Error>> {
    let mut datagram = NativeDatagram::connect(port)?;
    let mut secrets = NativeSecrets::new(BMC_USER, password);
    let mut random = random;
    let retransmit = Retransmit {
        initial_timeout_ms: 300,
        attempts: 3,
    };
    let mut driver = Driver::new(&mut datagram, &mut secrets, &mut random, retransmit);
    Ok(operation(&mut driver))
}

#[test]
fn power_and_boot_flags_round_trip_through_ipmitool() -> TestResult {
    let bmc = peers::start_ipmi_sim()?;

    let outcome = with_driver(bmc.port, BMC_PASSWORD, |driver| {
        driver.set_power(PowerGoal::On)
    })??;
    assert_eq!(outcome, Outcome::Done);
    assert!(peers::ipmitool(bmc.port, &["chassis", "power", "status"])?.contains("is on"));

    let flags = BootFlags {
        device: BootDeviceSelector::Pxe,
        persistent: true,
        efi: true,
    };
    with_driver(bmc.port, BMC_PASSWORD, |driver| {
        driver.set_boot_flags(flags)
    })??;
    let shown = peers::ipmitool(bmc.port, &["chassis", "bootparam", "get", "5"])?;
    assert!(shown.contains("e004000000"), "ipmitool shows {shown}");

    let outcome = with_driver(bmc.port, BMC_PASSWORD, |driver| {
        driver.set_power(PowerGoal::OffHard)
    })??;
    assert_eq!(outcome, Outcome::Done);
    assert!(peers::ipmitool(bmc.port, &["chassis", "power", "status"])?.contains("is off"));

    let device = with_driver(bmc.port, BMC_PASSWORD, |driver| driver.device_id())??;
    assert!(!device.ipmi_version.is_empty());
    Ok(())
}

#[test]
fn wrong_password_is_unauthorized() -> TestResult {
    let bmc = peers::start_ipmi_sim()?;
    let error = with_driver(bmc.port, "not-the-password", |driver| driver.power_is_on())?.err();
    assert_eq!(error.map(|e| e.kind()), Some(ErrorKind::Unauthorized));
    Ok(())
}
