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
    /// A clone of each connection's stream, to shut it down at close.
    streams: Mutex<Vec<UnixStream>>,
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
        streams: Mutex::new(Vec::new()),
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
    for stream in listener.incoming() {
        if listening.stopped.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Some(bus) = bus.upgrade() else { break };
        let Ok(kept) = stream.try_clone() else { continue };
        let mut streams = lock(&listening.streams);
        streams.retain(|s| s.peer_addr().is_ok());
        streams.push(kept);
        drop(streams);
        let (pool, listening) = (pool.clone(), listening.clone());
        let _ = std::thread::Builder::new()
            .name("logbus-owner-connection".into())
            .spawn(move || {
                if greet(&stream).is_ok() {
                    Connection::serve(bus, stream, &pool, &listening.stopped);
                }
            });
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
    for stream in lock(&listening.streams).drain(..) {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    let _ = std::fs::remove_file(&listening.path);
}
