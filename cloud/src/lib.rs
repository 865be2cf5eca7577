//! Floating-address providers.
