//! Running a provisioning phase through a steps plugin, one step at a time.
//!
//! A phase run is planned once, then each reconcile runs the current step until it is done,
//! waits when the step asks to be called again later (cut short when the host's deploy agent
//! checks in or finishes a command, which is what such steps wait for), and records every change before
//! returning, so a restarted operator picks up at the same step with the same state. Several
//! steps that finish at once run within one reconcile, up to a bound that keeps a reconcile
//! short.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ingot_operator::provisioner::{Progress, ProvisionerError};
use ingot_plugin_host::CallError;
use ingot_plugin_host::bindings::steps::{Image, PhaseContext, Step, StepError, StepOutcome};
use ingot_plugin_host::bindings::types::HostRef;
use ingot_plugin_host::calls::{PluginCall, PluginReply};
use ingot_plugin_host::error::DomainError;
use ingot_plugin_host::routing::PluginBinding;
use ingot_plugin_host::state::CallScope;

use crate::host::HostProvisioner;
use crate::links::{AgentLink, DeployExtras};
use crate::records::{PhaseName, PhaseRun, PlannedStep, RunOutcome};

/// Steps run back to back in one reconcile at most; the rest wait for the next one.
const MAX_STEPS_PER_RECONCILE: usize = 8;

/// How soon to look again when steps remain but the reconcile has run enough of them.
const CONTINUE_SOON: Duration = Duration::from_millis(100);

/// Calls in a row to one step that may go unanswered (a transient error, a failing plugin)
/// before the phase fails. Without a bound, an unreachable BMC would keep a host retrying
/// silently for ever instead of showing the error, and a deletion could never give up.
const TRANSIENT_FAILURE_LIMIT: u32 = 3;

/// What a phase is asked to do.
pub struct PhaseRequest {
    /// The phase.
    pub phase: PhaseName,
    /// Digest of the request; a different digest starts a new run.
    pub fingerprint: String,
    /// Start a new run when the last run of this phase has ended.
    pub restart: bool,
    /// The image, for deploy and live-iso.
    pub image: Option<Image>,
    /// Parameters the host sets, on top of the policy's.
    pub parameters: Vec<(String, String)>,
    /// What the host adds to image writes.
    pub extras: DeployExtras,
}

impl HostProvisioner {
    /// Advances the phase run for `request` as far as it can go now.
    pub(crate) async fn advance(
        &self,
        request: PhaseRequest,
    ) -> Result<Progress, ProvisionerError> {
        let binding = self.steps_binding(request.phase)?;
        let mut run = self.current_run(&request, &binding)?;
        let request = Arc::new(request);

        for _ in 0..MAX_STEPS_PER_RECONCILE {
            if let Some(outcome) = &run.outcome {
                return Ok(progress_of(outcome));
            }
            let waiting = run.not_before_ms.saturating_sub(now_ms());
            if waiting > 0 && !self.shared.wakes.take_agent_news(&self.host.uid) {
                return Ok(Progress::Working {
                    requeue_after: Duration::from_millis(waiting),
                });
            }

            run = if run.planned {
                self.run_step(&binding, &request, run).await?
            } else {
                self.plan(&binding, &request, run).await?
            };
        }

        Ok(Progress::Working {
            requeue_after: CONTINUE_SOON,
        })
    }

    /// The run to continue, or a new one when the request differs from the last run or asks
    /// to start over after it ended.
    fn current_run(
        &self,
        request: &PhaseRequest,
        binding: &PluginBinding,
    ) -> Result<PhaseRun, ProvisionerError> {
        let record = self.shared.records.get(&self.host.uid).unwrap_or_default();
        if let Some(run) = record.run
            && run.phase == request.phase
            && run.fingerprint == request.fingerprint
            && !(request.restart && run.outcome.is_some())
        {
            return Ok(run);
        }

        let media_url = if needs_agent(request.phase) {
            self.publish_media()?
        } else {
            String::new()
        };
        let run = PhaseRun {
            id: format!("{}-{}", request.phase.as_str(), record.runs_started + 1),
            phase: request.phase,
            fingerprint: request.fingerprint.clone(),
            plugin: binding.plugin.clone(),
            media_url,
            steps: Vec::new(),
            planned: false,
            current: 0,
            state: None,
            not_before_ms: 0,
            detail: String::new(),
            transient_failures: 0,
            outcome: None,
        };
        tracing::info!(host = %self.host.name, namespace = %self.host.namespace, run = %run.id, plugin = %run.plugin, "phase started");
        self.save_run(&run, true)?;
        self.shared.capacity.release(&self.host.uid);
        Ok(run)
    }

