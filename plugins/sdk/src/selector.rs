//! Writing a `host-selector` plugin.
//!
//! Implement [`HostSelector`] and export it with
//! [`export_host_selector!`](crate::export_host_selector). The helpers here
//! evaluate label selectors and hardware requirements the same way the host
//! does, so a plugin only decides how to rank.

pub use crate::bindings::host_selector::exports::ingot::plugin::selection::{
    Candidate, Choice, Claim, LabelSelector, Ranked, Rejected, Requirements, SelectionError,
    SelectorOperator, SelectorRequirement,
};

use crate::host::Host;
use crate::types::{HardwareDetails, KeyValue};

/// A host-selection policy.
pub trait HostSelector {
    /// Ranks `candidates` for `claim`; must be deterministic for the same input.
    fn select(
        host: &impl Host,
        claim: Claim,
        candidates: Vec<Candidate>,
    ) -> Result<Choice, SelectionError>;
}

/// Exports a [`HostSelector`] implementation as the component's `selection`
/// interface.
#[macro_export]
macro_rules! export_host_selector {
    ($selector:ty) => {
        const _: () = {
            struct IngotSelectionExport;

            impl $crate::bindings::host_selector::exports::ingot::plugin::selection::Guest
                for IngotSelectionExport
            {
                fn select(
                    claim: $crate::selector::Claim,
                    candidates: ::std::vec::Vec<$crate::selector::Candidate>,
                ) -> ::std::result::Result<$crate::selector::Choice, $crate::selector::SelectionError>
                {
                    <$selector as $crate::selector::HostSelector>::select(
                        &$crate::host::ComponentHost,
                        claim,
                        candidates,
                    )
                }
            }

            // Native builds (unit tests, clippy) skip the export glue: its symbol
            // names are only valid in a WebAssembly module.
            #[cfg(target_family = "wasm")]
            $crate::bindings::host_selector::__export_host_selector_world!(IngotSelectionExport);
        };
    };
}

/// The value of label `key`, if present.
pub fn label<'a>(labels: &'a [KeyValue], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
}

/// Whether `labels` satisfy `selector` (Kubernetes semantics: every
/// `match-labels` entry and every expression must hold; an empty selector
/// matches everything).
pub fn selector_matches(selector: &LabelSelector, labels: &[KeyValue]) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .all(|(key, value)| label(labels, key) == Some(value.as_str()));

    labels_match
        && selector
            .match_expressions
            .iter()
            .all(|expression| expression_matches(expression, labels))
}

fn expression_matches(expression: &SelectorRequirement, labels: &[KeyValue]) -> bool {
    let value = label(labels, &expression.key);
    let listed = |value: &str| expression.values.iter().any(|candidate| candidate == value);

    match expression.operator {
        SelectorOperator::In => value.is_some_and(listed),
        SelectorOperator::NotIn => !value.is_some_and(listed),
        SelectorOperator::Exists => value.is_some(),
        SelectorOperator::DoesNotExist => value.is_none(),
    }
}

/// Checks a claim's selector and structural validity: `in` and `not-in`
/// need values, `exists` and `does-not-exist` must have none.
pub fn validate_selector(selector: &LabelSelector) -> Result<(), SelectionError> {
    for expression in &selector.match_expressions {
        let needs_values = matches!(
            expression.operator,
            SelectorOperator::In | SelectorOperator::NotIn
        );

        if needs_values == expression.values.is_empty() {
            return Err(SelectionError::InvalidClaim(format!(
                "selector expression on key {:?}: {:?} {}",
                expression.key,
                expression.operator,
                if needs_values {
                    "needs at least one value"
                } else {
                    "takes no values"
                }
            )));
        }
    }

    Ok(())
}

/// Why `hardware` does not meet `requirements`; empty when it does.
///
/// A candidate without inspected hardware fails every hardware requirement.
pub fn unmet_requirements(
    requirements: &Requirements,
    hardware: Option<&HardwareDetails>,
) -> Vec<String> {
    let mut unmet = Vec::new();
    let cpu = hardware.and_then(|hardware| hardware.cpu.as_ref());

    if let Some(arch) = &requirements.cpu_arch
        && cpu.map(|cpu| cpu.arch.as_str()) != Some(arch.as_str())
    {
        unmet.push(format!("CPU architecture is not {arch}"));
    }

    if let Some(min) = requirements.min_cpus
        && cpu.map_or(0, |cpu| cpu.count) < min
    {
        unmet.push(format!("fewer than {min} CPUs"));
    }

    if let Some(min) = requirements.min_ram_mebibytes
        && hardware.map_or(0, |hardware| hardware.ram_mebibytes) < min
    {
        unmet.push(format!("less than {min} MiB of memory"));
    }

    if let Some(min) = requirements.min_disk_bytes
        && largest_disk_bytes(hardware) < min
    {
        unmet.push(format!("no disk of at least {min} bytes"));
    }

    if let Some(min) = requirements.min_nics
        && hardware.map_or(0, |hardware| hardware.nics.len()) < min as usize
    {
        unmet.push(format!("fewer than {min} NICs"));
    }

    unmet
}

/// Size of the largest disk, 0 when unknown.
pub fn largest_disk_bytes(hardware: Option<&HardwareDetails>) -> u64 {
    hardware
        .into_iter()
        .flat_map(|hardware| hardware.storage.iter())
        .map(|disk| disk.size_bytes)
        .max()
        .unwrap_or(0)
}

/// A stable 64-bit FNV-1a hash, for deterministic tie-breaking between
/// equally good hosts (the same claim always prefers the same host).
pub fn stable_hash(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    parts.iter().fold(OFFSET, |hash, part| {
        part.bytes()
            .chain(std::iter::once(0))
            .fold(hash, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(PRIME)
            })
    })
}
