//! `boot-deploy-media`: boots the deploy agent from virtual media, or from
//! the network when the host's BMC has none, and waits until it checks in.
//!
//! The step moves through four stages, chaining them within one run while
//! the call budget allows:
//!
//! 1. insert the deploy media as virtual CD;
//! 2. boot once from CD, in the host's boot mode, or once from the network
//!    when the driver cannot insert virtual media (IPMI BMCs): the operator's
//!    network boot server hands the same deploy media to the host's boot MACs;
//! 3. power on, or hard-reset a host that is already on;
//! 4. wait until an agent booted during this phase checks in.
//!
//! Everything after the step starts is bounded by `agent-boot-timeout-seconds`.
//! A run without state first asks whether the agent is already connected:
//! after a lost state the step then finishes without booting the host again.

use ingot_plugin_sdk::host::{ControlError, Level, StepHost};
use ingot_plugin_sdk::steps::{PhaseContext, StepOutcome};
use ingot_plugin_sdk::types::{
    BootDevice, BootMode, BootPersistence, BootTarget, MediaKind, VirtualMedia,
};
use serde::{Deserialize, Serialize};

use crate::outcome::{
    Driven, Halt, Wait, decode_state, driven, elapsed_ms, has_budget, redact_url, seconds,
};
use crate::params;
use crate::plan::StepKind;
use crate::power::{PowerUp, PowerUpProgress, power_up};
use crate::settings::{AGENT_BOOT_TIMEOUT, Settings};

/// How often to ask whether the agent has checked in.
const AGENT_POLL_MS: u64 = 10_000;

/// What `boot-deploy-media` is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Stage {
    /// Inserting the deploy media.
    InsertMedia,
    /// Setting a one-time boot from CD, or from the network.
    SetBootDevice,
    /// Powering the host into a fresh boot.
    PowerUp(PowerUp),
    /// Waiting for the agent to check in.
    AwaitAgent,
}

impl Stage {
    /// What the stage is doing, for timeout messages.
    fn describe(self) -> &'static str {
        match self {
            Self::InsertMedia => "inserting the deploy media",
            Self::SetBootDevice => "setting the one-time boot device",
            Self::PowerUp(_) => "powering the host up",
            Self::AwaitAgent => "waiting for the deploy agent to check in",
        }
    }
}

/// State of `boot-deploy-media` between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct BootState {
    stage: Stage,
    started_ms: u64,
    /// The driver has no virtual media, so the host boots the deploy media from the network.
    #[serde(default)]
    network_boot: bool,
}

/// Where one stage leaves the step.
enum Advance {
    /// On to this stage, in this run if the budget allows.
    Next(Stage),
    /// Run again after the wait, at this stage.
    Wait(Stage, Wait),
    /// The agent is connected.
    Connected,
}

/// Runs `boot-deploy-media` once.
pub fn boot_deploy_media(
    host: &impl StepHost,
    ctx: &PhaseContext,
    settings: &Settings,
    state: Option<Vec<u8>>,
) -> Result<StepOutcome, Halt> {
    let media = VirtualMedia {
        image_url: params::deploy_media_url(ctx)?.to_owned(),
        kind: MediaKind::Cd,
    };
    let mode = params::boot_mode(ctx)?;

    let mut state = match decode_state(host, StepKind::BootDeployMedia.name(), state) {
        Some(state) => state,
        None if host.agent_connected() => {
            host.log(Level::Info, "deploy agent already connected", &[]);
            return Ok(StepOutcome::Done);
        }
        None => BootState {
            stage: Stage::InsertMedia,
            started_ms: host.now_unix_ms(),
            network_boot: false,
        },
    };

    loop {
        let (stage, wait) = match advance(host, &media, mode, &mut state)? {
            Advance::Connected => return Ok(StepOutcome::Done),
            Advance::Next(stage) if has_budget(host) => {
                state.stage = stage;
                continue;
            }
            Advance::Next(stage) => (stage, Wait::to_continue()),
            Advance::Wait(stage, wait) => (stage, wait),
        };

        let waited = elapsed_ms(host, state.started_ms);
        if waited >= settings.agent_boot_timeout_ms {
            return Err(Halt::Failed(timed_out(&media, mode, &state, stage, waited)));
        }
        return wait.requeue(&BootState { stage, ..state });
    }
}

