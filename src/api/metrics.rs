//! [`crate::Bus::record_metrics`]: a bus's stats as gauges and counters of
//! the `metrics` facade (feature `metrics`). Backend-free: it only reads
//! [`TopicStats`]. Counters are set to the stats' running totals
//! (`Counter::absolute`), so recording twice never counts twice.

use std::time::Duration;

use metrics::{counter, gauge};

use crate::patterns::TopicStats;
use crate::state::ConsumerKind;

/// Records every topic of `stats` and its consumers.
pub(crate) fn record(stats: &[TopicStats]) {
    for topic in stats {
        let labels = [("topic", topic.name.clone())];
        gauge!("logbus_topic_start_offset", &labels).set(topic.start_offset as f64);
        gauge!("logbus_topic_end_offset", &labels).set(topic.end_offset as f64);
        gauge!("logbus_topic_bytes", &labels).set(topic.bytes as f64);
        counter!("logbus_topic_syncs_total", &labels).absolute(topic.sync.syncs);
        gauge!("logbus_topic_sync_seconds_total", &labels).set(topic.sync.total.as_secs_f64());
        for consumer in &topic.consumers {
            let kind = match consumer.id.kind() {
                ConsumerKind::Subscription => "subscription",
                ConsumerKind::Group => "group",
            };
            let labels = [
                ("topic", topic.name.clone()),
                ("consumer", consumer.id.name().to_owned()),
                ("kind", kind.to_owned()),
            ];
            gauge!("logbus_consumer_committed", &labels).set(consumer.committed as f64);
            gauge!("logbus_consumer_lag", &labels).set(consumer.lag as f64);
            gauge!("logbus_consumer_oldest_unconsumed_age_seconds", &labels)
                .set(seconds(consumer.oldest_unconsumed_age));
            let Some(group) = &consumer.group else {
                continue;
            };
            gauge!("logbus_group_in_flight", &labels).set(group.in_flight as f64);
            gauge!("logbus_group_waiting", &labels).set(group.waiting as f64);
            gauge!("logbus_group_oldest_unacked_age_seconds", &labels).set(seconds(group.oldest_unacked_age));
            counter!("logbus_group_acked_total", &labels).absolute(group.acked);
            counter!("logbus_group_redeliveries_total", &labels).absolute(group.redeliveries);
            counter!("logbus_group_dead_lettered_total", &labels).absolute(group.dead_lettered);
        }
    }
}

/// An age in seconds, 0 for none.
fn seconds(age: Option<Duration>) -> f64 {
    age.map_or(0.0, |age| age.as_secs_f64())
}
