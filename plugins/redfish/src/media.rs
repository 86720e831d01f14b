//! Virtual media insert and eject.
//!
//! Devices are looked for under the Manager and under the System (iDRAC 6+
//! and newer services moved them there; Dell is searched System first), and
//! chosen by `MediaTypes`. Insert uses the `InsertMedia` action, or a PATCH
//! of the resource on BMCs without actions; eject is idempotent, because iLO
//! fails to eject an empty drive.

use serde_json::{Value, json};

use crate::client::{Accepted, Resource};
use crate::driver::Session;
use crate::error::RedfishError;
use crate::json;
use crate::model::{MediaKind, Progress};
use crate::profile::Vendor;
use crate::transport::{BmcHttp, Environment};

const TASK_KEY: &str = "redfish/media-task";

impl<H: BmcHttp, E: Environment> Session<'_, '_, H, E> {
    /// Inserts the image at `image_url` into the first device of `kind`.
    ///
    /// # Errors
    /// No such device, a failed write, or media that does not show as
    /// inserted afterwards.
    pub fn insert_media(
        &mut self,
        image_url: &str,
        kind: MediaKind,
    ) -> Result<Progress, RedfishError> {
        if let Some(progress) = self.continue_task(TASK_KEY)? {
            return Ok(progress);
        }
        let device = self.find_media_device(kind)?;
        if is_inserted(&device.body) {
            if json::str_at(&device.body, &["Image"]) == Some(image_url) {
                return Ok(Progress::Done);
            }
            self.eject_device(&device)?;
        }

        let accepted = match json::str_at(
            &device.body,
            &["Actions", "#VirtualMedia.InsertMedia", "target"],
        ) {
            Some(target) => {
                let target = self.resolve(target);
                self.insert_by_action(&target, image_url)?
            }
            None => {
                let body = json!({"Image": image_url, "Inserted": true, "WriteProtected": true});
                self.client
                    .patch(&device.path, &body, device.etag.as_deref())?
            }
        };

        let progress = self.track_task(TASK_KEY, accepted);
        if progress == Progress::Done {
            self.verify_inserted(&device.path, image_url)?;
        }
        Ok(progress)
    }

    /// Ejects every inserted CD and removable-disk image.
    ///
    /// # Errors
    /// No virtual media at all, or a failed eject.
    pub fn eject_media(&mut self) -> Result<Progress, RedfishError> {
        if let Some(progress) = self.continue_task(TASK_KEY)? {
            return Ok(progress);
        }
        let devices = self.media_devices()?;
        if devices.is_empty() {
            return Err(RedfishError::Unsupported(
                "the BMC has no virtual media".to_owned(),
            ));
        }
        for device in devices.iter().filter(|device| is_inserted(&device.body)) {
            let accepted = self.eject_device(device)?;
            if let Accepted::Task(_) = accepted {
                return Ok(self.track_task(TASK_KEY, accepted));
            }
        }
        Ok(Progress::Done)
    }

    fn insert_by_action(
        &mut self,
        target: &str,
        image_url: &str,
    ) -> Result<Accepted, RedfishError> {
        let mut last_error = None;
        for body in insert_bodies(image_url, self.client.vendor) {
            match self.client.post(target, &body) {
                Ok(accepted) => return Ok(accepted),
                // Vendors reject parameters they consider optional; try the
                // smaller shapes before giving up.
                Err(error @ RedfishError::Status { status: 400, .. }) => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| RedfishError::Unsupported("InsertMedia".to_owned())))
    }

    fn eject_device(&mut self, device: &Resource) -> Result<Accepted, RedfishError> {
        match json::str_at(
            &device.body,
            &["Actions", "#VirtualMedia.EjectMedia", "target"],
        ) {
            Some(target) => {
                let target = self.resolve(target);
                // iLO rejects an EjectMedia without a body.
                self.client.post(&target, &json!({}))
            }
            None => {
                let body = json!({"Image": null, "Inserted": false});
                self.client
                    .patch(&device.path, &body, device.etag.as_deref())
            }
        }
    }

    fn verify_inserted(&mut self, path: &str, image_url: &str) -> Result<(), RedfishError> {
        let device = self.client.get(path)?;
        if is_inserted(&device.body) {
            return Ok(());
        }
        Err(RedfishError::NotApplied {
            what: "virtual media",
            expected: format!("{image_url} inserted"),
            found: json::str_at(&device.body, &["Image"])
                .unwrap_or("nothing")
                .to_owned(),
        })
    }

