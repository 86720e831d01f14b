//! The live fleet view: one row per BareMetalHost with its state, power, consumer, current
//! step, time in state and last error.
//!
//! On a terminal the table is redrawn in place every second and on every change; elsewhere
//! (a pipe, a log file, CI) each change of a host is printed once as a plain `key=value` line,
//! so the output stays readable and greppable.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::Value;

/// How often the terminal table is redrawn when nothing changes (time in state moves on).
const REDRAW_EVERY: Duration = Duration::from_secs(1);
/// Longest error message shown in the table; the full text is in the host's status.
const ERROR_WIDTH: usize = 60;

/// What the view shows of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `namespace/name`.
    pub host: String,
    /// Provisioning state (`registering`, `available`, `provisioned`, ...).
    pub state: String,
    /// `on`, `off`, or `-` before the first power reading.
    pub power: String,
    /// Name of the object that claimed the host, or `-`.
    pub consumer: String,
    /// What the host is doing now (the `Progressing` condition), or `-`.
    pub step: String,
    /// Last error, or `-`.
    pub error: String,
}

impl Row {
    /// The row of a BareMetalHost object.
    pub fn of(host: &DynamicObject) -> Self {
        let data = &host.data;
        let text = |pointer: &str| {
            data.pointer(pointer)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("-")
                .to_string()
        };
        let state = match text("/status/provisioning/state").as_str() {
            "-" => "new".to_string(),
            other => other.to_string(),
        };
        let power = match data.pointer("/status/poweredOn").and_then(Value::as_bool) {
            Some(true) => "on",
            Some(false) if data.pointer("/status/provisioning/state").is_some() => "off",
            _ => "-",
        };
        Row {
            host: format!(
                "{}/{}",
                host.namespace().unwrap_or_default(),
                host.name_any()
            ),
            state,
            power: power.to_string(),
            consumer: text("/spec/consumerRef/name"),
            step: current_step(data),
            error: text("/status/errorMessage"),
        }
    }
}

/// The reason and message of a true `Progressing` condition.
fn current_step(data: &Value) -> String {
    let conditions = data.pointer("/status/conditions").and_then(Value::as_array);
    let progressing = conditions
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing" && c["status"] == "True");
    let Some(condition) = progressing else {
        return "-".to_string();
    };
    let reason = condition["reason"].as_str().unwrap_or_default();
    match condition["message"].as_str().filter(|m| !m.is_empty()) {
        Some(message) => format!("{reason}: {message}"),
        None if reason.is_empty() => "-".to_string(),
        None => reason.to_string(),
    }
}

/// When a host that is first seen now entered its state, from its operation history.
fn state_entered(host: &DynamicObject, state: &str, now: Timestamp) -> Timestamp {
    let history = &host.data["status"]["operationHistory"];
    let at = |operation: &str, edge: &str| {
        history[operation][edge]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
    };
    let entered = match state {
        "registering" => at("register", "start"),
        "inspecting" => at("inspect", "start"),
        "provisioning" => at("provision", "start"),
        "deprovisioning" => at("deprovision", "start"),
        "provisioned" => at("provision", "end"),
        "available" | "ready" => at("deprovision", "end")
            .into_iter()
            .chain(at("inspect", "end"))
            .max(),
        _ => None,
    };
    entered.unwrap_or(now)
}

/// The hosts seen so far and when each entered its current state.
#[derive(Debug, Default)]
pub struct Fleet {
    hosts: BTreeMap<String, (Row, Timestamp)>,
}

impl Fleet {
    /// Records a host as it is now; returns its row when anything shown changed.
    pub fn update(&mut self, host: &DynamicObject, now: Timestamp) -> Option<Row> {
        let row = Row::of(host);
        match self.hosts.get(&row.host) {
            Some((old, _)) if *old == row => None,
            Some((old, since)) => {
                let since = if old.state == row.state { *since } else { now };
                self.hosts.insert(row.host.clone(), (row.clone(), since));
                Some(row)
            }
            None => {
                let since = state_entered(host, &row.state, now);
                self.hosts.insert(row.host.clone(), (row.clone(), since));
                Some(row)
            }
        }
    }

    /// Forgets a deleted host.
    pub fn remove(&mut self, host: &DynamicObject) {
        let key = format!(
            "{}/{}",
            host.namespace().unwrap_or_default(),
            host.name_any()
        );
        self.hosts.remove(&key);
    }

