//! Writing a `bmc-driver` plugin.
//!
//! Implement [`BmcDriver`] and export it with
//! [`export_bmc_driver!`](crate::export_bmc_driver). Every method receives a
//! [`BmcHost`] to reach the BMC through the host's transports.

pub use crate::bindings::bmc_driver::exports::ingot::plugin::driver::{
    AttributeValue, BiosAttribute, BmcFault, DriverCapabilities, DriverContext, DriverError,
};

use crate::host::BmcHost;
use crate::types::{BootDevice, HardwareDetails, PowerAction, PowerState, Progress, VirtualMedia};

/// A BMC driver. See the WIT interface `ingot:plugin/driver` for the
/// contract of each operation (idempotent, progress instead of blocking).
pub trait BmcDriver {
    /// What the driver supports for this address.
    fn capabilities(
        host: &impl BmcHost,
        ctx: &DriverContext,
    ) -> Result<DriverCapabilities, DriverError>;

    /// Current power state.
    fn power_state(host: &impl BmcHost, ctx: &DriverContext) -> Result<PowerState, DriverError>;

    /// Requests a power change.
    fn set_power(
        host: &impl BmcHost,
        ctx: &DriverContext,
        action: PowerAction,
    ) -> Result<Progress, DriverError>;

    /// Sets the boot device.
    fn set_boot_device(
        host: &impl BmcHost,
        ctx: &DriverContext,
        device: BootDevice,
    ) -> Result<Progress, DriverError>;

    /// Inserts virtual media.
    fn insert_media(
        host: &impl BmcHost,
        ctx: &DriverContext,
        media: VirtualMedia,
    ) -> Result<Progress, DriverError>;

    /// Ejects all virtual media.
    fn eject_media(host: &impl BmcHost, ctx: &DriverContext) -> Result<Progress, DriverError>;

    /// Reads the out-of-band inventory.
    fn inventory(host: &impl BmcHost, ctx: &DriverContext) -> Result<HardwareDetails, DriverError>;

    /// Reads the BIOS attributes.
    fn bios_attributes(
        host: &impl BmcHost,
        ctx: &DriverContext,
    ) -> Result<Vec<BiosAttribute>, DriverError>;
}

/// Exports a [`BmcDriver`] implementation as the component's `driver`
/// interface.
#[macro_export]
macro_rules! export_bmc_driver {
    ($driver:ty) => {
        const _: () = {
            use $crate::driver::{
                BiosAttribute, BmcDriver, DriverCapabilities, DriverContext, DriverError,
            };
            use $crate::host::ComponentHost;
            use $crate::types::{
                BootDevice, HardwareDetails, PowerAction, PowerState, Progress, VirtualMedia,
            };

            struct IngotDriverExport;

            impl $crate::bindings::bmc_driver::exports::ingot::plugin::driver::Guest
                for IngotDriverExport
            {
                fn capabilities(ctx: DriverContext) -> Result<DriverCapabilities, DriverError> {
                    <$driver as BmcDriver>::capabilities(&ComponentHost, &ctx)
                }

                fn get_power_state(ctx: DriverContext) -> Result<PowerState, DriverError> {
                    <$driver as BmcDriver>::power_state(&ComponentHost, &ctx)
                }

                fn set_power(
                    ctx: DriverContext,
                    action: PowerAction,
                ) -> Result<Progress, DriverError> {
                    <$driver as BmcDriver>::set_power(&ComponentHost, &ctx, action)
                }

                fn set_boot_device(
                    ctx: DriverContext,
                    device: BootDevice,
                ) -> Result<Progress, DriverError> {
                    <$driver as BmcDriver>::set_boot_device(&ComponentHost, &ctx, device)
                }

                fn insert_media(
                    ctx: DriverContext,
                    media: VirtualMedia,
                ) -> Result<Progress, DriverError> {
                    <$driver as BmcDriver>::insert_media(&ComponentHost, &ctx, media)
                }

                fn eject_media(ctx: DriverContext) -> Result<Progress, DriverError> {
                    <$driver as BmcDriver>::eject_media(&ComponentHost, &ctx)
                }

                fn inventory(ctx: DriverContext) -> Result<HardwareDetails, DriverError> {
                    <$driver as BmcDriver>::inventory(&ComponentHost, &ctx)
                }

                fn bios_attributes(ctx: DriverContext) -> Result<Vec<BiosAttribute>, DriverError> {
                    <$driver as BmcDriver>::bios_attributes(&ComponentHost, &ctx)
                }
            }

            // Native builds (unit tests, clippy) skip the export glue: its symbol
            // names are only valid in a WebAssembly module.
            #[cfg(target_family = "wasm")]
            $crate::bindings::bmc_driver::__export_bmc_driver_world!(IngotDriverExport);
        };
    };
}
