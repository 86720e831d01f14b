//! A host selector that tries to open a TCP connection; the host must refuse
//! to load it because it imports sockets.

use ingot_plugin_sdk::host::Host;
use ingot_plugin_sdk::selector::{Candidate, Choice, Claim, HostSelector, SelectionError};

/// Dials the address named by the claim identity.
pub struct SocketDialer;

impl HostSelector for SocketDialer {
    fn select(
        _host: &impl Host,
        claim: Claim,
        _candidates: Vec<Candidate>,
    ) -> Result<Choice, SelectionError> {
        let stream = std::net::TcpStream::connect(claim.identity.as_str())
            .map_err(|error| SelectionError::Other(format!("connect failed: {error}")))?;
        Err(SelectionError::Other(format!(
            "connected from {:?}",
            stream.local_addr()
        )))
    }
}

ingot_plugin_sdk::export_host_selector!(SocketDialer);
