//! The API types the operator works with, gathered in one place.

pub use ingot_api::metal3::{
    AutomatedCleaningMode, BareMetalHost, BareMetalHostSpec, BareMetalHostStatus, BmcDetails,
    BootMode, CredentialsStatus, CustomDeploy, DiskFormat, ErrorType, HardwareData,
    HardwareDetails, Image, InspectionMode, OperationHistory, OperationMetric, OperationalStatus,
    ProvisionStatus, ProvisioningState, RaidConfig, RootDeviceHints,
};
