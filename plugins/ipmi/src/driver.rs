//! Driver operations: each opens a session, works, and closes it.

use crate::chassis::{BootFlags, ChassisControl, DeviceId};
use crate::error::IpmiError;
use crate::session::{RandomSource, Retransmit, Session};
use crate::transport::{Datagram, Secrets};

/// A power change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerGoal {
    /// Power on.
    On,
    /// ACPI soft shutdown.
    OffSoft,
    /// Hard power off.
    OffHard,
    /// Hard reset (power on when off).
    ResetHard,
}

/// Whether a change holds yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The requested state holds.
    Done,
    /// The BMC accepted the request; the state has not changed yet.
    Waiting(&'static str),
}

/// The IPMI driver for one BMC.
pub struct Driver<'a> {
    datagram: &'a mut dyn Datagram,
    secrets: &'a mut dyn Secrets,
    random: RandomSource<'a>,
    retransmit: Retransmit,
}

impl<'a> Driver<'a> {
    /// A driver over the host's transports.
    pub fn new(
        datagram: &'a mut dyn Datagram,
        secrets: &'a mut dyn Secrets,
        random: RandomSource<'a>,
        retransmit: Retransmit,
    ) -> Self {
        Self {
            datagram,
            secrets,
            random,
            retransmit,
        }
    }

    /// Runs one operation in a fresh session and closes the session.
    ///
    /// # Errors
    /// A failed session set-up or the operation's error.
    pub fn run<T>(
        &mut self,
        operation: impl FnOnce(&mut Session<'_>) -> Result<T, IpmiError>,
    ) -> Result<T, IpmiError> {
        let mut session = Session::open(
            &mut *self.datagram,
            &mut *self.secrets,
            self.retransmit,
            &mut *self.random,
        )?;
        let result = operation(&mut session);
        session.close();
        result
    }

    /// Whether the chassis is powered on.
    ///
    /// # Errors
    /// A failed session or command.
    pub fn power_is_on(&mut self) -> Result<bool, IpmiError> {
        self.run(|session| session.power_is_on())
    }

    /// Requests a power change; repeating it is harmless.
    ///
    /// # Errors
    /// A failed session or command.
    pub fn set_power(&mut self, goal: PowerGoal) -> Result<Outcome, IpmiError> {
        self.run(|session| {
            let on = session.power_is_on()?;
            let (directive, wanted_on) = match (goal, on) {
                (PowerGoal::On, true) | (PowerGoal::OffSoft | PowerGoal::OffHard, false) => {
                    return Ok(Outcome::Done);
                }
                (PowerGoal::On | PowerGoal::ResetHard, false) => (ChassisControl::PowerUp, true),
                (PowerGoal::OffHard, true) => (ChassisControl::PowerDown, false),
                (PowerGoal::OffSoft, true) => (ChassisControl::SoftShutdown, false),
                (PowerGoal::ResetHard, true) => {
                    session.chassis_control(ChassisControl::HardReset)?;
                    return Ok(Outcome::Done);
                }
            };
            session.chassis_control(directive)?;
            if session.power_is_on()? == wanted_on {
                Ok(Outcome::Done)
            } else {
                Ok(Outcome::Waiting(if wanted_on {
                    "powering on"
                } else {
                    "powering off"
                }))
            }
        })
    }

    /// Sets and verifies the boot flags.
    ///
    /// # Errors
    /// A failed session or command, or flags the BMC did not keep.
    pub fn set_boot_flags(&mut self, flags: BootFlags) -> Result<(), IpmiError> {
        self.run(|session| session.set_boot_flags(flags))
    }

    /// Reads the BMC's device ID.
    ///
    /// # Errors
    /// A failed session or command.
    pub fn device_id(&mut self) -> Result<DeviceId, IpmiError> {
        self.run(|session| session.device_id())
    }
}
