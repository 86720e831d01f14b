//! Test harness for the BMC driver plugins.
