//! Power steps: `reboot` and `power-off`, and the power-up both
//! `reboot` and `boot-deploy-media` use.

use ingot_plugin_sdk::host::{ControlError, Level, StepHost};
use ingot_plugin_sdk::steps::{Step, StepOutcome};
use ingot_plugin_sdk::types::{PowerAction, PowerState};
use serde::{Deserialize, Serialize};

use crate::outcome::{
    CONTINUE_MS, Driven, Halt, Wait, control_failure, decode_state, driven, driver_timed_out,
    elapsed_ms, has_budget, seconds,
};
use crate::plan::{PowerOffMethod, StepKind};
use crate::settings::{DRIVER_TIMEOUT, Settings};

/// How often a changing power state is read again.
const POWER_POLL_MS: u64 = 3_000;

/// How long a host may stay off after a reset before it is powered on
/// explicitly. Resets that cycle power turn the host off first; one that
/// stays off longer than this is not coming back by itself.
const RESET_GRACE_MS: u64 = 30_000;

/// Where powering a host into a fresh boot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerUp {
    /// Nothing issued yet: power on when off, hard reset when on.
    Request,
    /// A power-on is under way. The request is repeated until the driver
    /// reports it done, as the driver contract asks; repeating it is
    /// harmless.
    PoweringOn,
    /// A reset was issued at `since_ms`. From here on only the power state
    /// is checked, so a second reset never interrupts the boot the first one
    /// started; a host still off after the grace period is powered on.
    Resetting {
        /// When the reset was issued.
        since_ms: u64,
    },
}

/// What one attempt at powering up came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerUpProgress {
    /// The host is on and booting afresh.
    On,
    /// Not yet: wait, then continue from this stage.
    Waiting(PowerUp, Wait),
}

/// Moves the host one request closer to a fresh boot.
pub fn power_up(host: &impl StepHost, stage: PowerUp) -> Result<PowerUpProgress, Halt> {
    let power = read_power(host)?;

    match (stage, power) {
        (PowerUp::PoweringOn | PowerUp::Resetting { .. }, PowerState::On) => {
            Ok(PowerUpProgress::On)
        }
        (PowerUp::Request, PowerState::On) => reset(host),
        (PowerUp::Request, PowerState::Off) | (PowerUp::PoweringOn, _) => request_power_on(host),
        (PowerUp::Resetting { since_ms }, PowerState::Off)
            if elapsed_ms(host, since_ms) >= RESET_GRACE_MS =>
        {
            host.log(Level::Warn, "the host stayed off after the reset", &[]);
            request_power_on(host)
        }
        (_, state) => Ok(PowerUpProgress::Waiting(stage, settling(state))),
    }
}

fn request_power_on(host: &impl StepHost) -> Result<PowerUpProgress, Halt> {
    host.log(Level::Info, "powering the host on", &[]);

    match driven("power the host on", host.set_power(PowerAction::On))? {
        Driven::Done => Ok(PowerUpProgress::On),
        Driven::Pending(wait) => Ok(PowerUpProgress::Waiting(PowerUp::PoweringOn, wait)),
    }
}

fn reset(host: &impl StepHost) -> Result<PowerUpProgress, Halt> {
    host.log(Level::Info, "resetting the host", &[]);
    let resetting = PowerUp::Resetting {
        since_ms: host.now_unix_ms(),
    };

    // Done only means the BMC took the reset: the host may be off for a
    // while before it comes back, so the power state decides from here on.
    let wait = match driven("reset the host", host.set_power(PowerAction::RebootHard))? {
        Driven::Done => Wait::new(CONTINUE_MS, "host reset"),
        Driven::Pending(wait) => wait,
    };
    Ok(PowerUpProgress::Waiting(resetting, wait))
}

/// The host's power state.
fn read_power(host: &impl StepHost) -> Result<PowerState, Halt> {
    host.power_state()
        .map_err(|error| control_failure("read the power state", error))
}

/// A wait for a power state in transition (or one the BMC did not report)
/// to settle before acting on it.
fn settling(state: PowerState) -> Wait {
    Wait::new(
        POWER_POLL_MS,
        format!(
            "waiting for the power state to settle (now {})",
            power_state_name(state)
        ),
    )
}

