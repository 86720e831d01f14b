//! The deploy media being served: at most one per host, found by its key (the SHA-256 of its
//! id) or by a MAC address of its host in one lookup each, so that serving a machine does not
//! cost more with every host in the fleet.

use std::collections::HashMap;

use ingot_agent::bootconfig::BootConfig;

/// Deploy media published for one host.
struct Published {
    /// The SHA-256 of the media id.
    key: String,
    /// The host's boot MAC addresses, lower-case: network boot hands the media to these.
    macs: Vec<String>,
    /// The boot configuration it carries.
    config: BootConfig,
}

/// The media of every host that has some, with indexes by key and by MAC.
#[derive(Default)]
pub(crate) struct ServedMedia {
    by_host: HashMap<String, Published>,
    host_of_key: HashMap<String, String>,
    host_of_mac: HashMap<String, String>,
}

impl ServedMedia {
    /// Serves `config` as the host's media under `key`, in place of its earlier media.
    pub(crate) fn publish(&mut self, host: &str, key: &str, macs: &[String], config: BootConfig) {
        self.forget(host);
        let macs: Vec<String> = macs.iter().map(|mac| mac.to_lowercase()).collect();
        for mac in &macs {
            self.host_of_mac.insert(mac.clone(), host.to_owned());
        }
        self.host_of_key.insert(key.to_owned(), host.to_owned());
        let published = Published {
            key: key.to_owned(),
            macs,
            config,
        };
        self.by_host.insert(host.to_owned(), published);
    }

    /// Stops serving the host's media.
    pub(crate) fn forget(&mut self, host: &str) {
        let Some(published) = self.by_host.remove(host) else {
            return;
        };
        self.host_of_key.remove(&published.key);
        for mac in &published.macs {
            if self.host_of_mac.get(mac).map(String::as_str) == Some(host) {
                self.host_of_mac.remove(mac);
            }
        }
    }

    /// The boot configuration of the media under `key`.
    pub(crate) fn by_key(&self, key: &str) -> Option<&BootConfig> {
        let host = self.host_of_key.get(key)?;
        self.by_host.get(host).map(|published| &published.config)
    }

    /// The boot configuration of the media for the NIC with `mac` (lower-case).
    pub(crate) fn by_mac(&self, mac: &str) -> Option<&BootConfig> {
        let host = self.host_of_mac.get(mac)?;
        self.by_host.get(host).map(|published| &published.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(token: &str) -> BootConfig {
        BootConfig {
            api_url: "https://127.0.0.1:1".into(),
            ca_pem: String::new(),
            host: "h".into(),
            token: token.into(),
        }
    }

    #[test]
    fn new_media_replaces_the_hosts_earlier_media_under_every_index() {
        let mut served = ServedMedia::default();
        served.publish("a", "k1", &["AA:00:00:00:00:01".into()], config("t1"));
        served.publish("a", "k2", &["aa:00:00:00:00:02".into()], config("t2"));

        assert!(served.by_key("k1").is_none());
        assert!(served.by_mac("aa:00:00:00:00:01").is_none());
        assert_eq!(served.by_key("k2").map(|c| c.token.as_str()), Some("t2"));
        assert_eq!(
            served.by_mac("aa:00:00:00:00:02").map(|c| c.token.as_str()),
            Some("t2")
        );
    }

    #[test]
    fn forgetting_a_host_leaves_a_mac_another_host_took_since() {
        let mut served = ServedMedia::default();
        served.publish("a", "ka", &["aa:00:00:00:00:01".into()], config("ta"));
        served.publish("b", "kb", &["aa:00:00:00:00:01".into()], config("tb"));

        served.forget("a");

        assert!(served.by_key("ka").is_none());
        assert_eq!(
            served.by_mac("aa:00:00:00:00:01").map(|c| c.token.as_str()),
            Some("tb")
        );
    }
}
