//! Scatter-gather: one request, one correlation id, many recipients; the
//! replies are gathered from the requester's inbox until a stop rule fires.
//!
//! Recipients are named by the group that replies (`logbus-replier`): a
//! service's responders reply as the service name, and the groups of a
//! topic as their group names. Replies are counted once per recipient (a
//! redelivered request may be answered twice; the first answer counts).
//! Because replies live in the inbox, a gatherer that restarts resumes with
//! [`Requester::resume_scatter`] (the recipients were noted in the inbox
//! when it was sent) and loses nothing that was replied.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::api::Requester;
use crate::error::{Error, Result};
use crate::log::{Async, Block, Wait, ready};
use crate::patterns::{CorrelationId, Reply, ReplyCheck};
use crate::record::Record;
use crate::state::ConsumerId;

/// Who a scatter goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// Each named service topic gets the request; its responders reply as
    /// the service name.
    Services(Vec<String>),
    /// The request is published once to this topic; every consumer group
    /// of the topic at that moment is a recipient and replies as its group
    /// name.
    GroupsOf(String),
}

/// When gathering stops. The deadline always applies.
///
/// ```
/// use std::time::Duration;
/// use logbus::Gather;
/// // Stop at the first two replies, after 500 ms without a new one, or
/// // at the 2 s deadline, whichever comes first.
/// let rule = Gather::all(Duration::from_secs(2))
///     .max_replies(2)
///     .stall(Duration::from_millis(500));
/// # let _ = rule;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    deadline: Duration,
    quorum: Option<usize>,
    max_replies: Option<usize>,
    stall: Option<Duration>,
}

impl Gather {
    /// Wait for every recipient, until `deadline` at most.
    pub fn all(deadline: Duration) -> Gather {
        Gather {
            deadline,
            quorum: None,
            max_replies: None,
            stall: None,
        }
    }

    /// Stop as soon as `k` recipients replied.
    pub fn quorum(mut self, k: usize) -> Gather {
        self.quorum = Some(k);
        self
    }

    /// Stop after `n` replies, returning the first `n`.
    pub fn max_replies(mut self, n: usize) -> Gather {
        self.max_replies = Some(n);
        self
    }

    /// Stop when no new reply arrived for `idle` (after the first one, or
    /// from the start).
    pub fn stall(mut self, idle: Duration) -> Gather {
        self.stall = Some(idle);
        self
    }
}

/// Why gathering stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Every recipient replied.
    All,
    /// The quorum was reached.
    Quorum,
    /// The maximum number of replies arrived.
    MaxReplies,
    /// The deadline passed.
    Deadline,
    /// No reply arrived for the stall timeout.
    Stalled,
}

/// What a gather collected.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Gathered {
    /// The first reply of each recipient that replied, in arrival order.
    pub replies: Vec<Reply>,
    /// Recipients that did not reply.
    pub missing: Vec<String>,
    /// Why gathering stopped.
    pub stopped: StopReason,
}

/// A sent scatter, ready to gather.
///
/// ```
/// use std::time::Duration;
/// use logbus::{Bus, BusOptions, Gather, Recipients, Record};
/// # fn main() -> logbus::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// let bus = Bus::open(dir.path(), BusOptions::default())?;
/// let (eu, us) = (bus.responder("eu")?, bus.responder("us")?);
/// let client = bus.requester("quotes")?;
/// let recipients = Recipients::Services(vec!["eu".into(), "us".into()]);
/// let scatter = client.scatter(recipients, &Record::new(b"sku-7"))?;
/// // Only "eu" answers in time.
/// eu.recv(Duration::from_secs(1))?.expect("a request").reply(&Record::new(b"3.20"))?;
/// let gathered = scatter.gather(Gather::all(Duration::from_millis(200)).quorum(1))?;
/// assert_eq!(gathered.replies.len(), 1);
/// assert_eq!(gathered.missing, ["us"]);
/// # drop(us);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Scatter {
    requester: Requester,
    id: CorrelationId,
    recipients: Vec<String>,
}

