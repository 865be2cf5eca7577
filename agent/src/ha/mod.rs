//! HA placeholder