/// Runs the current stage; falling back to network boot is recorded in `state`.
fn advance(
    host: &impl StepHost,
    media: &VirtualMedia,
    mode: BootMode,
    state: &mut BootState,
) -> Result<Advance, Halt> {
    let stage = state.stage;
    match stage {
        Stage::InsertMedia => insert_media(host, media, state),
        Stage::SetBootDevice => {
            let (target, what) = if state.network_boot {
                (BootTarget::Pxe, "set a one-time boot from the network")
            } else {
                (BootTarget::Cd, "set a one-time boot from CD")
            };
            let device = BootDevice {
                target,
                persistence: BootPersistence::Once,
                mode,
            };
            let answer = driven(what, host.set_boot_device(&device))?;
            Ok(after(answer, stage, Stage::PowerUp(PowerUp::Request)))
        }
        Stage::PowerUp(power) => match power_up(host, power)? {
            PowerUpProgress::On => Ok(Advance::Next(Stage::AwaitAgent)),
            // The host was changing power when the one-time boot device was set. A boot under
            // way may use that setting up (and check in an agent the coming reset kills), so
            // the fresh boot needs it set again.
            PowerUpProgress::Waiting(PowerUp::Request, wait) => {
                Ok(Advance::Wait(Stage::SetBootDevice, wait))
            }
            PowerUpProgress::Waiting(power, wait) => Ok(Advance::Wait(Stage::PowerUp(power), wait)),
        },
        Stage::AwaitAgent if host.agent_connected() => {
            host.log(Level::Info, "deploy agent connected", &[]);
            Ok(Advance::Connected)
        }
        Stage::AwaitAgent => Ok(Advance::Wait(
            stage,
            Wait::new(AGENT_POLL_MS, "waiting for the deploy agent to check in"),
        )),
    }
}

/// Inserts the deploy media, or switches to network boot when the driver has no virtual media:
/// the deploy media is then served by MAC to the host's network boot.
fn insert_media(
    host: &impl StepHost,
    media: &VirtualMedia,
    state: &mut BootState,
) -> Result<Advance, Halt> {
    let answer = match host.insert_media(media) {
        Err(ControlError::NotSupported(detail)) => {
            host.log(
                Level::Info,
                "the driver has no virtual media, booting the deploy media from the network",
                &[("detail", &detail)],
            );
            state.network_boot = true;
            return Ok(Advance::Next(Stage::SetBootDevice));
        }
        answer => driven("insert the deploy media", answer)?,
    };

    if answer == Driven::Done {
        host.log(
            Level::Info,
            "deploy media inserted",
            &[("url", &redact_url(&media.image_url))],
        );
    }
    Ok(after(answer, state.stage, Stage::SetBootDevice))
}

/// The advance after a driver request: the next stage once done.
fn after(answer: Driven, stage: Stage, next: Stage) -> Advance {
    match answer {
        Driven::Done => Advance::Next(next),
        Driven::Pending(wait) => Advance::Wait(stage, wait),
    }
}