    async fn plan(
        &self,
        binding: &PluginBinding,
        request: &PhaseRequest,
        mut run: PhaseRun,
    ) -> Result<PhaseRun, ProvisionerError> {
        let context = self.phase_context(binding, request, &run);
        let reply = self
            .shared
            .registry
            .call(
                &binding.plugin,
                PluginCall::Plan(context),
                self.scope(binding, None),
            )
            .await;

        match reply {
            Ok(PluginReply::Steps(steps)) => {
                run.steps = steps.into_iter().map(planned_step).collect();
                run.planned = true;
                run.transient_failures = 0;
                if run.steps.is_empty() {
                    run.outcome = Some(RunOutcome::Done);
                }
            }
            Ok(other) => return Err(self.unexpected("plan", &other)),
            Err(error) => self.plugin_error("plan", &mut run, error)?,
        }
        self.save_run(&run, false)?;
        Ok(run)
    }

    async fn run_step(
        &self,
        binding: &PluginBinding,
        request: &Arc<PhaseRequest>,
        mut run: PhaseRun,
    ) -> Result<PhaseRun, ProvisionerError> {
        let Some(step) = run.current_step().cloned() else {
            run.outcome = Some(RunOutcome::Done);
            self.save_run(&run, false)?;
            return Ok(run);
        };
        let context = self.phase_context(binding, request, &run);
        let link = AgentLink {
            agent: self.shared.agent.clone(),
            records: self.shared.records.clone(),
            host: self.host.uid.clone(),
            host_name: format!("{}/{}", self.host.namespace, self.host.name),
            id_prefix: format!("{}.{}", run.id, step.name),
            extras: Arc::new(request.extras.clone()),
        };
        let call = PluginCall::Run {
            ctx: context,
            step: Step {
                name: step.name.clone(),
                args: step.args.clone(),
            },
            state: run.state.clone(),
        };

        let reply = self
            .shared
            .registry
            .call(
                &binding.plugin,
                call,
                self.scope(binding, Some(Arc::new(link))),
            )
            .await;
        match reply {
            Ok(PluginReply::Outcome(outcome)) => apply_outcome(&mut run, &step.name, outcome),
            Ok(other) => return Err(self.unexpected("run", &other)),
            Err(error) => self.plugin_error(&step.name, &mut run, error)?,
        }
        self.save_run(&run, false)?;
        if let Some(RunOutcome::Failed(message)) = &run.outcome {
            self.events.warning("StepFailed", message.clone());
        }
        Ok(run)
    }

    fn phase_context(
        &self,
        binding: &PluginBinding,
        request: &PhaseRequest,
        run: &PhaseRun,
    ) -> PhaseContext {
        let mut parameters = binding.parameters.clone();
        parameters.retain(|(key, _)| !request.parameters.iter().any(|(own, _)| own == key));
        parameters.extend(request.parameters.iter().cloned());
        if !run.media_url.is_empty() {
            parameters.push(("deploy-media-url".into(), run.media_url.clone()));
        }

        PhaseContext {
            host: self.host_ref(),
            phase: run.phase.into(),
            hardware: self
                .known_hardware()
                .map(|details| ingot_plugin_host::hardware::to_plugin(&details)),
            image: request.image.clone(),
            parameters,
        }
    }

    fn scope(&self, binding: &PluginBinding, agent: Option<Arc<AgentLink>>) -> CallScope {
        CallScope {
            host: Some(self.host_ref()),
            config_overrides: binding.config.clone(),
            bmc: None,
            control: self
                .driver()
                .ok()
                .map(|driver| Arc::new(driver) as Arc<dyn ingot_plugin_host::state::HostControl>),
            agent: agent.map(|link| link as Arc<dyn ingot_plugin_host::state::DeployAgent>),
        }
    }

    pub(crate) fn host_ref(&self) -> HostRef {
        HostRef {
            namespace: self.host.namespace.clone(),
            name: self.host.name.clone(),
            uid: self.host.uid.clone(),
        }
    }