    /// Forgets every host (before a re-list).
    pub fn clear(&mut self) {
        self.hosts.clear();
    }

    /// The table as lines, header first, widths fitted to the content.
    pub fn table(&self, now: Timestamp) -> Vec<String> {
        let header = [
            "HOST",
            "STATE",
            "POWER",
            "CONSUMER",
            "STEP",
            "IN STATE",
            "LAST ERROR",
        ];
        let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for (row, since) in self.hosts.values() {
            cells.push(vec![
                row.host.clone(),
                row.state.clone(),
                row.power.clone(),
                row.consumer.clone(),
                row.step.clone(),
                human_duration(now.duration_since(*since).as_secs()),
                shorten(&row.error, ERROR_WIDTH),
            ]);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|column| {
                cells
                    .iter()
                    .map(|r| r[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        cells
            .iter()
            .map(|row| {
                let padded: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect();
                padded.join("  ").trim_end().to_string()
            })
            .collect()
    }
}

/// One plain log line for a changed host.
pub fn log_line(row: &Row, now: Timestamp) -> String {
    format!(
        "{} host={} state={} power={} consumer={} step={:?} error={:?}",
        now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        row.host,
        row.state,
        row.power,
        row.consumer,
        row.step,
        row.error
    )
}

/// `42s`, `3m07s`, `1h02m`.
pub fn human_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// Where the view is drawn.
pub struct View<W: Write> {
    out: W,
    terminal: bool,
    drawn_lines: usize,
}

impl<W: Write> View<W> {
    /// A view writing to `out`; `terminal` selects in-place redraws over log lines.
    pub fn new(out: W, terminal: bool) -> Self {
        Self {
            out,
            terminal,
            drawn_lines: 0,
        }
    }

    /// Shows a change: log lines print it, a terminal redraws the table.
    pub fn changed(&mut self, fleet: &Fleet, row: &Row, now: Timestamp) -> std::io::Result<()> {
        if self.terminal {
            return self.redraw(fleet, now);
        }
        writeln!(self.out, "{}", log_line(row, now))?;
        self.out.flush()
    }

    /// Redraws the table in place (terminals only; log output has nothing to refresh).
    pub fn redraw(&mut self, fleet: &Fleet, now: Timestamp) -> std::io::Result<()> {
        if !self.terminal {
            return Ok(());
        }
        let lines = fleet.table(now);
        let mut frame = String::new();
        if self.drawn_lines > 0 {
            frame.push_str(&format!("\x1b[{}A", self.drawn_lines));
        }
        for line in &lines {
            frame.push_str("\x1b[2K");
            frame.push_str(line);
            frame.push('\n');
        }
        frame.push_str("\x1b[J");
        self.drawn_lines = lines.len();
        self.out.write_all(frame.as_bytes())?;
        self.out.flush()
    }
}

/// The BareMetalHost resource.
fn hosts_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        ingot_api::METAL3_GROUP,
        "v1alpha1",
        "BareMetalHost",
    ))
}

/// Watches every BareMetalHost and shows the fleet on `view` until `shutdown` resolves.
pub async fn run<W: Write>(
    client: Client,
    mut view: View<W>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let hosts: Api<DynamicObject> = Api::all_with(client, &hosts_resource());
    let mut events = watcher(hosts, watcher::Config::default()).boxed();
    let mut fleet = Fleet::default();
    let mut ticker = tokio::time::interval(REDRAW_EVERY);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            _ = ticker.tick() => view.redraw(&fleet, Timestamp::now())?,
            event = events.next() => match event {
                None => return Ok(()),
                Some(Err(error)) => {
                    tracing::debug!(error = %error, "fleet watch interrupted, resuming");
                    tokio::time::sleep(REDRAW_EVERY).await;
                }
                Some(Ok(event)) => show(&mut fleet, &mut view, event)?,
            },
        }
    }
}

