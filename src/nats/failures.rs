//! The failure history of a group's records: JetStream keeps no reason
//! for a nak, so the client stores each failure as a message of the
//! topic's failure stream `LOGBUS-FAILURES_<topic>`, on the subject
//! `logbus-failures.<topic>.<group>.<sequence>`, and reads the subject
//! back when the record is dead-lettered. The dead letter then lists every
//! failure, as embedded (`logbus-failure`, first and last failure times).
//!
//! Invariants:
//! - the stream keeps at most [`MAX_FAILURES_KEPT`] messages per subject
//!   (the oldest are discarded), as the embedded group keeps its most
//!   recent failures; reasons are cut to [`MAX_REASON_BYTES`];
//! - a record's subject is purged once the record is settled (acked after
//!   a redelivery, or dead-lettered), so a subject holds only the failures
//!   of a record still in the group; a purge lost in a crash leaves at
//!   most those 16 small messages, which nothing reads again (a redriven
//!   record is a new message with a new sequence);
//! - the stream is created (like the topic's: replicas, storage) with the
//!   first failure this process stores; a group without failures never
//!   creates it;
//! - a failure is stored before the nak that reports it, so the record is
//!   never redelivered ahead of its failure; a failure that cannot be
//!   stored fails the nack (the record then comes back when its lease
//!   expires).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use super::client::{StreamSpec, records_on_subject};
use super::error::nats_error;
use super::names::token;
use crate::error::Result;
use crate::format::{Failure, MAX_FAILURES_KEPT, MAX_REASON_BYTES, truncate_utf8};
use crate::record::Record;

/// Where the failures of one group's records go. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct FailureStore {
    shared: Arc<StoreShared>,
}

#[derive(Debug)]
struct StoreShared {
    js: jetstream::Context,
    /// The topic's failure stream.
    stream: String,
    /// `logbus-failures.<topic>`: the stream's subjects are below it.
    topic_prefix: String,
    /// `logbus-failures.<topic>.<group>`: this group's records are below it.
    group_prefix: String,
    spec: StreamSpec,
    /// Whether this process made sure the stream exists.
    ready: AtomicBool,
}

/// The failure stream of `topic`.
pub(crate) fn failure_stream_name(topic: &str) -> String {
    format!("LOGBUS-FAILURES_{}", token(topic))
}

impl FailureStore {
    /// The store of `group` on `topic`; its stream, when created, gets
    /// `spec`'s replicas and storage.
    pub(crate) fn new(js: jetstream::Context, topic: &str, group: &str, spec: &StreamSpec) -> FailureStore {
        let topic_prefix = format!("logbus-failures.{}", token(topic));
        FailureStore {
            shared: Arc::new(StoreShared {
                js,
                stream: failure_stream_name(topic),
                group_prefix: format!("{topic_prefix}.{}", token(group)),
                topic_prefix,
                spec: spec.clone(),
                ready: AtomicBool::new(false),
            }),
        }
    }

    fn subject(&self, sequence: u64) -> String {
        format!("{}.{sequence}", self.shared.group_prefix)
    }

    /// Stores `failure` of the record at stream `sequence`.
    pub(crate) fn record(
        &self,
        sequence: u64,
        failure: &Failure,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let shared = self.shared.clone();
        let subject = self.subject(sequence);
        let reason = Bytes::copy_from_slice(truncate_utf8(&failure.reason, MAX_REASON_BYTES).as_bytes());
        let at_ms = failure.at_ms;
        async move {
            shared.ensure_stream().await?;
            let record = Record::new(&reason).timestamp(at_ms);
            let headers = super::codec::encode_headers(&record)?;
            shared
                .js
                .publish_with_headers(subject, headers, reason.clone())
                .await
                .map_err(|e| nats_error("store failure", e))?
                .await
                .map_err(|e| nats_error("store failure", e))?;
            Ok(())
        }
    }

    /// The stored failures of the record at stream `sequence`, oldest first.
    pub(crate) fn read(&self, sequence: u64) -> impl Future<Output = Result<Vec<Failure>>> + Send + 'static {
        let shared = self.shared.clone();
        let subject = self.subject(sequence);
        async move {
            if !shared.exists().await? {
                return Ok(Vec::new());
            }
            let records = records_on_subject(&shared.js, &shared.stream, &subject).await?;
            Ok(records
                .iter()
                .map(|r| Failure {
                    at_ms: r.timestamp(),
                    reason: String::from_utf8_lossy(r.value()).into_owned(),
                })
                .collect())
        }
    }

    /// Forgets the failures of the record at stream `sequence` (it is
    /// settled).
    pub(crate) fn forget(&self, sequence: u64) -> impl Future<Output = Result<()>> + Send + 'static {
        self.purge(self.subject(sequence))
    }

    /// Forgets the failures of every record of the group (it is deleted).
    pub(crate) fn forget_group(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.purge(format!("{}.>", self.shared.group_prefix))
    }

    /// Purges the failures stored on `subject` (a wildcard for several).
    fn purge(&self, subject: String) -> impl Future<Output = Result<()>> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            if !shared.exists().await? {
                return Ok(());
            }
            let stream = shared
                .js
                .get_stream_no_info(&shared.stream)
                .await
                .map_err(|e| nats_error("get stream", e))?;
            stream
                .purge()
                .filter(subject)
                .await
                .map_err(|e| nats_error("purge failures", e))?;
            Ok(())
        }
    }
}

impl StoreShared {
    /// Creates the stream if this process has not yet made sure it exists.
    async fn ensure_stream(&self) -> Result<()> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let config = stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.topic_prefix)],
            max_messages_per_subject: MAX_FAILURES_KEPT as i64,
            discard: stream::DiscardPolicy::Old,
            storage: match self.spec.memory {
                true => stream::StorageType::Memory,
                false => stream::StorageType::File,
            },
            num_replicas: self.spec.replicas,
            allow_direct: true,
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| nats_error("create failure stream", e))?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether the stream exists (known, or asked of the server).
    async fn exists(&self) -> Result<bool> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(true);
        }
        match self.js.get_stream(&self.stream).await {
            Ok(_) => {
                self.ready.store(true, Ordering::Release);
                Ok(true)
            }
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(error) if error.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                    Ok(false)
                }
                _ => Err(nats_error("get stream", e)),
            },
        }
    }
}
