//! Steps carried out by the deploy agent: `collect-inventory`,
//! `erase-metadata` and `write-image`.
//!
//! Each step sends a short sequence of agent commands, one after the other,
//! keeping the index and id of the current one in its state and polling it
//! on later runs. The operator derives a command's id from the phase run,
//! the step and the command name, so sending a command again after a lost
//! state returns the id of the one already started instead of running it
//! twice. A command may run for `agent-command-timeout-seconds`, counted
//! from when this step last sent it.

use ingot_plugin_sdk::host::{AgentCommand, AgentError, CommandStatus, Level, StepHost};
use ingot_plugin_sdk::steps::{PhaseContext, StepError, StepOutcome};
use serde::{Deserialize, Serialize};

use crate::outcome::{Halt, Wait, decode_state, elapsed_ms, seconds};
use crate::params;
use crate::plan::StepKind;
use crate::settings::{AGENT_COMMAND_TIMEOUT, Settings};

/// How often a running command is polled.
const POLL_MS: u64 = 5_000;

/// One agent command of a step, and what it is for.
#[derive(Debug, Clone, PartialEq)]
struct AgentCall {
    command: AgentCommand,
    /// Verb phrase for messages, e.g. "write the image".
    purpose: &'static str,
}

impl AgentCall {
    fn new(name: &str, args_json: String, purpose: &'static str) -> Self {
        Self {
            command: AgentCommand {
                name: name.into(),
                args_json,
            },
            purpose,
        }
    }

    fn without_args(name: &str, purpose: &'static str) -> Self {
        Self::new(name, "{}".into(), purpose)
    }
}

/// Arguments of `write-image`, from the phase's image. The operator adds
/// the root device hints and the config drive.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WriteImageArgs<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksum_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'a str>,
}

/// State of an agent step between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CommandState {
    /// Index of the current command in the step's sequence.
    index: usize,
    /// Its id on the agent.
    command_id: String,
    /// Whether it was sent again because the agent no longer knew it.
    resent: bool,
    /// When it was sent, bounding how long it may run.
    sent_ms: u64,
}

/// The commands of an agent step. Writes and erasures end with `sync`, so
/// nothing is lost when the next step cuts power or resets the host.
fn sequence(kind: StepKind, ctx: &PhaseContext) -> Result<Vec<AgentCall>, Halt> {
    match kind {
        StepKind::CollectInventory => Ok(vec![AgentCall::without_args(
            "inventory",
            "report the hardware inventory",
        )]),
        StepKind::EraseMetadata => Ok(vec![
            AgentCall::without_args("erase-metadata", "erase the disk metadata"),
            AgentCall::without_args("sync", "flush the disks"),
        ]),
        StepKind::WriteImage => Ok(vec![
            AgentCall::new("write-image", write_image_args(ctx)?, "write the image"),
            AgentCall::without_args("sync", "flush the disks"),
        ]),
        other => Err(Halt::Error(StepError::Other(format!(
            "step {} is not carried out by the deploy agent",
            other.name()
        )))),
    }
}

fn write_image_args(ctx: &PhaseContext) -> Result<String, Halt> {
    let image = params::image(ctx)?;
    let args = WriteImageArgs {
        url: &image.url,
        checksum: image.checksum.as_deref(),
        checksum_type: image.checksum_type.as_deref(),
        format: image.format.as_deref(),
    };

    serde_json::to_string(&args).map_err(|error| {
        Halt::Error(StepError::Other(format!(
            "encoding the write-image arguments: {error}"
        )))
    })
}

