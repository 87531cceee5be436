//! Which sealed segments retention removes. Pure decisions over a summary
//! of the segments, so they are tested without files.
//!
//! Rules: only whole sealed segments go (the active segment, the last one,
//! never does); segments go oldest first; a segment goes when
//! - the log without it still holds at least `retention_bytes`, or
//! - its newest record is older than `now - retention_age`, or
//! - every record in it is below the `truncate_before` offset.

use std::time::Duration;

/// What retention needs to know of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub base: u64,
    pub bytes: u64,
    pub max_timestamp: i64,
}

/// The rules in force.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RetentionRules {
    pub retention_bytes: Option<u64>,
    pub retention_age: Option<Duration>,
    pub truncate_before: Option<u64>,
}

/// How many leading segments to remove.
pub(crate) fn segments_to_remove(segments: &[SegmentSummary], rules: RetentionRules, now_ms: i64) -> usize {
    let mut remaining: u64 = segments.iter().map(|s| s.bytes).sum();
    let age_cutoff = rules
        .retention_age
        .map(|age| now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
    let mut removed = 0;
    for pair in segments.windows(2) {
        let (segment, next) = (pair[0], pair[1]);
        let over_size = rules
            .retention_bytes
            .is_some_and(|max| remaining - segment.bytes >= max);
        let too_old = age_cutoff.is_some_and(|cutoff| segment.max_timestamp < cutoff);
        let truncated = rules.truncate_before.is_some_and(|offset| next.base <= offset);
        if !(over_size || too_old || truncated) {
            break;
        }
        remaining -= segment.bytes;
        removed += 1;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(specs: &[(u64, u64, i64)]) -> Vec<SegmentSummary> {
        specs
            .iter()
            .map(|&(base, bytes, max_timestamp)| SegmentSummary {
                base,
                bytes,
                max_timestamp,
            })
            .collect()
    }

    #[test]
    fn never_removes_the_active_segment() {
        let rules = RetentionRules {
            truncate_before: Some(u64::MAX),
            ..Default::default()
        };
        assert_eq!(segments_to_remove(&segs(&[(0, 10, 0)]), rules, 0), 0);
        assert_eq!(segments_to_remove(&segs(&[(0, 10, 0), (5, 10, 0)]), rules, 0), 1);
    }

    #[test]
    fn size_rule_keeps_at_least_the_limit() {
        let rules = RetentionRules {
            retention_bytes: Some(25),
            ..Default::default()
        };
        let s = segs(&[(0, 10, 0), (1, 10, 0), (2, 10, 0), (3, 10, 0)]);
        assert_eq!(segments_to_remove(&s, rules, 0), 1);
    }

    #[test]
    fn age_rule_removes_only_a_prefix_of_old_segments() {
        let rules = RetentionRules {
            retention_age: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let s = segs(&[(0, 1, 10), (1, 1, 950), (2, 1, 20), (3, 1, 990)]);
        assert_eq!(segments_to_remove(&s, rules, 1000), 1);
    }

    #[test]
    fn truncate_before_removes_segments_wholly_below_the_offset() {
        let rules = RetentionRules {
            truncate_before: Some(20),
            ..Default::default()
        };
        let s = segs(&[(0, 1, 0), (10, 1, 0), (20, 1, 0), (30, 1, 0)]);
        assert_eq!(segments_to_remove(&s, rules, 0), 2);
    }
}
