//! The owner's side of several processes on one bus directory
//! (docs/PROCESSES.md): the process that holds the directory's lock
//! serves the bus to the processes that join it, over a Unix socket in
//! the directory ([`crate::wire`] is the protocol).
//!
//! Invariants: only the lock holder binds the socket, so a socket file
//! left by a killed owner is replaced, never two served; the listener
//! holds the bus weakly (it alone does not keep the bus open), each
//! connection strongly (a bus other processes use stays open until they
//! hang up); when the bus closes, the listener stops and every
//! connection is shut down before the lock is released, so joined
//! processes see the owner go and one of them takes over.

mod connection;
mod pool;

use std::collections::HashMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use connection::Connection;
use pool::Pool;

use crate::embedded::{LogBus, WeakLogBus};
use crate::error::Result;
use crate::wire::{check_hello, hello, read_message, socket, write_message};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the listener and the close hook share.
#[derive(Debug)]
struct Listening {
    path: PathBuf,
    stopped: AtomicBool,
    /// A clone of each live connection's stream, by number, to shut it
    /// down at close (a connection takes its own out when it ends).
    streams: Mutex<HashMap<u64, UnixStream>>,
}

/// Starts serving `bus` (open, with its lock held) at `path`: binds the
/// socket and starts the listener thread, which ends when the bus closes.
pub(crate) fn serve(bus: &LogBus, path: PathBuf) -> Result<()> {
    let listener = socket::bind(&path).map_err(|e| {
        let context = format!("serve the bus to other processes at {}: {e}", path.display());
        std::io::Error::new(e.kind(), context)
    })?;
    let listening = Arc::new(Listening {
        path,
        stopped: AtomicBool::new(false),
        streams: Mutex::new(HashMap::new()),
    });
    let stopping = listening.clone();
    bus.on_close(Box::new(move || stop(&stopping)));
    let weak = bus.downgrade();
    std::thread::Builder::new()
        .name("logbus-owner-listener".into())
        .spawn(move || accept_all(&listener, &weak, &listening))?;
    Ok(())
}

/// Marks `bus` (open, with its lock held) as served to no one until it
/// closes: processes that open its directory fail with
/// [`crate::Error::Locked`] at once instead of waiting for a socket.
pub(crate) fn refuse(bus: &LogBus, path: PathBuf) -> Result<()> {
    socket::refuse(&path)?;
    bus.on_close(Box::new(move || {
        let _ = std::fs::remove_file(&path);
    }));
    Ok(())
}

fn accept_all(listener: &UnixListener, bus: &WeakLogBus, listening: &Arc<Listening>) {
    let pool = Pool::default();
    for (number, stream) in (0u64..).zip(listener.incoming()) {
        if listening.stopped.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Some(bus) = bus.upgrade() else { break };
        let Ok(kept) = stream.try_clone() else { continue };
        lock(&listening.streams).insert(number, kept);
        let (pool, theirs) = (pool.clone(), listening.clone());
        let started = std::thread::Builder::new()
            .name("logbus-owner-connection".into())
            .spawn(move || {
                if greet(&stream).is_ok() {
                    Connection::serve(bus, stream, &pool, &theirs.stopped);
                }
                lock(&theirs.streams).remove(&number);
            });
        if started.is_err() {
            lock(&listening.streams).remove(&number);
        }
    }
    pool.close();
}

/// Exchanges hellos: the joined process speaks first.
fn greet(stream: &UnixStream) -> Result<()> {
    let (_, _, theirs) = read_message(&mut &*stream)?;
    let checked = check_hello(theirs);
    write_message(&mut &*stream, 0, 0, &hello())?;
    checked.map(drop)
}

/// The bus is closing: stop accepting, hang up on every joined process,
/// and remove the socket (the lock is still held).
fn stop(listening: &Listening) {
    listening.stopped.store(true, Ordering::Release);
    // Wakes the listener's `accept`, which then sees `stopped`.
    let _ = socket::connect(&listening.path);
    for (_, stream) in lock(&listening.streams).drain() {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    let _ = std::fs::remove_file(&listening.path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::BusOptions;

    #[test]
    fn a_connection_that_ended_leaves_no_stream_behind() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LogBus::open(dir.path(), BusOptions::default().exclusive(true)).unwrap();
        let path = dir.path().join("test.socket");
        let listener = socket::bind(&path).unwrap();
        let listening = Arc::new(Listening {
            path: path.clone(),
            stopped: AtomicBool::new(false),
            streams: Mutex::new(HashMap::new()),
        });
        let (weak, theirs) = (bus.downgrade(), listening.clone());
        let accepting = std::thread::spawn(move || accept_all(&listener, &weak, &theirs));
        for _ in 0..20 {
            let stream = socket::connect(&path).unwrap();
            write_message(&mut &stream, 0, 0, &hello()).unwrap();
            check_hello(read_message(&mut &stream).unwrap().2).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !lock(&listening.streams).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "streams of ended connections are kept"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        stop(&listening);
        accepting.join().unwrap();
    }
}
