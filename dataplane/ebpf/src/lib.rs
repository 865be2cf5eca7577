#![no_std]
// Library target so that the loader can declare a build-dependency on this crate.