/// Runs the agent step `kind` once.
///
/// Without state (first run, or a lost one) the step walks its sequence
/// from the start: sending a command the agent already ran returns its id,
/// and its status says it succeeded, so finished commands are skipped in
/// the same run rather than run again.
pub fn run(
    host: &impl StepHost,
    ctx: &PhaseContext,
    settings: &Settings,
    kind: StepKind,
    state: Option<Vec<u8>>,
) -> Result<StepOutcome, Halt> {
    let calls = sequence(kind, ctx)?;
    let mut current = match decode_state::<CommandState>(host, kind.name(), state) {
        Some(state) if state.index < calls.len() => state,
        _ => send(host, &calls, 0, false)?,
    };

    loop {
        let call = command_at(&calls, current.index)?;

        match host.agent_status(&current.command_id) {
            Ok(CommandStatus::Running(note)) => {
                let running = elapsed_ms(host, current.sent_ms);
                if running >= settings.agent_command_timeout_ms {
                    return Err(Halt::Failed(format!(
                        "the deploy agent did not {} within {} s (last progress: {note}); \
                         raise {AGENT_COMMAND_TIMEOUT} for large images or slow networks",
                        call.purpose,
                        seconds(running)
                    )));
                }
                return Wait::new(POLL_MS, format!("{}: {note}", call.purpose)).requeue(&current);
            }
            Ok(CommandStatus::Succeeded(_)) => {
                log_finished(host, call, &current.command_id);
                let next = current.index + 1;
                if next == calls.len() {
                    return Ok(StepOutcome::Done);
                }
                current = send(host, &calls, next, false)?;
            }
            Ok(CommandStatus::Failed(message)) => {
                return Err(Halt::Failed(format!(
                    "the deploy agent could not {}: {message}",
                    call.purpose
                )));
            }
            Err(AgentError::Unknown(_)) if !current.resent => {
                host.log(
                    Level::Warn,
                    "the deploy agent does not know the command, sending it again",
                    &[("command", &call.command.name), ("id", &current.command_id)],
                );
                let resent = send(host, &calls, current.index, true)?;
                return Wait::new(
                    POLL_MS,
                    format!("asked the deploy agent again to {}", call.purpose),
                )
                .requeue(&resent);
            }
            Err(error) => return Err(status_failure(call, &current.command_id, error)),
        }
    }
}

fn command_at(calls: &[AgentCall], index: usize) -> Result<&AgentCall, Halt> {
    calls.get(index).ok_or_else(|| {
        Halt::Error(StepError::Other(format!(
            "command {index} is past the end of the step's {} commands",
            calls.len()
        )))
    })
}

fn send(
    host: &impl StepHost,
    calls: &[AgentCall],
    index: usize,
    resent: bool,
) -> Result<CommandState, Halt> {
    let call = command_at(calls, index)?;

    let command_id = host
        .agent_send(&call.command)
        .map_err(|error| send_failure(call, error))?;
    host.log(
        Level::Info,
        "deploy agent command sent",
        &[("command", &call.command.name), ("id", &command_id)],
    );

    Ok(CommandState {
        index,
        command_id,
        resent,
        sent_ms: host.now_unix_ms(),
    })
}

fn log_finished(host: &impl StepHost, call: &AgentCall, command_id: &str) {
    host.log(
        Level::Info,
        "deploy agent command succeeded",
        &[("command", &call.command.name), ("id", command_id)],
    );
}

fn send_failure(call: &AgentCall, error: AgentError) -> Halt {
    match error {
        AgentError::NotConnected => Halt::Error(StepError::Transient(format!(
            "cannot {}: the deploy agent is not connected",
            call.purpose
        ))),
        AgentError::Unknown(detail) => Halt::Failed(format!(
            "the deploy agent does not know the command {:?} ({detail}): it may be older than the operator",
            call.command.name
        )),
        AgentError::Other(detail) => Halt::Error(StepError::Transient(format!(
            "cannot {}: sending the command to the deploy agent failed: {detail}",
            call.purpose
        ))),
    }
}

