//! The proptest configuration of the property tests: a fixed number of
//! cases and a fixed seed unless the environment says otherwise, and the
//! failures kept in `proptest-regressions/`.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, RngSeed};

/// Cases: `default_cases`, or `PROPTEST_CASES / divisor` when that is set.
/// Seed: `seed`, unless `PROPTEST_RNG_SEED` is set. Failures are kept in
/// `regressions`.
pub fn config(default_cases: u32, divisor: u32, seed: u64, regressions: &'static str) -> ProptestConfig {
    // `default()` has read the PROPTEST_* variables already.
    let defaults = ProptestConfig::default();
    let cases = match std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        Some(cases) => (cases / divisor).max(1),
        None => default_cases,
    };
    let rng_seed = match std::env::var_os("PROPTEST_RNG_SEED") {
        Some(_) => defaults.rng_seed,
        None => RngSeed::Fixed(seed),
    };
    ProptestConfig {
        cases,
        rng_seed,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..defaults
    }
}