impl Requester {
    /// Sends `record` to every recipient under one correlation id.
    pub fn scatter(&self, recipients: Recipients, record: &Record<'_>) -> Result<Scatter> {
        ready(self.scatter_in(recipients, record, Block))
    }

    /// [`Requester::scatter`] as a future, for any executor: each request
    /// is published with [`crate::Topic::publish_async`]. (With
    /// [`Recipients::GroupsOf`] the topic's groups are listed by a blocking
    /// call first: on NATS, a server round trip.) Cancellation: dropped
    /// before its first poll, nothing was sent; dropped later, a prefix of
    /// the recipients may have the request, under an id the caller never
    /// learnt.
    pub async fn scatter_async(&self, recipients: Recipients, record: &Record<'_>) -> Result<Scatter> {
        self.scatter_in(recipients, record, Async).await
    }

    #[inline]
    async fn scatter_in<W: Wait>(
        &self,
        recipients: Recipients,
        record: &Record<'_>,
        wait: W,
    ) -> Result<Scatter> {
        let id = CorrelationId::new();
        let (topics, names) = match recipients {
            Recipients::Services(services) => {
                let topics = services
                    .iter()
                    .map(|s| self.topic(s))
                    .collect::<Result<Vec<_>>>()?;
                (topics, services)
            }
            Recipients::GroupsOf(topic) => {
                let topic = self.topic(&topic)?;
                let groups = topic
                    .stats()?
                    .consumers
                    .into_iter()
                    .filter_map(|c| match c.id {
                        ConsumerId::Group(name) => Some(name),
                        ConsumerId::Subscription(_) => None,
                    })
                    .collect();
                (vec![topic], groups)
            }
        };
        self.note_sent(id, Some(&names), wait).await?;
        for topic in &topics {
            self.publish_request(topic, id, record, wait).await?;
        }
        Ok(self.resume_scatter_with(id, names))
    }

    /// The scatter `id` sent earlier through this requester's name (for
    /// instance before a restart), with the recipients noted in the inbox
    /// when it was sent: gathering reads the replies already there. Reads
    /// the inbox from its start (see [`Requester::pending`]).
    /// [`crate::Error::InvalidArgument`] if no scatter `id` is noted there
    /// (retention removed its note, or it was sent by another requester):
    /// [`Requester::resume_scatter_with`] takes the recipients instead.
    pub fn resume_scatter(&self, id: CorrelationId) -> Result<Scatter> {
        let ledger = self.ledger()?;
        let recipients = ledger.recipients(id).ok_or_else(|| {
            Error::InvalidArgument(format!("no scatter {id} is noted in the inbox {}", self.inbox()))
        })?;
        Ok(self.resume_scatter_with(id, recipients.to_vec()))
    }

    /// A handle on a scatter sent earlier to `recipients`: gathering reads
    /// the replies already in the inbox.
    pub fn resume_scatter_with(&self, id: CorrelationId, recipients: Vec<String>) -> Scatter {
        Scatter {
            requester: self.clone(),
            id,
            recipients,
        }
    }
}

impl Scatter {
    /// The scatter's correlation id.
    pub fn id(&self) -> CorrelationId {
        self.id
    }

    /// The recipients expected to reply.
    pub fn recipients(&self) -> &[String] {
        &self.recipients
    }

    /// Collects replies until `rule` says stop.
    pub fn gather(&self, rule: Gather) -> Result<Gathered> {
        let mut progress = self.progress(&rule);
        self.requester
            .watch(self.id, || Ok(progress(self.requester.replies(self.id)?)))
    }

