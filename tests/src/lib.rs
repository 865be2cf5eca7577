//! Shared harness for floatlb's integration tests.

pub mod cloudbin;
pub mod ec2world;
pub mod faultproxy;
pub mod http;
pub mod imds;
pub mod moto;
