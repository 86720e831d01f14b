//! A host selector that tries to read a host file; the host must refuse to
//! load it because it imports the filesystem.

use ingot_plugin_sdk::host::Host;
use ingot_plugin_sdk::selector::{Candidate, Choice, Claim, HostSelector, SelectionError};

/// Reads `/etc/hostname` and reports what it found.
pub struct FileReader;

impl HostSelector for FileReader {
    fn select(
        _host: &impl Host,
        _claim: Claim,
        _candidates: Vec<Candidate>,
    ) -> Result<Choice, SelectionError> {
        let contents = std::fs::read_to_string("/etc/hostname")
            .map_err(|error| SelectionError::Other(format!("read failed: {error}")))?;
        Err(SelectionError::Other(format!(
            "read {} bytes",
            contents.len()
        )))
    }
}

ingot_plugin_sdk::export_host_selector!(FileReader);