/// A power state in words, for progress notes.
fn power_state_name(state: PowerState) -> &'static str {
    match state {
        PowerState::On => "on",
        PowerState::Off => "off",
        PowerState::PoweringOn => "powering on",
        PowerState::PoweringOff => "powering off",
        PowerState::Unknown => "unknown to the BMC",
    }
}

/// State of `reboot` between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RebootState {
    stage: PowerUp,
    started_ms: u64,
}

/// `reboot`: powers the host into a fresh boot from its configured boot
/// device; done once it is on. Without state (first run, or a lost one) the
/// host is reset again, which only repeats the boot.
pub fn reboot(
    host: &impl StepHost,
    settings: &Settings,
    state: Option<Vec<u8>>,
) -> Result<StepOutcome, Halt> {
    let state = decode_state(host, StepKind::Reboot.name(), state).unwrap_or(RebootState {
        stage: PowerUp::Request,
        started_ms: host.now_unix_ms(),
    });

    match power_up(host, state.stage)? {
        PowerUpProgress::On => Ok(StepOutcome::Done),
        PowerUpProgress::Waiting(stage, wait) => {
            let waited = elapsed_ms(host, state.started_ms);
            if waited >= settings.driver_timeout_ms {
                return Err(Halt::Failed(format!(
                    "the host did not power on within {} s of the reboot ({}); raise {DRIVER_TIMEOUT} if its BMC is slow",
                    seconds(waited),
                    wait.detail
                )));
            }
            wait.requeue(&RebootState { stage, ..state })
        }
    }
}

/// What `power-off` is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum PowerOffStage {
    /// Waiting for the operating system to shut down.
    Soft,
    /// Cutting power.
    Hard,
    /// Power is off; ejecting the virtual media.
    Eject,
}

/// State of `power-off` between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct PowerOffState {
    stage: PowerOffStage,
    stage_started_ms: u64,
}

impl PowerOffState {
    fn enter(host: &impl StepHost, stage: PowerOffStage) -> Self {
        Self {
            stage,
            stage_started_ms: host.now_unix_ms(),
        }
    }
}

/// `power-off`: turns the host off (gracefully first when the step says
/// `soft`), then ejects all virtual media so the next boot does not start
/// the deploy agent again. Both requests are harmless to repeat, so a lost
/// state only costs requests that return at once.
pub fn power_off(
    host: &impl StepHost,
    settings: &Settings,
    step: &Step,
    state: Option<Vec<u8>>,
) -> Result<StepOutcome, Halt> {
    let first_stage = match PowerOffMethod::of(step)? {
        PowerOffMethod::Soft => PowerOffStage::Soft,
        PowerOffMethod::Hard => PowerOffStage::Hard,
    };
    let mut state = decode_state(host, StepKind::PowerOff.name(), state)
        .unwrap_or_else(|| PowerOffState::enter(host, first_stage));

    loop {
        let waited = elapsed_ms(host, state.stage_started_ms);

        if state.stage == PowerOffStage::Soft && waited >= settings.soft_power_off_timeout_ms {
            host.log(
                Level::Warn,
                "graceful shutdown timed out, cutting power",
                &[("waited-seconds", &seconds(waited).to_string())],
            );
            state = PowerOffState::enter(host, PowerOffStage::Hard);
            continue;
        }

        let Some(answer) = power_off_request(host, state.stage)? else {
            state = PowerOffState::enter(host, PowerOffStage::Hard);
            continue;
        };

        match answer {
            Driven::Done if state.stage == PowerOffStage::Eject => return Ok(StepOutcome::Done),
            Driven::Done => {
                state = PowerOffState::enter(host, PowerOffStage::Eject);
                if !has_budget(host) {
                    return Wait::to_continue().requeue(&state);
                }
            }
            Driven::Pending(wait)
                if state.stage != PowerOffStage::Soft && waited >= settings.driver_timeout_ms =>
            {
                return Err(driver_timed_out(&wait, waited));
            }
            Driven::Pending(wait) => return wait.requeue(&state),
        }
    }
}

/// Sends the request of a power-off stage. `None` when the driver cannot
/// shut the host down gracefully: power is then cut instead.
fn power_off_request(host: &impl StepHost, stage: PowerOffStage) -> Result<Option<Driven>, Halt> {
    match stage {
        PowerOffStage::Soft => match host.set_power(PowerAction::OffSoft) {
            Err(ControlError::NotSupported(detail)) => {
                host.log(
                    Level::Info,
                    "the driver cannot shut the host down gracefully, cutting power",
                    &[("detail", &detail)],
                );
                Ok(None)
            }
            answer => driven("shut the host down", answer).map(Some),
        },
        PowerOffStage::Hard => {
            driven("power the host off", host.set_power(PowerAction::OffHard)).map(Some)
        }
        PowerOffStage::Eject => eject(host).map(Some),
    }
}

