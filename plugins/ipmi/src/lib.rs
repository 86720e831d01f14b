//! IPMI 2.0 RMCP+ BMC driver for ingot.
