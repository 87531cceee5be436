//! A joined process's connection to the owner, and taking over when the
//! owner goes.
//!
//! Calls: each request gets a call number and a [`Slot`]; the link's
//! reader thread fills the slot when the answer comes, and the caller
//! waits on it, blocking or in a future. Several calls share one
//! connection at once.
//!
//! Losing the owner: when the connection ends (the owner closed the bus,
//! exited or was killed), every call waiting fails with
//! [`Error::Unavailable`] unless it is safe to ask again
//! ([`Request`]s that change nothing), and the next call links again:
//! it connects to the socket or, if none answers, takes the directory's
//! lock itself through the [`Takeover`] the `Bus` gave, opens the bus
//! (recovering it as after a crash) and serves it, then connects to its
//! own socket. Handles record the link they were opened on and open
//! again on a new one ([`Client::bound`]); deliveries do not (their
//! lease ended with the owner).

use std::any::Any;
use std::collections::HashMap;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use event_listener::{Event, Listener};

use crate::error::{Error, Result};
use crate::wire::{
    ANSWER, Enc, Handle, OWNER, REQUEST, Request, Response, check_hello, decode_answer, hello, read_message,
    socket, write_message,
};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens the bus directory as its owner and serves it, or fails with
/// [`Error::Locked`] while another process owns it. What it returns keeps
/// the bus open.
pub(crate) type Takeover = Arc<dyn Fn() -> Result<Box<dyn Any + Send + Sync>> + Send + Sync>;

/// How long a call waits for an owner (one to answer on the socket, or
/// the lock to take) before it fails.
const OWNER_WAIT: Duration = Duration::from_secs(30);

/// The error of a call whose owner went away before it answered.
pub(crate) fn owner_lost() -> Error {
    Error::Unavailable {
        backend: OWNER,
        message: "the process serving the bus went away during the call; whether it took effect is unknown"
            .into(),
    }
}

/// Where an answer lands.
#[derive(Default)]
struct Slot {
    answer: Mutex<Option<Result<Response>>>,
    filled: Event,
}

impl Slot {
    fn fill(&self, answer: Result<Response>) {
        *lock(&self.answer) = Some(answer);
        self.filled.notify(usize::MAX);
    }

    fn take(&self) -> Option<Result<Response>> {
        lock(&self.answer).take()
    }
}

/// One connection to the owner.
pub(crate) struct Link {
    /// Numbers links in order: a handle opened on one is unknown on the next.
    pub(crate) generation: u64,
    writer: Mutex<UnixStream>,
    /// Calls waiting for their answer; `None` once the link broke.
    pending: Mutex<Option<HashMap<u64, Arc<Slot>>>>,
    next_call: AtomicU64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("generation", &self.generation)
            .finish()
    }
}

impl Link {
    fn open(path: &std::path::Path, generation: u64) -> Result<Arc<Link>> {
        let stream = socket::connect(path)?;
        write_message(&mut &stream, 0, 0, &hello())?;
        let (_, _, theirs) = read_message(&mut &stream)?;
        check_hello(theirs)?;
        let reading = stream.try_clone()?;
        let link = Arc::new(Link {
            generation,
            writer: Mutex::new(stream),
            pending: Mutex::new(Some(HashMap::new())),
            next_call: AtomicU64::new(1),
        });
        let theirs = link.clone();
        std::thread::Builder::new()
            .name("logbus-joined".into())
            .spawn(move || theirs.read_answers(reading))?;
        Ok(link)
    }

    fn read_answers(&self, stream: UnixStream) {
        let mut reader = BufReader::new(stream);
        while let Ok((call, ANSWER, body)) = read_message(&mut reader) {
            let Ok(answer) = decode_answer(body) else { break };
            let slot = lock(&self.pending).as_mut().and_then(|p| p.remove(&call));
            match slot {
                Some(slot) => slot.fill(answer),
                // Its caller gave up (a dropped future): what the answer
                // opened is released.
                None => self.release_unclaimed(answer),
            }
        }
        self.break_off();
    }

    fn release_unclaimed(&self, answer: Result<Response>) {
        let handles: Vec<Handle> = match answer {
            Ok(Response::Deliveries(handed)) => handed.iter().map(|h| h.handle).collect(),
            Ok(Response::Topic { handle, .. })
            | Ok(Response::Requester { handle, .. })
            | Ok(Response::Subscription { handle, .. })
            | Ok(Response::Group { handle, .. }) => vec![handle],
            _ => Vec::new(),
        };
        for handle in handles {
            self.tell(&Request::Release { handle });
        }
    }

    /// The link is gone: fails every waiting call and any later one.
    fn break_off(&self) {
        let _ = lock(&self.writer).shutdown(std::net::Shutdown::Both);
        if let Some(pending) = lock(&self.pending).take() {
            for slot in pending.into_values() {
                slot.fill(Err(owner_lost()));
            }
        }
    }