    fn find_media_device(&mut self, kind: MediaKind) -> Result<Resource, RedfishError> {
        let devices = self.media_devices()?;
        let wanted: &[&str] = match kind {
            MediaKind::Cd => &["CD", "DVD"],
            MediaKind::RemovableDisk => &["USBStick", "Floppy"],
        };
        devices
            .into_iter()
            .find(|device| {
                json::strings(&device.body, &["MediaTypes"])
                    .iter()
                    .any(|media_type| wanted.contains(&media_type.as_str()))
            })
            .ok_or_else(|| {
                RedfishError::Unsupported(format!(
                    "no virtual media device for {}",
                    wanted.join("/")
                ))
            })
    }

    fn media_devices(&mut self) -> Result<Vec<Resource>, RedfishError> {
        let mut collections = Vec::new();
        let system_media = json::link(&self.system.body, &["VirtualMedia"]);
        let manager_media = self.manager_media_collection()?;
        if self.client.vendor == Vendor::Dell {
            collections.extend(system_media);
            collections.extend(manager_media);
        } else {
            collections.extend(manager_media);
            collections.extend(system_media);
        }

        let mut devices: Vec<Resource> = Vec::new();
        for collection in collections {
            let collection = self.resolve(&collection);
            let Some(listing) = self.client.get_optional(&collection)? else {
                continue;
            };
            for member in json::members(&listing.body) {
                let member = self.client.resolve(&member, &collection);
                if devices.iter().any(|known| known.path == member) {
                    continue;
                }
                if let Some(device) = self.client.get_optional(&member)? {
                    devices.push(device);
                }
            }
        }
        Ok(devices)
    }

    fn manager_media_collection(&mut self) -> Result<Option<String>, RedfishError> {
        let managers = json::at(&self.system.body, &["Links", "ManagedBy"])
            .and_then(Value::as_array)
            .and_then(|links| links.first())
            .and_then(|link| link.get("@odata.id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(manager) = managers else {
            return Ok(None);
        };
        let manager = self.resolve(&manager);
        Ok(self
            .client
            .get_optional(&manager)?
            .and_then(|manager| json::link(&manager.body, &["VirtualMedia"])))
    }
}

/// Whether a device holds media. A stale `Image` with `ConnectedVia:
/// NotConnected` (Supermicro) or the string `"None"` (AMI) counts as empty.
fn is_inserted(device: &Value) -> bool {
    let inserted = device
        .get("Inserted")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let not_connected = json::str_at(device, &["ConnectedVia"]) == Some("NotConnected");
    inserted && !not_connected
}

/// InsertMedia bodies from the fullest to the smallest. Supermicro rejects
/// `Inserted`/`WriteProtected` and wants the transfer fields instead.
fn insert_bodies(image_url: &str, vendor: Vendor) -> Vec<Value> {
    if vendor == Vendor::Supermicro {
        let protocol = if image_url.starts_with("https:") {
            "HTTPS"
        } else {
            "HTTP"
        };
        return vec![
            json!({"Image": image_url, "TransferProtocolType": protocol, "TransferMethod": "Stream"}),
            json!({"Image": image_url}),
        ];
    }
    vec![
        json!({"Image": image_url, "Inserted": true, "WriteProtected": true}),
        json!({"Image": image_url, "Inserted": true}),
        json!({"Image": image_url}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_images_count_as_empty() {
        assert!(is_inserted(&json!({"Inserted": true, "Image": "x"})));
        assert!(!is_inserted(
            &json!({"Inserted": true, "ConnectedVia": "NotConnected"})
        ));
        assert!(!is_inserted(&json!({"Image": "None"})));
    }

    #[test]
    fn supermicro_insert_omits_inserted_flags() {
        let bodies = insert_bodies("https://h/x.iso", Vendor::Supermicro);
        assert!(bodies.iter().all(|body| body.get("Inserted").is_none()));
        assert_eq!(bodies[0]["TransferProtocolType"], "HTTPS");
        assert_eq!(insert_bodies("http://h/x.iso", Vendor::Generic).len(), 3);
    }
}