fn show<W: Write>(
    fleet: &mut Fleet,
    view: &mut View<W>,
    event: watcher::Event<DynamicObject>,
) -> std::io::Result<()> {
    let now = Timestamp::now();
    match event {
        watcher::Event::Init => fleet.clear(),
        watcher::Event::InitApply(host) | watcher::Event::Apply(host) => {
            if let Some(row) = fleet.update(&host, now) {
                view.changed(fleet, &row, now)?;
            }
        }
        watcher::Event::Delete(host) => {
            fleet.remove(&host);
            view.redraw(fleet, now)?;
        }
        watcher::Event::InitDone => view.redraw(fleet, now)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(status: Value, consumer: Option<&str>) -> DynamicObject {
        let mut spec = json!({"online": true});
        if let Some(name) = consumer {
            spec["consumerRef"] = json!({"kind": "Metal3Machine", "name": name});
        }
        serde_json::from_value(json!({
            "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
            "metadata": {"name": "lab-0", "namespace": "default"},
            "spec": spec, "status": status,
        }))
        .expect("host")
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    #[test]
    fn row_shows_state_power_consumer_step_and_error() {
        let row = Row::of(&host(
            json!({"provisioning": {"state": "provisioning"}, "poweredOn": true,
                "errorMessage": "",
                "conditions": [{"type": "Progressing", "status": "True", "reason": "Deploying",
                    "message": "writing image"}]}),
            Some("workers-b2c4d"),
        ));
        assert_eq!(row.host, "default/lab-0");
        assert_eq!(row.state, "provisioning");
        assert_eq!(row.power, "on");
        assert_eq!(row.consumer, "workers-b2c4d");
        assert_eq!(row.step, "Deploying: writing image");
        assert_eq!(row.error, "-");
    }

    #[test]
    fn a_new_host_has_no_state_or_power_yet() {
        let row = Row::of(&host(Value::Null, None));
        assert_eq!((row.state.as_str(), row.power.as_str()), ("new", "-"));
        assert_eq!((row.consumer.as_str(), row.step.as_str()), ("-", "-"));
    }

    #[test]
    fn time_in_state_restarts_only_when_the_state_changes() {
        let mut fleet = Fleet::default();
        let registering = host(json!({"provisioning": {"state": "registering"}}), None);
        assert!(fleet.update(&registering, at(0)).is_some());
        assert!(
            fleet.update(&registering, at(5)).is_none(),
            "nothing shown changed"
        );

        let mut failing = registering.clone();
        failing.data["status"]["errorMessage"] = json!("BMC unreachable");
        assert!(fleet.update(&failing, at(7)).is_some());
        assert!(
            fleet.table(at(9))[1].contains("9s"),
            "same state keeps its clock"
        );

        let available = host(
            json!({"provisioning": {"state": "available"}, "poweredOn": false}),
            None,
        );
        fleet.update(&available, at(10));
        let table = fleet.table(at(72));
        assert!(table[0].starts_with("HOST"));
        assert!(
            table[1].contains("available") && table[1].contains("1m02s"),
            "{table:?}"
        );
    }

    #[test]
    fn first_sight_uses_the_operation_history() {
        let provisioning = host(
            json!({"provisioning": {"state": "provisioning"},
                "operationHistory": {"provision": {"start": "2027-01-15T08:00:00Z"}}}),
            None,
        );
        let now: Timestamp = "2027-01-15T08:03:00Z".parse().expect("time");
        let mut fleet = Fleet::default();
        fleet.update(&provisioning, now);
        assert!(fleet.table(now)[1].contains("3m00s"));
    }

    #[test]
    fn plain_output_prints_one_line_per_change() {
        let mut fleet = Fleet::default();
        let mut out = Vec::new();
        {
            let mut view = View::new(&mut out, false);
            let host = host(
                json!({"provisioning": {"state": "available"}, "poweredOn": false}),
                None,
            );
            let row = fleet.update(&host, at(0)).expect("changed");
            view.changed(&fleet, &row, at(0)).expect("written");
            view.redraw(&fleet, at(1)).expect("nothing to redraw");
        }
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("host=default/lab-0 state=available power=off consumer=-"));
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn terminal_output_redraws_in_place() {
        let mut fleet = Fleet::default();
        let mut out = Vec::new();
        {
            let mut view = View::new(&mut out, true);
            let host = host(json!({"provisioning": {"state": "available"}}), None);
            let row = fleet.update(&host, at(0)).expect("changed");
            view.changed(&fleet, &row, at(0)).expect("drawn");
            view.redraw(&fleet, at(1)).expect("redrawn");
        }
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("\x1b[2A"),
            "second frame moves up over the first: {text:?}"
        );
        assert_eq!(text.matches("HOST").count(), 2);
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(-3), "0s");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(61), "1m01s");
        assert_eq!(human_duration(3720), "1h02m");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