    fn is_broken(&self) -> bool {
        lock(&self.pending).is_none()
    }

    /// Sends `request`; the slot its answer lands in.
    fn send(&self, request: &Request) -> Result<(u64, Arc<Slot>)> {
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        match lock(&self.pending).as_mut() {
            Some(pending) => pending.insert(call, slot.clone()),
            None => return Err(owner_lost()),
        };
        let mut enc = Enc::default();
        request.encode(&mut enc);
        let written = write_message(&mut *lock(&self.writer), call, REQUEST, &enc.buf);
        if written.is_err() {
            self.break_off();
        }
        Ok((call, slot))
    }

    /// Sends a request that has no answer (best effort: a lost link
    /// released everything anyway).
    pub(crate) fn tell(&self, request: &Request) {
        let mut enc = Enc::default();
        request.encode(&mut enc);
        let _ = write_message(&mut *lock(&self.writer), 0, REQUEST, &enc.buf);
    }

    /// Asks and blocks until the answer.
    pub(crate) fn ask(&self, request: &Request) -> Result<Response> {
        let (_, slot) = self.send(request)?;
        loop {
            let listener = slot.filled.listen();
            if let Some(answer) = slot.take() {
                return answer;
            }
            listener.wait();
        }
    }

    /// Asks and waits for the answer in a future; dropped early, it calls
    /// the wait off on the owner (the answer, if one still comes, is
    /// released by the reader).
    pub(crate) async fn ask_async(&self, request: &Request) -> Result<Response> {
        let (call, slot) = self.send(request)?;
        let mut asked = CallOff {
            link: self,
            call,
            done: false,
        };
        loop {
            let listener = slot.filled.listen();
            if let Some(answer) = slot.take() {
                asked.done = true;
                return answer;
            }
            listener.await;
        }
    }
}

/// Calls off a call whose future was dropped before its answer.
struct CallOff<'a> {
    link: &'a Link,
    call: u64,
    done: bool,
}

impl Drop for CallOff<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Some(pending) = lock(&self.link.pending).as_mut() {
                pending.remove(&self.call);
            }
            self.link.tell(&Request::Cancel { call: self.call });
        }
    }
}

/// A joined process's way to the owner. One per bus handle.
pub(crate) struct Client {
    socket: PathBuf,
    takeover: Takeover,
    link: Mutex<Option<Arc<Link>>>,
    generations: AtomicU64,
    /// The bus this process opened when it took over, kept open while
    /// this client lives.
    owned: Mutex<Option<Box<dyn Any + Send + Sync>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Joins the bus served at `socket`, taking over if no owner answers.
    pub(crate) fn join(socket: PathBuf, takeover: Takeover) -> Result<Arc<Client>> {
        let client = Self::new(socket, takeover);
        client.link()?;
        Ok(client)
    }

    /// Joins the bus if an owner serves it at `socket` now; `None` if none
    /// answers (nothing is taken over).
    pub(crate) fn join_served(socket: PathBuf, takeover: Takeover) -> Result<Option<Arc<Client>>> {
        let client = Self::new(socket, takeover);
        match Link::open(&client.socket, 1) {
            Ok(link) => {
                client.generations.store(1, Ordering::Relaxed);
                *lock(&client.link) = Some(link);
                Ok(Some(client))
            }
            Err(refused @ Error::Unavailable { .. }) => Err(refused),
            Err(_) => Ok(None),
        }
    }

