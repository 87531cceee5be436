//! Optional `tracing` events (feature `tracing`): recovery truncation, lease
//! expiry, dead-lettering and redrive. Without the feature the macro
//! expands to nothing, so the core has no logging dependency.

/// Emits a `tracing` event at `$level` when the `tracing` feature is on.
macro_rules! trace_event {
    ($level:ident, $($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        tracing::$level!($($arg)*);
    };
}
