//! Shared harness for floatlb's integration tests.