    fn new(socket: PathBuf, takeover: Takeover) -> Arc<Client> {
        Arc::new(Client {
            socket,
            takeover,
            link: Mutex::new(None),
            generations: AtomicU64::new(0),
            owned: Mutex::new(None),
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        match self.closed.load(Ordering::Acquire) {
            true => Err(Error::Closed),
            false => Ok(()),
        }
    }

    /// The live link, linking again (connecting, or taking over) if the
    /// last one broke.
    pub(crate) fn link(&self) -> Result<Arc<Link>> {
        self.check_open()?;
        let mut current = lock(&self.link);
        if let Some(link) = current.as_ref().filter(|l| !l.is_broken()) {
            return Ok(link.clone());
        }
        let deadline = Instant::now() + OWNER_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
            match Link::open(&self.socket, generation) {
                Ok(link) => {
                    *current = Some(link.clone());
                    return Ok(link);
                }
                Err(Error::Unavailable { backend, message }) => {
                    return Err(Error::Unavailable { backend, message });
                }
                Err(_) => {}
            }
            match (self.takeover)() {
                Ok(owned) => {
                    *lock(&self.owned) = Some(owned);
                    continue;
                }
                Err(Error::Locked(path)) if socket::refused(&self.socket) => return Err(Error::Locked(path)),
                Err(Error::Locked(_)) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    backend: OWNER,
                    message: format!(
                        "another process holds the bus directory's lock but serves nothing at {}",
                        self.socket.display()
                    ),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Asks, on the live link, what `build` makes for it (handles bound to
    /// it); asks again on a new link if the owner went away and the
    /// request is safe to repeat.
    pub(crate) fn call(&self, build: impl FnMut(&Link) -> Result<Request>) -> Result<Response> {
        Ok(self.call_linked(build)?.1)
    }

    /// [`Client::call`], with the generation of the link that answered.
    /// (`build` only opens handles, which is safe to repeat.)
    pub(crate) fn call_linked(
        &self,
        mut build: impl FnMut(&Link) -> Result<Request>,
    ) -> Result<(u64, Response)> {
        loop {
            let link = self.link()?;
            let answer = build(&link).and_then(|request| match link.ask(&request) {
                Err(lost) if !retryable(&request) => Ok(Err(lost)),
                answer => answer.map(Ok),
            });
            match answer {
                Err(Error::Unavailable { .. }) if link.is_broken() => continue,
                Err(e) | Ok(Err(e)) => return Err(e),
                Ok(Ok(response)) => return Ok((link.generation, response)),
            }
        }
    }

    /// Runs `open`, which opens handles on the link it is given (safe to
    /// repeat), on the live link, and again on a new one if the owner
    /// went away meanwhile.
    pub(crate) fn opening<T>(&self, mut open: impl FnMut(&Link) -> Result<T>) -> Result<T> {
        loop {
            let link = self.link()?;
            match open(&link) {
                Err(Error::Unavailable { .. }) if link.is_broken() => continue,
                opened => return opened,
            }
        }
    }

    /// [`Client::call`] in a future.
    pub(crate) async fn call_async(&self, build: impl FnMut(&Link) -> Result<Request>) -> Result<Response> {
        Ok(self.call_linked_async(build).await?.1)
    }

    /// [`Client::call_linked`] in a future.
    pub(crate) async fn call_linked_async(
        &self,
        mut build: impl FnMut(&Link) -> Result<Request>,
    ) -> Result<(u64, Response)> {
        loop {
            let link = self.link()?;
            let request = match build(&link) {
                Err(Error::Unavailable { .. }) if link.is_broken() => continue,
                built => built?,
            };
            match link.ask_async(&request).await {
                Err(Error::Unavailable { .. }) if link.is_broken() && retryable(&request) => continue,
                answer => return Ok((link.generation, answer?)),
            }
        }
    }

    /// The handle `bound` holds if it was opened on `link`, else one
    /// `open` opens on it now (and `bound` then holds).
    pub(crate) fn bound(
        link: &Link,
        bound: &Mutex<Option<(u64, Handle)>>,
        open: impl FnOnce(&Link) -> Result<Handle>,
    ) -> Result<Handle> {
        let mut bound = lock(bound);
        match *bound {
            Some((generation, handle)) if generation == link.generation => Ok(handle),
            _ => {
                let handle = open(link)?;
                *bound = Some((link.generation, handle));
                Ok(handle)
            }
        }
    }

    /// Tells the owner a handle is no longer used, if its link still is.
    pub(crate) fn release(&self, bound: &Mutex<Option<(u64, Handle)>>) {
        if let Some((generation, handle)) = lock(bound).take() {
            self.release_on(generation, handle);
        }
    }

    /// Tells the owner that `handle`, opened on the link `generation`, is
    /// no longer used, if that link is still the live one. Never links
    /// again: a handle of a lost owner went with it, and a drop must not
    /// connect, let alone take the bus over.
    pub(crate) fn release_on(&self, generation: u64, handle: Handle) {
        if let Some(link) = lock(&self.link).as_ref().filter(|l| l.generation == generation) {
            link.tell(&Request::Release { handle });
        }
    }

    /// Hangs up; every later call fails with [`Error::Closed`]. A bus this
    /// process took over closes when the processes it serves hang up too.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(link) = lock(&self.link).take() {
            link.break_off();
        }
        lock(&self.owned).take();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

/// Whether asking again after the owner was lost mid-call is safe: the
/// request changes nothing the caller could have seen (a receive's lease,
/// if the lost owner granted one, is found by the next owner's recovery
/// and the record redelivered).
fn retryable(request: &Request) -> bool {
    matches!(
        request,
        Request::Topic { .. }
            | Request::TopicNames
            | Request::Stats
            | Request::Requester { .. }
            | Request::Subscribe { .. }
            | Request::Group { .. }
            | Request::Offsets { .. }
            | Request::TopicStats { .. }
            | Request::SubPosition { .. }
            | Request::GroupRecv { .. }
            | Request::GroupStats { .. }
            | Request::Replies { .. }
            | Request::InboxWait { .. }
    )
}
