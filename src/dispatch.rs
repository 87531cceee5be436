//! `dispatch!`: the one `match` behind every method of a public type that
//! runs on either backend (`docs/BACKENDS.md`).
//!
//! Such a type holds a private enum with a `Log(..)` variant (the embedded
//! log) and, with the `nats` feature, a `Nats(..)` variant, and with the
//! `processes` feature a `Remote(..)` variant (a bus another process
//! owns), each holding an implementation of the role's trait in
//! `crate::backend`. `dispatch!(Enum, value, b => call)` matches `value`
//! on every variant, binds the backend to `b` and evaluates the same
//! `call` in each arm; the calls resolve to the trait's methods, so the
//! compiler checks that every backend implements them with the same
//! signatures. Without those features the enum has a single variant: it has no discriminant, the same size and
//! layout as what the variant holds, and the match compiles to the direct
//! call.

macro_rules! dispatch {
    ($backends:ident, $value:expr, $backend:ident => $call:expr) => {
        match $value {
            $backends::Log($backend) => $call,
            #[cfg(feature = "nats")]
            $backends::Nats($backend) => $call,
            #[cfg(feature = "processes")]
            $backends::Remote($backend) => $call,
        }
    };
}
