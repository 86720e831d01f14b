//! Steps made of one driver request repeated until the driver reports it
//! done: `eject-media`, `insert-iso`, `boot-from-disk` and `boot-from-cd`.
//! Each request is harmless to repeat, so a lost state only restarts the
//! timeout.

use ingot_plugin_sdk::host::{Level, StepHost};
use ingot_plugin_sdk::steps::{PhaseContext, StepError, StepOutcome};
use ingot_plugin_sdk::types::{BootDevice, BootPersistence, BootTarget, MediaKind, VirtualMedia};
use serde::{Deserialize, Serialize};

use crate::outcome::{
    Driven, Halt, decode_state, driven, driver_timed_out, elapsed_ms, redact_url,
};
use crate::params;
use crate::plan::StepKind;
use crate::power::eject;
use crate::settings::Settings;

/// State of a one-request step between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RequestState {
    started_ms: u64,
}

/// Runs the one-request step `kind` once.
pub fn run(
    host: &impl StepHost,
    ctx: &PhaseContext,
    settings: &Settings,
    kind: StepKind,
    state: Option<Vec<u8>>,
) -> Result<StepOutcome, Halt> {
    let state = decode_state(host, kind.name(), state).unwrap_or(RequestState {
        started_ms: host.now_unix_ms(),
    });

    match request(host, ctx, kind)? {
        Driven::Done => Ok(StepOutcome::Done),
        Driven::Pending(wait) => {
            let waited = elapsed_ms(host, state.started_ms);
            if waited >= settings.driver_timeout_ms {
                return Err(driver_timed_out(&wait, waited));
            }
            wait.requeue(&state)
        }
    }
}

fn request(host: &impl StepHost, ctx: &PhaseContext, kind: StepKind) -> Result<Driven, Halt> {
    let mode = params::boot_mode(ctx)?;
    let persistent_boot = |target| BootDevice {
        target,
        persistence: BootPersistence::Persistent,
        mode,
    };

    match kind {
        StepKind::EjectMedia => eject(host),
        StepKind::BootFromDisk => driven(
            "boot from disk",
            host.set_boot_device(&persistent_boot(BootTarget::Disk)),
        ),
        StepKind::BootFromCd => driven(
            "boot from CD",
            host.set_boot_device(&persistent_boot(BootTarget::Cd)),
        ),
        StepKind::InsertIso => insert_iso(host, ctx),
        other => Err(Halt::Error(StepError::Other(format!(
            "step {} is not a single driver request",
            other.name()
        )))),
    }
}

fn insert_iso(host: &impl StepHost, ctx: &PhaseContext) -> Result<Driven, Halt> {
    let image = params::image(ctx)?;
    let media = VirtualMedia {
        image_url: image.url.clone(),
        kind: MediaKind::Cd,
    };

    let answer = driven("insert the live ISO", host.insert_media(&media))?;
    if answer == Driven::Done {
        host.log(
            Level::Info,
            "live ISO inserted",
            &[("url", &redact_url(&image.url))],
        );
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::BOOT_MODE;
    use crate::testing::{IMAGE_URL, context, failure, host, requeued, run, set_parameter};
    use ingot_plugin_sdk::host::{ControlError, Host};
    use ingot_plugin_sdk::mock::HostCall;
    use ingot_plugin_sdk::steps::Phase;
    use ingot_plugin_sdk::types::{BootMode, Pending, Progress};

    fn pending() -> Result<Progress, ControlError> {
        Ok(Progress::InProgress(Pending {
            requeue_after_ms: 1_000,
            detail: "task 7".into(),
        }))
    }

    fn persistent(target: BootTarget, mode: BootMode) -> HostCall {
        HostCall::SetBootDevice(BootDevice {
            target,
            persistence: BootPersistence::Persistent,
            mode,
        })
    }

    #[test]
    fn boot_devices_are_set_persistently_in_the_boot_mode() {
        let host = host();
        host.expect_control(Ok(Progress::Done));
        host.expect_control(Ok(Progress::Done));
        let mut legacy = context(Phase::LiveIso);
        set_parameter(&mut legacy, BOOT_MODE, "legacy");

        let disk = run(&host, &context(Phase::Deploy), "boot-from-disk", None);
        let cd = run(&host, &legacy, "boot-from-cd", None);

        assert_eq!((disk, cd), (Ok(StepOutcome::Done), Ok(StepOutcome::Done)));
        assert_eq!(
            host.calls(),
            [
                persistent(BootTarget::Disk, BootMode::Uefi),
                persistent(BootTarget::Cd, BootMode::Legacy)
            ]
        );
    }

    #[test]
    fn insert_iso_inserts_the_image_as_cd() {
        let host = host();
        host.expect_control(Ok(Progress::Done));

        let outcome = run(&host, &context(Phase::LiveIso), "insert-iso", None);

        assert_eq!(outcome, Ok(StepOutcome::Done));
        assert_eq!(
            host.calls(),
            [HostCall::InsertMedia(VirtualMedia {
                image_url: IMAGE_URL.into(),
                kind: MediaKind::Cd
            })]
        );
    }

    #[test]
    fn eject_media_is_done_when_the_driver_has_no_virtual_media() {
        let host = host();
        host.expect_control(Err(ControlError::NotSupported("virtual media".into())));

        let outcome = run(&host, &context(Phase::Deploy), "eject-media", None);

        assert_eq!(outcome, Ok(StepOutcome::Done));
    }

    #[test]
    fn a_pending_request_is_repeated_until_done_then_times_out() {
        let first_host = host();
        first_host.expect_control(pending());
        let first = requeued(run(
            &first_host,
            &context(Phase::Deploy),
            "eject-media",
            None,
        ));
        let late = host();
        late.advance_clock(600_000);
        late.expect_control(pending());

        let message = failure(run(
            &late,
            &context(Phase::Deploy),
            "eject-media",
            Some(first.state.clone()),
        ));

        assert_eq!(first.detail, "eject the virtual media: task 7");
        assert_eq!(
            message,
            "the host's driver did not finish (eject the virtual media: task 7) within 600 s; \
             raise driver-timeout-seconds if its BMC is slow"
        );
        assert_eq!(late.calls(), [HostCall::EjectMedia]);
    }

    #[test]
    fn the_timeout_counts_from_the_first_request() {
        let host = host().with_config(crate::settings::DRIVER_TIMEOUT, "10");
        host.expect_control(pending());
        let first = requeued(run(&host, &context(Phase::LiveIso), "insert-iso", None));
        host.advance_clock(9_999);
        host.expect_control(pending());
        let second = requeued(run(
            &host,
            &context(Phase::LiveIso),
            "insert-iso",
            Some(first.state.clone()),
        ));

        let started = |state: &[u8]| {
            serde_json::from_slice::<RequestState>(state)
                .expect("request state")
                .started_ms
        };
        assert_eq!(started(&first.state), started(&second.state));
        assert_eq!(started(&second.state) + 9_999, host.now_unix_ms());
    }

    #[test]
    fn only_single_request_steps_run_here() {
        let error = request(&host(), &context(Phase::Deploy), StepKind::Reboot);

        assert!(matches!(error, Err(Halt::Error(StepError::Other(_)))));
    }
}