fn status_failure(call: &AgentCall, command_id: &str, error: AgentError) -> Halt {
    match error {
        AgentError::NotConnected => Halt::Error(StepError::Transient(format!(
            "cannot follow the command to {}: the deploy agent is not connected",
            call.purpose
        ))),
        AgentError::Unknown(_) => Halt::Failed(format!(
            "the deploy agent lost the command to {} ({command_id}) again after it was sent a second time",
            call.purpose
        )),
        AgentError::Other(detail) => Halt::Error(StepError::Transient(format!(
            "cannot follow the command to {}: {detail}",
            call.purpose
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{context, failure, host, requeued, run};
    use ingot_plugin_sdk::mock::{HostCall, MockHost};
    use ingot_plugin_sdk::steps::{Image, Phase};

    /// Ids the mock agent hands out, in order of sending.
    const FIRST: &str = "command-1";
    const SECOND: &str = "command-2";

    fn sent(host: &MockHost) -> Vec<AgentCommand> {
        host.calls()
            .into_iter()
            .filter_map(|call| match call {
                HostCall::AgentSend(command) => Some(command),
                _ => None,
            })
            .collect()
    }

    fn sent_names(host: &MockHost) -> Vec<String> {
        sent(host).into_iter().map(|command| command.name).collect()
    }

    fn decoded(state: &[u8]) -> CommandState {
        serde_json::from_slice(state).expect("command state")
    }

    fn succeeded() -> CommandStatus {
        CommandStatus::Succeeded("{}".into())
    }

    #[test]
    fn collect_inventory_sends_the_command_and_polls_it_to_success() {
        let host = host().with_agent_connected();
        let ctx = context(Phase::Inspect);
        host.script_agent_command(
            FIRST,
            vec![CommandStatus::Running("reading disks".into()), succeeded()],
        );

        let started = requeued(run(&host, &ctx, "collect-inventory", None));
        let done = run(
            &host,
            &ctx,
            "collect-inventory",
            Some(started.state.clone()),
        );

        assert_eq!(
            sent(&host),
            [AgentCommand {
                name: "inventory".into(),
                args_json: "{}".into()
            }]
        );
        assert_eq!(
            started.detail,
            "report the hardware inventory: reading disks"
        );
        assert_eq!(started.after_ms, POLL_MS);
        assert_eq!(decoded(&started.state).command_id, FIRST);
        assert_eq!(done, Ok(StepOutcome::Done));
    }

    #[test]
    fn write_image_hands_the_image_to_the_agent_then_flushes() {
        let host = host().with_agent_connected();
        let mut ctx = context(Phase::Deploy);
        ctx.image = Some(Image {
            url: "http://images.lab/\"odd\"\\name.raw".into(),
            checksum: None,
            checksum_type: None,
            format: Some("raw".into()),
        });
        host.script_agent_command(
            FIRST,
            vec![CommandStatus::Running("40%".into()), succeeded()],
        );
        host.script_agent_command(
            SECOND,
            vec![CommandStatus::Running("flushing".into()), succeeded()],
        );

        let writing = requeued(run(&host, &ctx, "write-image", None));
        let flushing = requeued(run(&host, &ctx, "write-image", Some(writing.state.clone())));
        let done = run(&host, &ctx, "write-image", Some(flushing.state.clone()));

        let commands = sent(&host);
        assert_eq!(commands[0].name, "write-image");
        assert_eq!(
            commands[0].args_json,
            r#"{"url":"http://images.lab/\"odd\"\\name.raw","format":"raw"}"#
        );
        assert_eq!(commands[1].name, "sync");
        assert_eq!(commands.len(), 2);
        assert_eq!(decoded(&writing.state).index, 0);
        assert_eq!(decoded(&flushing.state).index, 1);
        assert_eq!(flushing.detail, "flush the disks: flushing");
        assert_eq!(done, Ok(StepOutcome::Done));
    }

    #[test]
    fn write_image_passes_the_checksum_in_the_agent_spelling() {
        let host = host().with_agent_connected();
        host.script_agent_command(FIRST, vec![CommandStatus::Running(String::new())]);

        requeued(run(&host, &context(Phase::Deploy), "write-image", None));

        assert_eq!(
            sent(&host)[0].args_json,
            format!(
                r#"{{"url":"http://images.lab/os.qcow2","checksum":"{}","checksumType":"sha256","format":"qcow2"}}"#,
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn erase_metadata_erases_then_flushes() {
        let host = host().with_agent_connected();
        host.script_agent_command(FIRST, vec![succeeded()]);
        host.script_agent_command(SECOND, vec![CommandStatus::Running(String::new())]);

        let requeue = requeued(run(
            &host,
            &context(Phase::Deprovision),
            "erase-metadata",
            None,
        ));

        assert_eq!(sent_names(&host), ["erase-metadata", "sync"]);
        assert_eq!(decoded(&requeue.state).index, 1);
    }

    #[test]
    fn an_agent_failure_fails_the_phase_with_its_message() {
        let host = host().with_agent_connected();
        host.script_agent_command(
            FIRST,
            vec![CommandStatus::Failed("checksum mismatch".into())],
        );

        let message = failure(run(&host, &context(Phase::Deploy), "write-image", None));

        assert_eq!(
            message,
            "the deploy agent could not write the image: checksum mismatch"
        );
        assert_eq!(
            sent_names(&host),
            ["write-image"],
            "no sync after a failure"
        );
    }

    #[test]
    fn a_command_running_past_its_timeout_fails_the_phase() {
        let host = host()
            .with_agent_connected()
            .with_config(AGENT_COMMAND_TIMEOUT, "3600");
        let ctx = context(Phase::Deploy);
        host.script_agent_command(FIRST, vec![CommandStatus::Running("12%".into())]);
        let started = requeued(run(&host, &ctx, "write-image", None));
        host.advance_clock(3_599_999);
        let still = requeued(run(&host, &ctx, "write-image", Some(started.state.clone())));
        host.advance_clock(1);

        let message = failure(run(&host, &ctx, "write-image", Some(still.state)));

        assert_eq!(
            message,
            "the deploy agent did not write the image within 3600 s (last progress: 12%); \
             raise agent-command-timeout-seconds for large images or slow networks"
        );
    }

    #[test]
    fn a_lost_state_walks_past_the_commands_already_finished() {
        let host = host().with_agent_connected();
        host.script_agent_command(FIRST, vec![succeeded()]);
        host.script_agent_command(SECOND, vec![succeeded()]);

        let outcome = run(&host, &context(Phase::Deploy), "write-image", None);

        assert_eq!(outcome, Ok(StepOutcome::Done));
        assert_eq!(sent_names(&host), ["write-image", "sync"]);
    }

    #[test]
    fn a_command_the_agent_forgot_is_sent_once_more_then_fails() {
        let host = host().with_agent_connected();
        let ctx = context(Phase::Inspect);

        let resent = requeued(run(&host, &ctx, "collect-inventory", None));
        let message = failure(run(
            &host,
            &ctx,
            "collect-inventory",
            Some(resent.state.clone()),
        ));

        let state = decoded(&resent.state);
        assert!(state.resent);
        assert_eq!(state.command_id, SECOND);
        assert_eq!(sent_names(&host), ["inventory", "inventory"]);
        assert_eq!(
            message,
            "the deploy agent lost the command to report the hardware inventory (command-2) \
             again after it was sent a second time"
        );
    }

    #[test]
    fn an_agent_that_is_not_connected_is_retried_by_the_operator() {
        let host = host();

        let error = run(&host, &context(Phase::Inspect), "collect-inventory", None);

        assert_eq!(
            error,
            Err(StepError::Transient(
                "cannot report the hardware inventory: the deploy agent is not connected".into()
            ))
        );
    }

    #[test]
    fn a_state_past_the_end_of_the_sequence_starts_over() {
        let host = host().with_agent_connected();
        host.script_agent_command(FIRST, vec![CommandStatus::Running(String::new())]);
        let stale = CommandState {
            index: 7,
            command_id: "old".into(),
            resent: false,
            sent_ms: 0,
        };

        let requeue = requeued(run(
            &host,
            &context(Phase::Inspect),
            "collect-inventory",
            Some(serde_json::to_vec(&stale).expect("encodes")),
        ));

        assert_eq!(decoded(&requeue.state).index, 0);
        assert_eq!(decoded(&requeue.state).command_id, FIRST);
    }

    #[test]
    fn only_agent_steps_have_a_command_sequence() {
        let error = sequence(StepKind::Reboot, &context(Phase::Deploy));

        assert!(matches!(error, Err(Halt::Error(StepError::Other(_)))));
    }
}
