//! A host selector that misbehaves on request, to prove the host contains it.
//!
//! The claim identity picks the behaviour: `loop` spins forever,
//! `memory-bomb` allocates until the host's cap stops it, `panic` panics,
//! `read-env` reads the process environment, `deep-recursion` overflows the
//! stack; anything else answers normally with the reason `hostile fixture
//! answered <identity>`.

use ingot_plugin_sdk::host::Host;
use ingot_plugin_sdk::selector::{Candidate, Choice, Claim, HostSelector, Ranked, SelectionError};

/// The misbehaving selector.
pub struct Hostile;

impl HostSelector for Hostile {
    fn select(
        _host: &impl Host,
        claim: Claim,
        candidates: Vec<Candidate>,
    ) -> Result<Choice, SelectionError> {
        let reason = match claim.identity.as_str() {
            "loop" => spin_forever(),
            "memory-bomb" => exhaust_memory(),
            "panic" => panic!("hostile fixture panics on purpose"),
            "read-env" => format!("environment has {} entries", std::env::vars().count()),
            "deep-recursion" => format!("recursed {}", recurse(std::hint::black_box(1))),
            identity => format!("hostile fixture answered {identity}"),
        };

        let ranked = candidates
            .into_iter()
            .map(|candidate| Ranked {
                host: candidate.host,
                score: 0,
                reasons: vec![reason.clone()],
            })
            .collect();
        Ok(Choice {
            ranked,
            rejected: Vec::new(),
        })
    }
}

fn spin_forever() -> String {
    let mut counter = 0_u64;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn exhaust_memory() -> String {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1_u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return depth;
    }

    let frame = std::hint::black_box([depth; 64]);
    recurse(frame[0] + 1) + frame[63]
}

ingot_plugin_sdk::export_host_selector!(Hostile);