    /// [`Scatter::gather`] as a future, for any executor: it waits for
    /// replies and for the rule's deadline and stall without blocking the
    /// thread (embedded: the bus's timer thread wakes it). Cancellation:
    /// gathering only reads, so a dropped future loses nothing; the replies
    /// stay in the inbox for another gather. On NATS each read and wait
    /// runs as a task on the connection's runtime.
    ///
    /// ```
    /// use std::time::Duration;
    /// use logbus::{Bus, BusOptions, Gather, Recipients, Record};
    /// # fn main() -> logbus::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let bus = Bus::open(dir.path(), BusOptions::default())?;
    /// let quotes = bus.responder("quotes")?;
    /// let scatter = bus
    ///     .requester("buyer")?
    ///     .scatter(Recipients::Services(vec!["quotes".into()]), &Record::new(b"10 apples"))?;
    /// quotes.try_recv()?.expect("a request").reply(&Record::new(b"4.00"))?;
    /// let gathered = futures::executor::block_on(scatter.gather_async(Gather::all(Duration::from_secs(5))))?;
    /// assert_eq!(gathered.replies.len(), 1);
    /// # Ok(()) }
    /// ```
    pub async fn gather_async(&self, rule: Gather) -> Result<Gathered> {
        self.requester.watch_async(self.id, self.progress(&rule)).await
    }

    /// The check a gather runs on the replies stored after each wake-up:
    /// the result once `rule` says stop, else when to look again at the
    /// latest.
    fn progress<'a>(
        &'a self,
        rule: &'a Gather,
    ) -> impl FnMut(Vec<Reply>) -> ReplyCheck<Gathered> + Send + 'a {
        let started = Instant::now();
        let deadline = started + rule.deadline;
        let mut last_progress = started;
        let mut seen = 0;
        move |stored| {
            let replies = self.first_per_recipient(stored);
            let now = Instant::now();
            if replies.len() > seen {
                seen = replies.len();
                last_progress = now;
            }
            let stall_at = rule.stall.map(|idle| last_progress + idle);
            match self.stop_reason(rule, &replies, now, deadline, stall_at) {
                Some(stopped) => ReplyCheck::Done(self.gathered(replies, stopped, rule)),
                None => ReplyCheck::WaitUntil(stall_at.map_or(deadline, |s| s.min(deadline))),
            }
        }
    }

    /// Gathers, then folds the replies into one value.
    pub fn gather_fold<T>(
        &self,
        rule: Gather,
        init: T,
        fold: impl FnMut(T, &Reply) -> T,
    ) -> Result<(T, Gathered)> {
        let gathered = self.gather(rule)?;
        let value = gathered.replies.iter().fold(init, fold);
        Ok((value, gathered))
    }

    fn stop_reason(
        &self,
        rule: &Gather,
        replies: &[Reply],
        now: Instant,
        deadline: Instant,
        stall_at: Option<Instant>,
    ) -> Option<StopReason> {
        let replied = replies.len();
        let all = self.recipients.len();
        // A cap below the number of recipients wins: the result is cut to it.
        if rule.max_replies.is_some_and(|n| replied >= n && n < all) {
            Some(StopReason::MaxReplies)
        } else if replied >= all {
            Some(StopReason::All)
        } else if rule.quorum.is_some_and(|k| replied >= k) {
            Some(StopReason::Quorum)
        } else if now >= deadline {
            Some(StopReason::Deadline)
        } else if stall_at.is_some_and(|s| now >= s) {
            Some(StopReason::Stalled)
        } else {
            None
        }
    }

    /// The first reply of each expected recipient among `replies`, in
    /// inbox order.
    fn first_per_recipient(&self, replies: Vec<Reply>) -> Vec<Reply> {
        let mut seen = BTreeSet::new();
        replies
            .into_iter()
            .filter(|r| {
                r.from().is_some_and(|from| {
                    self.recipients.iter().any(|x| x == from) && seen.insert(from.to_owned())
                })
            })
            .collect()
    }

    /// The result; under `MaxReplies(n)` only the first `n` replies are
    /// kept (recipients whose later reply was dropped are not "missing").
    fn gathered(&self, mut replies: Vec<Reply>, stopped: StopReason, rule: &Gather) -> Gathered {
        let missing = self
            .recipients
            .iter()
            .filter(|name| !replies.iter().any(|r| r.from() == Some(name.as_str())))
            .cloned()
            .collect();
        if let (StopReason::MaxReplies, Some(n)) = (stopped, rule.max_replies) {
            replies.truncate(n);
        }
        Gathered {
            replies,
            missing,
            stopped,
        }
    }
}
