//! Which worker reads which partition. Every worker of every process computes the same deal
//! from the same metadata, so the partitions are shared out with no coordination and no
//! consumer-group rebalancing: the partitions of all input topics, listed topic by topic in
//! [`super::Topics::INPUTS`] order (busy topics first), are dealt round robin over the
//! global worker indexes.

/// A partition of an input topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition<K> {
    /// What the topic carries (e.g. its record kind).
    pub kind: K,
    pub topic: String,
    pub partition: i32,
}

/// The partitions of `worker` (global index) of `peers`: topics in the order given, each
/// topic's partitions in ascending order, dealt round robin. Every partition goes to exactly
/// one worker.
pub fn assign<K: Clone>(topics: &[(K, String, Vec<i32>)], worker: usize, peers: usize) -> Vec<TopicPartition<K>> {
    assert!(peers > 0 && worker < peers, "worker {worker} of {peers}");
    let mut all = Vec::new();
    for (kind, topic, partitions) in topics {
        let mut partitions = partitions.clone();
        partitions.sort_unstable();
        partitions.dedup();
        all.extend(partitions.into_iter().map(|partition| TopicPartition {
            kind: kind.clone(),
            topic: topic.clone(),
            partition,
        }));
    }
    all.into_iter().enumerate().filter(|(i, _)| i % peers == worker).map(|(_, tp)| tp).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Vec<(u8, String, Vec<i32>)> {
        vec![(0, "market".into(), vec![2, 0, 1, 3]), (1, "deltas".into(), vec![0, 1, 2]), (2, "refs".into(), vec![0])]
    }

    #[test]
    fn every_partition_goes_to_exactly_one_worker() {
        for peers in 1..6 {
            let mut seen: Vec<(String, i32)> =
                (0..peers).flat_map(|w| assign(&topics(), w, peers)).map(|tp| (tp.topic, tp.partition)).collect();
            seen.sort();
            let before = seen.len();
            seen.dedup();
            assert_eq!(seen.len(), before, "no partition twice with {peers} workers");
            assert_eq!(seen.len(), 8, "every partition with {peers} workers");
        }
    }

    #[test]
    fn busy_topics_spread_evenly() {
        let w0 = assign(&topics(), 0, 2);
        let w1 = assign(&topics(), 1, 2);
        let market = |v: &[TopicPartition<u8>]| v.iter().filter(|tp| tp.kind == 0).count();
        assert_eq!((market(&w0), market(&w1)), (2, 2));
        assert_eq!(w0.iter().map(|tp| tp.partition).collect::<Vec<_>>(), vec![0, 2, 0, 2]);
        assert_eq!(
            w1.iter().map(|tp| (tp.kind, tp.partition)).collect::<Vec<_>>(),
            vec![(0, 1), (0, 3), (1, 1), (2, 0)]
        );
    }

    #[test]
    fn one_worker_reads_everything_in_order() {
        let all = assign(&topics(), 0, 1);
        assert_eq!(all.len(), 8);
        assert_eq!((all[0].partition, all[3].partition, all[4].topic.as_str()), (0, 3, "deltas"));
    }
}
