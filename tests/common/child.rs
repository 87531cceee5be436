//! The test binary re-executed as a child process: the parent starts it in
//! a mode on a directory, reads the lines it reports on stdout, and waits
//! for it or kills it; the child finds its mode and directory in the
//! environment and reports each step after the call it names returned.
//!
//! The child enters through a test (its "entry point") that returns at once
//! in a normal run, and is started as
//! `<test binary> --exact <entry point> --nocapture --test-threads=1`.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::fmt::Debug;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use logbus::Bus;

/// Selects the child's mode; absent in a normal test run.
pub const MODE_ENV: &str = "LOGBUS_CRASH_CHILD";
/// The directory the child works in.
pub const DIR_ENV: &str = "LOGBUS_CRASH_DIR";
/// Overrides the seed of the kill -9 tests.
pub const SEED_ENV: &str = "LOGBUS_CRASH_SEED";
/// Prefix of every line the child reports; other stdout lines are the harness's.
const MARK: &str = "@logbus-child";
/// Longest a child may run before the parent declares it hung.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(60);
pub const SIGKILL: i32 = 9;
pub const SIGABRT: i32 = 6;

// ------------------------------------------------------------------ child

/// The mode and directory this process was started with as a child;
/// `None` in a normal test run.
pub fn role() -> Option<(String, PathBuf)> {
    let mode = std::env::var(MODE_ENV).ok()?;
    let dir = std::env::var_os(DIR_ENV).expect("child needs a directory");
    Some((mode, PathBuf::from(dir)))
}

/// Writes one report line and flushes it before the caller goes on: a line
/// the parent reads was written after the reported call returned.
pub fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK} {line}").expect("write to the parent");
    out.flush().expect("flush to the parent");
}

/// What `opened` holds; if the open failed, reports `open-failed` and exits
/// with status 2.
pub fn open_or_exit<T>(opened: logbus::Result<T>) -> T {
    opened.unwrap_or_else(|e| {
        report(&format!("open-failed {e}"));
        std::process::exit(2);
    })
}

// ----------------------------------------------------------------- parent

/// Held while this process spawns a child, while it has a log open that a
/// child opens next, and while it closes a bus that it or a child opens
/// next. Tests run on several threads: a child forked while a log or bus is
/// open shares its locked lock file until it execs, and whoever opened that
/// log or bus next would find it `Locked`.
pub fn fork_guard() -> MutexGuard<'static, ()> {
    static FORK: Mutex<()> = Mutex::new(());
    FORK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Closes a bus this process or a child opens again: once no child is
/// between fork and exec, none can hold a copy of its lock past the close.
pub fn close(bus: &Bus) {
    let _no_spawn = fork_guard();
    bus.close().expect("close");
}

/// The seed of a randomized test: [`SEED_ENV`] if set, else `default`.
pub fn seed(default: u64) -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(text) => text.parse().expect("LOGBUS_CRASH_SEED must be a number"),
        Err(_) => default,
    }
}

/// The test binary, to run only the test `entry_point` in `mode` on `dir`;
/// started through `wrapper` (a program and its options, such as strace's)
/// unless that is empty.
pub fn command(wrapper: &[String], entry_point: &str, mode: &str, dir: &Path) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = match wrapper.split_first() {
        Some((program, options)) => {
            let mut c = Command::new(program);
            c.args(options).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    command
        .args(["--exact", entry_point, "--nocapture", "--test-threads=1"])
        .env(MODE_ENV, mode)
        .env(DIR_ENV, dir)
        .env_remove("RUST_BACKTRACE");
    command
}

/// Starts the test binary in `mode` on `dir` (see [`command`]); its events
/// are its report lines, split into words.
pub fn spawn_words(entry_point: &str, mode: &str, dir: &Path) -> Running<Vec<String>> {
    Running::spawn(command(&[], entry_point, mode, dir), |line| Some(words(line)))
}

/// The words of a report line, as tests whose children report plain words
/// parse and compare them.
pub fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

/// A running child with its report lines parsed on a reader thread.
pub struct Running<E> {
    child: Child,
    events: Receiver<E>,
    stdout: JoinHandle<()>,
    /// Taken when a failed [`Running::read`] collects it.
    stderr: Option<JoinHandle<String>>,
    seen: Vec<E>,
}

/// Why [`Running::wait_for`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Enough,
    TimedOut,
    /// The child closed stdout: it exited (or is about to).
    Closed,
}

