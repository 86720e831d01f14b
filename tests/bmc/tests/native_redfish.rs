//! The Redfish driver's protocol logic, run natively against
//! sushy-emulator and sushy-static.

use std::time::{Duration, Instant};

use ingot_bmc_tests::native::{NativeEnv, NativeHttp};
use ingot_bmc_tests::peers::{self, BMC_PASSWORD, BMC_USER, SushyFakeOptions};
use ingot_plugin_redfish::model::{
    BootDevice, BootMode, BootPersistence, BootTarget, PowerAction, PowerState, Progress,
};
use ingot_plugin_redfish::{Driver, ErrorKind};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn http(port: u16, password: &str) -> Result<NativeHttp, Box<dyn std::error::Error>> {
    Ok(NativeHttp::new(
        &format!("http://127.0.0.1:{port}"),
        BMC_USER,
        password,
        Duration::from_secs(5),
    )?)
}

#[test]
fn fake_emulator_power_boot_inventory() -> TestResult {
    let bmc = peers::start_sushy_fake(&SushyFakeOptions { basic_auth: true })?;
    let mut transport = http(bmc.port, BMC_PASSWORD)?;
    let mut env = NativeEnv::default();
    let mut driver = Driver::new(&mut transport, &mut env, "redfish+http", "", "fake")?;

    let inventory = driver.run(|session| session.inventory())?;
    println!("{inventory:#?}");
    assert_eq!(
        inventory.nics.first().map(|n| n.mac.as_str()),
        Some(peers::FAKE_SYSTEM_MAC)
    );

    let device = BootDevice {
        target: BootTarget::Cd,
        persistence: BootPersistence::Once,
        mode: BootMode::Uefi,
    };
    assert_eq!(
        driver.run(|session| session.set_boot_device(device))?,
        Progress::Done
    );

    let started = Instant::now();
    loop {
        let progress = driver.run(|session| session.set_power(PowerAction::On))?;
        if progress == Progress::Done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "power on never completed"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        driver.run(|session| Ok(session.power_state()))?,
        PowerState::On
    );
    Ok(())
}

#[test]
fn fake_emulator_rejects_bad_credentials() -> TestResult {
    let bmc = peers::start_sushy_fake(&SushyFakeOptions { basic_auth: true })?;
    let mut transport = http(bmc.port, "wrong")?;
    let mut env = NativeEnv::default();
    let mut driver = Driver::new(&mut transport, &mut env, "redfish+http", "", "fake")?;
    let error = driver.run(|session| Ok(session.power_state())).err();
    assert_eq!(error.map(|e| e.kind()), Some(ErrorKind::Unauthorized));
    Ok(())
}

#[test]
fn static_ilo5_inventory() -> TestResult {
    let Some(mockup) = peers::redfish_mockup("hpe-ilo5-dl325-gen10plus") else {
        println!("skipped: ../shared/fixtures not present");
        return Ok(());
    };
    let bmc = peers::start_sushy_static(&mockup)?;
    let mut transport = http(bmc.port, BMC_PASSWORD)?;
    let mut env = NativeEnv::default();
    let mut driver = Driver::new(
        &mut transport,
        &mut env,
        "ilo5-redfish+http",
        "/redfish/v1/Systems/1",
        "static",
    )?;
    let inventory = driver.run(|session| session.inventory())?;
    println!("{inventory:#?}");
    let bios = driver.run(|session| session.bios_attributes())?;
    println!("{} BIOS attributes", bios.len());
    Ok(())
}
