//! What the backend-parameterized suites share: [`TestBackend`], a bus
//! that a test can open (and reopen, to check what survives a restart),
//! and `backend_tests!`, which runs each test body once per backend.
//!
//! ```ignore
//! backend_tests! {
//!     fn a_sentence_saying_what_holds(backend: &TestBackend) { ... }
//! }
//! // expands to the function itself, plus
//! mod embedded { #[test] fn a_sentence_saying_what_holds() { ... } }
//! #[cfg(feature = "nats")]
//! mod nats { #[test] fn a_sentence_saying_what_holds() { ... } }
//! ```
//!
//! A NATS test starts its own `nats-server` (JetStream, free loopback
//! port, temporary store), killed when the test ends. Without the binary
//! it skips with a loud line, except under CI, where that is a failure
//! (`nats_server::have_nats_server`). Where the backends' semantics
//! differ, a test asserts what both guarantee and states the difference
//! in a `match` on the backend, never by skipping.

// Compiled into every test binary; only the backend-parameterized suites use it.
#![allow(dead_code)]

#[cfg(feature = "nats")]
use super::nats_server;

use logbus::{Bus, BusOptions};

/// Where a test's bus lives.
pub enum TestBackend {
    /// The embedded log, in a temporary bus directory.
    Embedded { dir: tempfile::TempDir },
    /// A NATS server of this test alone (declared first: killed before its
    /// store is deleted).
    #[cfg(feature = "nats")]
    Nats {
        server: nats_server::Server,
        _store: tempfile::TempDir,
    },
}

impl TestBackend {
    /// A fresh embedded bus directory.
    pub fn embedded() -> TestBackend {
        TestBackend::Embedded {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A fresh NATS server, or `None` (after a loud note) without one.
    #[cfg(feature = "nats")]
    pub fn nats() -> Option<TestBackend> {
        if !nats_server::have_nats_server() {
            return None;
        }
        let store = tempfile::tempdir().expect("tempdir");
        let server = nats_server::Server::start("logbus-test", store.path(), None);
        Some(TestBackend::Nats {
            server,
            _store: store,
        })
    }

    /// The URL of this test's NATS server; `None` on the embedded backend.
    #[cfg(feature = "nats")]
    pub fn nats_url(&self) -> Option<String> {
        match self {
            TestBackend::Nats { server, .. } => Some(server.url()),
            TestBackend::Embedded { .. } => None,
        }
    }

    /// Opens a bus on this backend: the same directory or server each time.
    pub fn open(&self) -> Bus {
        match self {
            TestBackend::Embedded { dir } => Bus::open(dir.path(), BusOptions::default()),
            #[cfg(feature = "nats")]
            TestBackend::Nats { server, .. } => {
                Bus::connect_nats(&server.url(), logbus::nats::NatsOptions::default())
            }
        }
        .expect("open the bus")
    }
}

/// Defines each test body once and a `#[test]` per backend that runs it.
#[allow(unused_macros)]
macro_rules! backend_tests {
    ($($(#[$attr:meta])* fn $name:ident($backend:ident: &TestBackend) $body:block)*) => {
        $($(#[$attr])* fn $name($backend: &$crate::common::TestBackend) $body)*

        mod embedded {
            $(#[test]
            fn $name() {
                super::$name(&$crate::common::TestBackend::embedded());
            })*
        }

        #[cfg(feature = "nats")]
        mod nats {
            $(#[test]
            fn $name() {
                if let Some(backend) = $crate::common::TestBackend::nats() {
                    super::$name(&backend);
                }
            })*
        }
    };
}