/// A finished child.
pub struct Finished<E> {
    pub events: Vec<E>,
    pub status: ExitStatus,
    pub stderr: String,
}

impl<E: Debug> Finished<E> {
    /// The child's status, its last events and the tail of its stderr, for
    /// failure messages.
    pub fn describe(&self) -> String {
        let tail: Vec<&str> = self.stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let last = &self.events[self.events.len().saturating_sub(64)..];
        format!(
            "child status {:?} (killed by signal {:?}), {} events, the last {} {last:?}\n\
             child stderr (tail):\n{}",
            self.status,
            self.status.signal(),
            self.events.len(),
            last.len(),
            tail.join("\n")
        )
    }

    pub fn expect_success(self) -> Vec<E> {
        assert!(self.status.success(), "child failed: {}", self.describe());
        self.events
    }

    pub fn expect_signal(self, signal: i32) -> Vec<E> {
        assert_eq!(self.status.signal(), Some(signal), "{}", self.describe());
        self.events
    }
}

impl<E: Debug + Send + 'static> Running<E> {
    /// Starts `command` with its stdout and stderr piped (under the fork
    /// guard); each stdout line the child reported becomes an event through
    /// `parse`, which gets the line after the report mark.
    pub fn spawn(mut command: Command, parse: fn(&str) -> Option<E>) -> Running<E> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = {
            let _no_open = fork_guard();
            command.spawn().expect("spawn the child")
        };
        let out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let (send, events) = mpsc::channel();
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let Some(at) = line.find(MARK) else { continue };
                if let Some(event) = parse(&line[at + MARK.len()..])
                    && send.send(event).is_err()
                {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Running {
            child,
            events,
            stdout,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// Waits until `enough` holds for the events so far, the child closes
    /// stdout, or `until` passes.
    pub fn wait_for(&mut self, until: Instant, enough: impl Fn(&[E]) -> bool) -> Waited {
        loop {
            if enough(&self.seen) {
                return Waited::Enough;
            }
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => self.seen.push(event),
                Err(RecvTimeoutError::Timeout) => return Waited::TimedOut,
                Err(RecvTimeoutError::Disconnected) => return Waited::Closed,
            }
        }
    }

    /// Waits for `count` events in all; panics if the child exits or hangs
    /// first.
    pub fn read(&mut self, count: usize) -> &[E] {
        let until = Instant::now() + CHILD_DEADLINE;
        if self.wait_for(until, |seen| seen.len() >= count) != Waited::Enough {
            let _ = self.child.kill();
            let status = self.child.wait();
            let stderr = self.stderr.take().map(|t| t.join().expect("stderr reader"));
            panic!(
                "child stopped reporting ({status:?}); stderr:\n{}",
                stderr.unwrap_or_default()
            );
        }
        &self.seen
    }

    pub fn kill(mut self) -> Finished<E> {
        self.child.kill().expect("kill the child");
        self.finish()
    }

    /// Waits for the child to exit (killing it past [`CHILD_DEADLINE`]).
    pub fn wait(mut self) -> Finished<E> {
        if self.wait_for(Instant::now() + CHILD_DEADLINE, |_| false) == Waited::TimedOut {
            let _ = self.child.kill();
            let finished = self.finish();
            panic!("child hung for {CHILD_DEADLINE:?}: {}", finished.describe());
        }
        self.finish()
    }

    fn finish(mut self) -> Finished<E> {
        let status = self.child.wait().expect("reap the child");
        self.stdout.join().expect("stdout reader");
        self.seen.extend(self.events.try_iter());
        Finished {
            events: self.seen,
            status,
            stderr: self
                .stderr
                .take()
                .map(|t| t.join().expect("stderr reader"))
                .unwrap_or_default(),
        }
    }
}
