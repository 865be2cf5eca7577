//! gARP provider.