fn timed_out(
    media: &VirtualMedia,
    mode: BootMode,
    state: &BootState,
    stage: Stage,
    waited_ms: u64,
) -> String {
    let mode = match mode {
        BootMode::Uefi => "UEFI",
        BootMode::Legacy => "legacy",
    };
    let (source, boots) = if state.network_boot {
        ("network-booting", "network-boots from its boot MAC address")
    } else {
        ("booting", "boots virtual media")
    };

    format!(
        "the deploy agent did not check in within {} s of {source} the deploy media from {} (still {}); \
         check that the host {boots} in {mode} mode and that the agent reaches the operator, \
         or raise {AGENT_BOOT_TIMEOUT}",
        seconds(waited_ms),
        redact_url(&media.image_url),
        stage.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MEDIA_URL, context, failure, host, requeued, run, set_parameter};
    use ingot_plugin_sdk::host::{ControlError, Host};
    use ingot_plugin_sdk::mock::{HostCall, MockHost};
    use ingot_plugin_sdk::steps::{Phase, StepError};
    use ingot_plugin_sdk::types::{Pending, PowerAction, PowerState, Progress};

    const STEP: &str = "boot-deploy-media";

    fn stage_of(state: &[u8]) -> Stage {
        serde_json::from_slice::<BootState>(state)
            .expect("boot state")
            .stage
    }

    fn state_at(stage: Stage, host: &MockHost) -> Option<Vec<u8>> {
        encoded(BootState {
            stage,
            started_ms: host.now_unix_ms(),
            network_boot: false,
        })
    }

    fn network_state_at(stage: Stage, host: &MockHost) -> Option<Vec<u8>> {
        encoded(BootState {
            stage,
            started_ms: host.now_unix_ms(),
            network_boot: true,
        })
    }

    fn encoded(state: BootState) -> Option<Vec<u8>> {
        Some(serde_json::to_vec(&state).expect("encodes"))
    }

    fn no_virtual_media() -> Result<Progress, ControlError> {
        Err(ControlError::NotSupported("virtual media".into()))
    }

    fn pending(detail: &str) -> Result<Progress, ControlError> {
        Ok(Progress::InProgress(Pending {
            requeue_after_ms: 2_000,
            detail: detail.into(),
        }))
    }

    fn deploy_media() -> HostCall {
        HostCall::InsertMedia(VirtualMedia {
            image_url: MEDIA_URL.into(),
            kind: MediaKind::Cd,
        })
    }

    fn boot_once_from_cd(mode: BootMode) -> HostCall {
        boot_once(BootTarget::Cd, mode)
    }

    fn boot_once(target: BootTarget, mode: BootMode) -> HostCall {
        HostCall::SetBootDevice(BootDevice {
            target,
            persistence: BootPersistence::Once,
            mode,
        })
    }

    #[test]
    fn a_first_run_inserts_the_media_boots_once_from_cd_and_powers_on() {
        let host = host();
        for _ in 0..3 {
            host.expect_control(Ok(Progress::Done));
        }

        let requeue = requeued(run(&host, &context(Phase::Inspect), STEP, None));

        assert_eq!(
            host.calls(),
            [
                deploy_media(),
                boot_once_from_cd(BootMode::Uefi),
                HostCall::SetPower(PowerAction::On)
            ]
        );
        assert_eq!(stage_of(&requeue.state), Stage::AwaitAgent);
        assert_eq!(requeue.detail, "waiting for the deploy agent to check in");
        host.assert_done();
    }

    #[test]
    fn a_host_already_on_is_reset_into_the_media_in_its_boot_mode() {
        let host = host().with_power_state(PowerState::On);
        for _ in 0..3 {
            host.expect_control(Ok(Progress::Done));
        }
        let mut ctx = context(Phase::Deploy);
        set_parameter(&mut ctx, params::BOOT_MODE, "legacy");

        requeued(run(&host, &ctx, STEP, None));

        assert_eq!(host.calls()[1], boot_once_from_cd(BootMode::Legacy));
        assert_eq!(host.calls()[2], HostCall::SetPower(PowerAction::RebootHard));
        host.assert_done();
    }

    #[test]
    fn the_step_polls_until_the_agent_checks_in() {
        let waiting = host();
        let polled = requeued(run(
            &waiting,
            &context(Phase::Inspect),
            STEP,
            state_at(Stage::AwaitAgent, &waiting),
        ));
        let connected = host().with_agent_connected();
        let done = run(
            &connected,
            &context(Phase::Inspect),
            STEP,
            state_at(Stage::AwaitAgent, &connected),
        );

        assert_eq!(stage_of(&polled.state), Stage::AwaitAgent);
        assert_eq!(polled.after_ms, AGENT_POLL_MS);
        assert!(waiting.calls().is_empty(), "polling touches no driver");
        assert_eq!(done, Ok(StepOutcome::Done));
    }

    #[test]
    fn the_agent_boot_times_out_with_an_actionable_message() {
        let host = host();
        let state = state_at(Stage::AwaitAgent, &host);
        host.advance_clock(600_000);

        let message = failure(run(&host, &context(Phase::Deploy), STEP, state));

        assert_eq!(
            message,
            "the deploy agent did not check in within 600 s of booting the deploy media \
             from http://media.lab (still waiting for the deploy agent to check in); \
             check that the host boots virtual media in UEFI mode and that the agent reaches \
             the operator, or raise agent-boot-timeout-seconds"
        );
        assert!(!message.contains("deploy.iso"), "the media path stays out");
    }

    #[test]
    fn the_agent_boot_timeout_is_configurable() {
        let host = host().with_config(crate::settings::AGENT_BOOT_TIMEOUT, "60");
        let state = state_at(Stage::AwaitAgent, &host);
        host.advance_clock(59_999);

        let before = requeued(run(&host, &context(Phase::Inspect), STEP, state.clone()));
        host.advance_clock(1);
        let after = failure(run(&host, &context(Phase::Inspect), STEP, state));

        assert_eq!(stage_of(&before.state), Stage::AwaitAgent);
        assert!(after.contains("within 60 s"), "{after}");
    }

    #[test]
    fn media_still_being_inserted_is_asked_for_again() {
        let slow = host();
        slow.expect_control(pending("downloading"));
        let first = requeued(run(&slow, &context(Phase::Inspect), STEP, None));
        let next = host();
        for _ in 0..3 {
            next.expect_control(Ok(Progress::Done));
        }
        let second = requeued(run(
            &next,
            &context(Phase::Inspect),
            STEP,
            Some(first.state.clone()),
        ));

        assert_eq!(stage_of(&first.state), Stage::InsertMedia);
        assert_eq!(first.after_ms, 2_000);
        assert_eq!(first.detail, "insert the deploy media: downloading");
        assert_eq!(next.calls()[0], deploy_media());
        assert_eq!(stage_of(&second.state), Stage::AwaitAgent);
    }

    #[test]
    fn without_call_budget_the_step_stops_between_requests() {
        let host = MockHost::new();
        host.set_deadline_remaining_ms(1_000);
        host.expect_control(Ok(Progress::Done));

        let requeue = requeued(run(&host, &context(Phase::Inspect), STEP, None));

        assert_eq!(host.calls(), [deploy_media()]);
        assert_eq!(stage_of(&requeue.state), Stage::SetBootDevice);
        host.assert_done();
    }

    #[test]
    fn a_pending_power_on_is_never_followed_by_a_reset() {
        let powering = host();
        powering.expect_control(pending("powering on"));
        let first = requeued(run(
            &powering,
            &context(Phase::Inspect),
            STEP,
            state_at(Stage::PowerUp(PowerUp::Request), &powering),
        ));
        let on = host().with_power_state(PowerState::On);
        let second = requeued(run(
            &on,
            &context(Phase::Inspect),
            STEP,
            Some(first.state.clone()),
        ));

        assert_eq!(powering.calls(), [HostCall::SetPower(PowerAction::On)]);
        assert_eq!(stage_of(&first.state), Stage::PowerUp(PowerUp::PoweringOn));
        assert!(on.calls().is_empty(), "the host is on: no reset");
        assert_eq!(stage_of(&second.state), Stage::AwaitAgent);
    }

    #[test]
    fn a_power_state_in_transition_is_waited_out_then_the_boot_device_set_again() {
        let host = host().with_power_state(PowerState::PoweringOff);

        let requeue = requeued(run(
            &host,
            &context(Phase::Inspect),
            STEP,
            state_at(Stage::PowerUp(PowerUp::Request), &host),
        ));

        assert!(host.calls().is_empty());
        assert_eq!(stage_of(&requeue.state), Stage::SetBootDevice);
        assert_eq!(
            requeue.detail,
            "waiting for the power state to settle (now powering off)"
        );
    }

    #[test]
    fn a_host_that_was_powering_on_gets_its_one_time_boot_again_before_the_reset() {
        let booting = host().with_power_state(PowerState::PoweringOn);
        let settled = host().with_power_state(PowerState::On);
        for _ in 0..2 {
            settled.expect_control(Ok(Progress::Done));
        }

        let waited = requeued(run(
            &booting,
            &context(Phase::Deploy),
            STEP,
            state_at(Stage::PowerUp(PowerUp::Request), &booting),
        ));
        requeued(run(
            &settled,
            &context(Phase::Deploy),
            STEP,
            Some(waited.state),
        ));

        assert_eq!(
            settled.calls(),
            [
                boot_once_from_cd(BootMode::Uefi),
                HostCall::SetPower(PowerAction::RebootHard)
            ]
        );
        settled.assert_done();
    }

    #[test]
    fn a_lost_state_after_the_agent_checked_in_does_not_boot_again() {
        let host = host().with_agent_connected();

        let outcome = run(&host, &context(Phase::Deprovision), STEP, None);

        assert_eq!(outcome, Ok(StepOutcome::Done));
        assert!(host.calls().is_empty());
    }

    #[test]
    fn a_lost_state_before_the_agent_checked_in_starts_the_boot_over() {
        let host = host();
        for _ in 0..3 {
            host.expect_control(Ok(Progress::Done));
        }

        let requeue = requeued(run(
            &host,
            &context(Phase::Deploy),
            STEP,
            Some(b"garbage".to_vec()),
        ));

        assert_eq!(host.calls()[0], deploy_media());
        assert_eq!(stage_of(&requeue.state), Stage::AwaitAgent);
    }

    #[test]
    fn drivers_without_virtual_media_boot_once_from_the_network_in_the_boot_mode() {
        let host = host().with_power_state(PowerState::On);
        host.expect_control(no_virtual_media());
        host.expect_control(Ok(Progress::Done));
        host.expect_control(Ok(Progress::Done));
        let mut ctx = context(Phase::Inspect);
        set_parameter(&mut ctx, params::BOOT_MODE, "legacy");

        let requeue = requeued(run(&host, &ctx, STEP, None));

        assert_eq!(
            host.calls(),
            [
                deploy_media(),
                boot_once(BootTarget::Pxe, BootMode::Legacy),
                HostCall::SetPower(PowerAction::RebootHard)
            ]
        );
        assert!(matches!(stage_of(&requeue.state), Stage::PowerUp(_)));
        assert!(
            host.logs().iter().any(|log| log
                .message
                .contains("booting the deploy media from the network")),
            "the fallback is logged"
        );
        host.assert_done();
    }

    #[test]
    fn network_boot_survives_between_runs_and_names_itself_on_timeout() {
        let budgetless = MockHost::new();
        budgetless.set_deadline_remaining_ms(1_000);
        budgetless.expect_control(no_virtual_media());
        let first = requeued(run(&budgetless, &context(Phase::Inspect), STEP, None));
        let next = host();
        next.expect_control(Ok(Progress::Done));
        next.expect_control(Ok(Progress::Done));
        requeued(run(
            &next,
            &context(Phase::Inspect),
            STEP,
            Some(first.state.clone()),
        ));
        let late = host();
        let state = network_state_at(Stage::AwaitAgent, &late);
        late.advance_clock(600_000);

        let message = failure(run(&late, &context(Phase::Inspect), STEP, state));

        assert_eq!(stage_of(&first.state), Stage::SetBootDevice);
        assert_eq!(
            next.calls(),
            [
                boot_once(BootTarget::Pxe, BootMode::Uefi),
                HostCall::SetPower(PowerAction::On)
            ]
        );
        assert_eq!(
            message,
            "the deploy agent did not check in within 600 s of network-booting the deploy media \
             from http://media.lab (still waiting for the deploy agent to check in); \
             check that the host network-boots from its boot MAC address in UEFI mode and that \
             the agent reaches the operator, or raise agent-boot-timeout-seconds"
        );
    }

    #[test]
    fn a_network_boot_the_driver_refuses_fails_the_phase_and_driver_errors_are_retried() {
        let no_network_boot = host();
        no_network_boot.expect_control(Err(ControlError::NotSupported("boot target".into())));
        let broken = host();
        broken.expect_control(Err(ControlError::Driver("BMC unreachable".into())));

        let message = failure(run(
            &no_network_boot,
            &context(Phase::Inspect),
            STEP,
            network_state_at(Stage::SetBootDevice, &no_network_boot),
        ));
        let error = run(&broken, &context(Phase::Inspect), STEP, None);

        assert_eq!(
            message,
            "cannot set a one-time boot from the network: the host's BMC driver does not \
             support it (boot target)"
        );
        assert_eq!(
            error,
            Err(StepError::Transient(
                "could not insert the deploy media: BMC unreachable".into()
            ))
        );
    }
}
