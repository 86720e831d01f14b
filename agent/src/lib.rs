//! The ingot deploy agent.
//!
//! The agent runs on a machine being provisioned. It reaches the operator's agent API, proves
//! who it is with its MAC addresses and a per-host token, and carries out the commands it is
//! given: hardware inventory, metadata erase, image write (raw or qcow2, checksummed, with a
//! config drive) and sync. The same code runs on real machines, reading `/sys` and `/proc`,
//! and inside the virtual lab, against simulated disks.

pub mod bootconfig;
pub mod checksum;
pub mod client;
pub mod configdrive;
pub mod disk;
pub mod erase;
pub mod fat;
pub mod hardware;
pub mod hints;
pub mod image;
pub mod inventory;
pub mod partition;
pub mod protocol;
pub mod qcow2;
