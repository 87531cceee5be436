//! The bus socket's address. A Unix socket's path must fit in 107 bytes;
//! a longer one (a deep bus directory) is reached through the directory's
//! descriptor in `/proc/self/fd` (Linux), which is short.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest path `sockaddr_un` holds, its NUL aside.
const MAX_SOCKET_PATH: usize = 107;

/// Binds the socket at `path`, replacing a file left there by a process
/// that was killed (the caller holds the bus's lock, so none serves).
pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    through_short_path(path, |short| UnixListener::bind(short))
}

/// Puts a plain file where the socket would be: the lock holder serves
/// no one (an exclusive bus), and a process that finds it knows at once
/// that waiting for a socket is vain.
pub(crate) fn refuse(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::File::create(path).map(drop)
}

/// Whether the lock holder serves no one (see [`refuse`]).
pub(crate) fn refused(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// Connects to the socket at `path`.
pub(crate) fn connect(path: &Path) -> io::Result<UnixStream> {
    through_short_path(path, |short| UnixStream::connect(short))
}

fn through_short_path<T>(path: &Path, op: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return op(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return op(path);
    };
    let dir = File::open(dir)?;
    let mut short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    short.push(name);
    op(&short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_deeper_than_a_socket_path_holds_is_reached() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join(".socket");
        assert!(path.as_os_str().len() > MAX_SOCKET_PATH);
        let listener = bind(&path).unwrap();
        assert!(path.exists(), "the socket is in the directory itself");
        let _client = connect(&path).unwrap();
        listener.accept().unwrap();
        drop(listener);
        bind(&path).expect("a socket file left behind is replaced");
    }
}