/// Ejects all virtual media. A driver without virtual media has nothing
/// inserted, so "not supported" counts as ejected.
pub fn eject(host: &impl StepHost) -> Result<Driven, Halt> {
    match host.eject_media() {
        Err(ControlError::NotSupported(detail)) => {
            host.log(
                Level::Debug,
                "the driver has no virtual media to eject",
                &[("detail", &detail)],
            );
            Ok(Driven::Done)
        }
        answer => driven("eject the virtual media", answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::AUTOMATED_CLEANING_MODE;
    use crate::settings::SOFT_POWER_OFF_TIMEOUT;
    use crate::testing::{context, failure, host, requeued, run, set_parameter};
    use ingot_plugin_sdk::host::Host;
    use ingot_plugin_sdk::mock::{HostCall, MockHost};
    use ingot_plugin_sdk::steps::Phase;
    use ingot_plugin_sdk::types::{Pending, Progress};

    fn pending(detail: &str) -> Result<ingot_plugin_sdk::types::Progress, ControlError> {
        Ok(Progress::InProgress(Pending {
            requeue_after_ms: 1_000,
            detail: detail.into(),
        }))
    }

    fn reboot_state(stage: PowerUp, host: &MockHost) -> Option<Vec<u8>> {
        let state = RebootState {
            stage,
            started_ms: host.now_unix_ms(),
        };
        Some(serde_json::to_vec(&state).expect("encodes"))
    }

    fn reboot_stage(state: &[u8]) -> PowerUp {
        serde_json::from_slice::<RebootState>(state)
            .expect("reboot state")
            .stage
    }

    fn off_stage(state: &[u8]) -> PowerOffStage {
        serde_json::from_slice::<PowerOffState>(state)
            .expect("power-off state")
            .stage
    }

    fn soft_deprovision() -> ingot_plugin_sdk::steps::PhaseContext {
        let mut ctx = context(Phase::Deprovision);
        set_parameter(&mut ctx, AUTOMATED_CLEANING_MODE, "disabled");
        ctx
    }

    #[test]
    fn reboot_powers_on_a_host_that_is_off() {
        let off = host();
        off.expect_control(Ok(Progress::Done));

        let from_off = run(&off, &context(Phase::Deploy), "reboot", None);

        assert_eq!(from_off, Ok(StepOutcome::Done));
        assert_eq!(off.calls(), [HostCall::SetPower(PowerAction::On)]);
    }

    #[test]
    fn reboot_resets_a_host_that_is_on_then_waits_until_it_is_on_again() {
        let on = host().with_power_state(PowerState::On);
        on.expect_control(Ok(Progress::Done));
        let reset = requeued(run(&on, &context(Phase::LiveIso), "reboot", None));
        let cycling = host();
        let still_off = requeued(run(
            &cycling,
            &context(Phase::LiveIso),
            "reboot",
            Some(reset.state.clone()),
        ));
        let up = host().with_power_state(PowerState::On);
        let done = run(
            &up,
            &context(Phase::LiveIso),
            "reboot",
            Some(still_off.state),
        );

        assert_eq!(on.calls(), [HostCall::SetPower(PowerAction::RebootHard)]);
        assert!(matches!(
            reboot_stage(&reset.state),
            PowerUp::Resetting { .. }
        ));
        assert!(
            cycling.calls().is_empty(),
            "off right after the reset: wait"
        );
        assert_eq!(done, Ok(StepOutcome::Done));
        assert!(up.calls().is_empty(), "no second reset");
    }

    #[test]
    fn after_the_reset_reboot_only_checks_the_power() {
        let resetting = host().with_power_state(PowerState::On);
        resetting.expect_control(pending("reset requested"));
        let first = requeued(run(&resetting, &context(Phase::Deploy), "reboot", None));
        let booting = host().with_power_state(PowerState::PoweringOn);
        let second = requeued(run(
            &booting,
            &context(Phase::Deploy),
            "reboot",
            Some(first.state.clone()),
        ));
        let up = host().with_power_state(PowerState::On);
        let third = run(
            &up,
            &context(Phase::Deploy),
            "reboot",
            Some(second.state.clone()),
        );

        assert_eq!(first.detail, "reset the host: reset requested");
        assert_eq!(reboot_stage(&first.state), reboot_stage(&second.state));
        assert!(booting.calls().is_empty());
        assert_eq!(third, Ok(StepOutcome::Done));
        assert!(up.calls().is_empty(), "no second reset");
    }

    #[test]
    fn a_host_still_off_after_the_reset_grace_is_powered_on() {
        let host = host();
        let state = reboot_state(
            PowerUp::Resetting {
                since_ms: host.now_unix_ms(),
            },
            &host,
        );
        host.advance_clock(RESET_GRACE_MS);
        host.expect_control(pending("powering on"));

        let requeue = requeued(run(&host, &context(Phase::Deploy), "reboot", state));

        assert_eq!(host.calls(), [HostCall::SetPower(PowerAction::On)]);
        assert_eq!(reboot_stage(&requeue.state), PowerUp::PoweringOn);
        assert_eq!(
            host.logs()[0].message,
            "the host stayed off after the reset"
        );
    }

    #[test]
    fn a_pending_power_on_is_asked_for_again_until_done() {
        let host = host().with_power_state(PowerState::PoweringOn);
        host.expect_control(Ok(Progress::Done));

        let outcome = run(
            &host,
            &context(Phase::Deploy),
            "reboot",
            reboot_state(PowerUp::PoweringOn, &host),
        );

        assert_eq!(outcome, Ok(StepOutcome::Done));
        assert_eq!(host.calls(), [HostCall::SetPower(PowerAction::On)]);
    }

    #[test]
    fn reboot_waits_for_a_settled_power_state_before_acting() {
        let host = host().with_power_state(PowerState::Unknown);

        let requeue = requeued(run(&host, &context(Phase::Deploy), "reboot", None));

        assert!(host.calls().is_empty());
        assert_eq!(reboot_stage(&requeue.state), PowerUp::Request);
        assert_eq!(requeue.after_ms, POWER_POLL_MS);
    }

    #[test]
    fn reboot_fails_when_the_host_never_comes_on() {
        let host = host().with_power_state(PowerState::PoweringOff);
        let state = reboot_state(PowerUp::Resetting { since_ms: 0 }, &host);
        host.advance_clock(600_000);

        let message = failure(run(&host, &context(Phase::Deploy), "reboot", state));

        assert_eq!(
            message,
            "the host did not power on within 600 s of the reboot (waiting for the power state \
             to settle (now powering off)); raise driver-timeout-seconds if its BMC is slow"
        );
    }

    #[test]
    fn hard_power_off_cuts_power_then_ejects() {
        let host = host().with_power_state(PowerState::On);
        host.expect_control(Ok(Progress::Done));
        host.expect_control(Ok(Progress::Done));

        let outcome = run(&host, &context(Phase::Inspect), "power-off", None);

        assert_eq!(outcome, Ok(StepOutcome::Done));
        assert_eq!(
            host.calls(),
            [
                HostCall::SetPower(PowerAction::OffHard),
                HostCall::EjectMedia
            ]
        );
    }

    #[test]
    fn soft_power_off_cuts_power_after_the_soft_timeout() {
        let shutting = host().with_power_state(PowerState::On);
        shutting.expect_control(pending("graceful shutdown"));
        let first = requeued(run(&shutting, &soft_deprovision(), "power-off", None));
        let late = host()
            .with_power_state(PowerState::On)
            .with_config(SOFT_POWER_OFF_TIMEOUT, "30");
        late.advance_clock(30_000);
        late.expect_control(Ok(Progress::Done));
        late.expect_control(Ok(Progress::Done));
        let second = run(
            &late,
            &soft_deprovision(),
            "power-off",
            Some(first.state.clone()),
        );

        assert_eq!(shutting.calls(), [HostCall::SetPower(PowerAction::OffSoft)]);
        assert_eq!(off_stage(&first.state), PowerOffStage::Soft);
        assert_eq!(second, Ok(StepOutcome::Done));
        assert_eq!(
            late.calls(),
            [
                HostCall::SetPower(PowerAction::OffHard),
                HostCall::EjectMedia
            ]
        );
        assert_eq!(
            late.logs()[0].message,
            "graceful shutdown timed out, cutting power"
        );
    }

    #[test]
    fn a_soft_power_off_within_its_timeout_keeps_asking_gently() {
        let host = host().with_power_state(PowerState::On);
        host.advance_clock(179_000);
        host.expect_control(pending("graceful shutdown"));
        let state = Some(
            serde_json::to_vec(&PowerOffState {
                stage: PowerOffStage::Soft,
                stage_started_ms: host.now_unix_ms() - 179_000,
            })
            .expect("encodes"),
        );

        let requeue = requeued(run(&host, &soft_deprovision(), "power-off", state));

        assert_eq!(host.calls(), [HostCall::SetPower(PowerAction::OffSoft)]);
        assert_eq!(off_stage(&requeue.state), PowerOffStage::Soft);
    }

    #[test]
    fn a_driver_without_graceful_shutdown_cuts_power_at_once() {
        let host = host().with_power_state(PowerState::On);
        host.expect_control(Err(ControlError::NotSupported(
            "a graceful shutdown".into(),
        )));
        host.expect_control(Ok(Progress::Done));
        host.expect_control(Ok(Progress::Done));

        let outcome = run(&host, &soft_deprovision(), "power-off", None);

        assert_eq!(outcome, Ok(StepOutcome::Done));
        assert_eq!(
            host.calls(),
            [
                HostCall::SetPower(PowerAction::OffSoft),
                HostCall::SetPower(PowerAction::OffHard),
                HostCall::EjectMedia
            ]
        );
    }

    #[test]
    fn a_slow_power_off_that_completes_late_is_not_a_timeout() {
        let host = MockHost::new();
        let state = Some(
            serde_json::to_vec(&PowerOffState {
                stage: PowerOffStage::Hard,
                stage_started_ms: host.now_unix_ms(),
            })
            .expect("encodes"),
        );
        host.advance_clock(900_000);
        host.expect_control(Ok(Progress::Done));

        let requeue = requeued(run(&host, &context(Phase::Inspect), "power-off", state));

        assert_eq!(off_stage(&requeue.state), PowerOffStage::Eject);
    }

    #[test]
    fn a_driver_without_virtual_media_has_nothing_to_eject() {
        let host = host();
        host.expect_control(Ok(Progress::Done));
        host.expect_control(Err(ControlError::NotSupported("virtual media".into())));

        let outcome = run(&host, &soft_deprovision(), "power-off", None);

        assert_eq!(outcome, Ok(StepOutcome::Done));
    }

    #[test]
    fn a_slow_eject_is_resumed_at_the_eject() {
        let ejecting = host();
        ejecting.expect_control(Ok(Progress::Done));
        ejecting.expect_control(pending("ejecting"));
        let first = requeued(run(&ejecting, &context(Phase::Inspect), "power-off", None));
        let next = host();
        next.expect_control(Ok(Progress::Done));
        let second = run(
            &next,
            &context(Phase::Inspect),
            "power-off",
            Some(first.state.clone()),
        );

        assert_eq!(off_stage(&first.state), PowerOffStage::Eject);
        assert_eq!(next.calls(), [HostCall::EjectMedia]);
        assert_eq!(second, Ok(StepOutcome::Done));
    }

    #[test]
    fn without_call_budget_power_off_ejects_in_the_next_run() {
        let host = MockHost::new();
        host.expect_control(Ok(Progress::Done));

        let requeue = requeued(run(&host, &context(Phase::Inspect), "power-off", None));

        assert_eq!(host.calls(), [HostCall::SetPower(PowerAction::OffHard)]);
        assert_eq!(off_stage(&requeue.state), PowerOffStage::Eject);
    }

    #[test]
    fn a_hard_power_off_that_never_completes_fails() {
        let host = host().with_power_state(PowerState::On);
        let state = Some(
            serde_json::to_vec(&PowerOffState {
                stage: PowerOffStage::Hard,
                stage_started_ms: host.now_unix_ms(),
            })
            .expect("encodes"),
        );
        host.advance_clock(600_000);
        host.expect_control(pending("ForceOff requested"));

        let message = failure(run(&host, &context(Phase::Inspect), "power-off", state));

        assert_eq!(
            message,
            "the host's driver did not finish (power the host off: ForceOff requested) within \
             600 s; raise driver-timeout-seconds if its BMC is slow"
        );
    }
}