    /// A plugin answer that is an error: the run fails when the plugin says the request is
    /// wrong; anything transient or a failing plugin is retried with backoff, leaving the run
    /// where it is.
    fn plugin_error(
        &self,
        what: &str,
        run: &mut PhaseRun,
        error: CallError,
    ) -> Result<(), ProvisionerError> {
        match &error {
            CallError::Domain {
                error:
                    DomainError::Steps(StepError::InvalidInput(message) | StepError::Other(message)),
                plugin,
            } => {
                run.outcome = Some(RunOutcome::Failed(format!(
                    "{} step {what} of plugin {plugin}: {message}",
                    run.phase.as_str()
                )));
                Ok(())
            }
            _ if went_unanswered(&error) => self.transient_failure(what, run, error),
            _ => Err(steps_call_failed(error)),
        }
    }

    /// Keeps the run where it is for a retry with backoff, counting the failure; the phase
    /// fails once too many calls in a row went unanswered.
    fn transient_failure(
        &self,
        what: &str,
        run: &mut PhaseRun,
        error: CallError,
    ) -> Result<(), ProvisionerError> {
        if error.is_plugin_failure() {
            self.events
                .warning("PluginFailed", format!("{what}: {error}"));
        }
        run.transient_failures += 1;
        if run.transient_failures >= TRANSIENT_FAILURE_LIMIT {
            run.outcome = Some(RunOutcome::Failed(format!(
                "{} step {what} failed {} times in a row: {error}",
                run.phase.as_str(),
                run.transient_failures
            )));
            return Ok(());
        }

        self.save_run(run, false)?;
        Err(steps_call_failed(error))
    }

    fn unexpected(&self, function: &str, reply: &PluginReply) -> ProvisionerError {
        ProvisionerError::Rejected {
            call: "steps",
            message: format!("{function} answered with an unexpected reply: {reply:?}"),
        }
    }

    fn save_run(&self, run: &PhaseRun, started: bool) -> Result<(), ProvisionerError> {
        self.shared
            .records
            .update(&self.host.uid, |record| {
                record.run = Some(run.clone());
                if started {
                    record.runs_started += 1;
                }
            })
            .map_err(|error| ProvisionerError::Call {
                call: "save progress",
                source: Box::new(error),
            })
    }
}

fn apply_outcome(run: &mut PhaseRun, step: &str, outcome: StepOutcome) {
    run.transient_failures = 0;
    match outcome {
        StepOutcome::Done => {
            tracing::debug!(run = %run.id, step, "step done");
            run.current += 1;
            run.state = None;
            run.detail.clear();
            run.not_before_ms = 0;
            if run.current >= run.steps.len() {
                run.outcome = Some(RunOutcome::Done);
            }
        }
        StepOutcome::RequeueAfter(requeue) => {
            run.state = Some(requeue.state);
            run.detail = requeue.detail;
            run.not_before_ms = now_ms().saturating_add(requeue.after_ms);
        }
        StepOutcome::Failed(message) => {
            run.outcome = Some(RunOutcome::Failed(message));
        }
    }
}

/// Whether a call failed without an answer worth acting on: the plugin reported a transient
/// problem, or the plugin itself failed (timed out, crashed, ran out of resources).
fn went_unanswered(error: &CallError) -> bool {
    let transient = matches!(
        error,
        CallError::Domain {
            error: DomainError::Steps(StepError::Transient(_)),
            ..
        }
    );
    transient || error.is_plugin_failure()
}

fn steps_call_failed(error: CallError) -> ProvisionerError {
    ProvisionerError::Call {
        call: "steps",
        source: Box::new(error),
    }
}

fn planned_step(step: Step) -> PlannedStep {
    PlannedStep {
        name: step.name,
        args: step.args,
    }
}

fn progress_of(outcome: &RunOutcome) -> Progress {
    match outcome {
        RunOutcome::Done => Progress::Done,
        RunOutcome::Failed(message) => Progress::failed(message.clone()),
    }
}

/// Phases whose steps boot the deploy agent.
fn needs_agent(phase: PhaseName) -> bool {
    matches!(
        phase,
        PhaseName::Inspect | PhaseName::Deploy | PhaseName::Deprovision
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
