//! Replica placement over storage directories: Kafka's rack-unaware assignment
//! (`AdminUtils.assignReplicasToBrokersRackUnaware`), with directories in the role of brokers.
//!
//! Partition `p`'s first replica (its preferred leader) goes to directory
//! `(p + start) % n`; the others follow it at a shift that grows by one every `n`
//! partitions, so that replicas, and leaders, spread evenly and no two replicas of a
//! partition share a directory.

/// The directories of each partition's replicas, preferred leader first, for partitions
/// `first_partition..first_partition + partitions` over `dirs` directories. `start` picks
/// the first partition's directory and the initial shift (Kafka draws both at random; the
/// log rotates them from topic to topic). `replication_factor` must be in `1..=dirs`.
pub(crate) fn assign(
    partitions: u32,
    first_partition: u32,
    replication_factor: u32,
    dirs: u32,
    start: u32,
) -> Vec<Vec<u32>> {
    debug_assert!((1..=dirs).contains(&replication_factor));
    let n = dirs.max(1);
    let start_index = start % n;
    let mut shift = start % n;
    let mut out = Vec::with_capacity(partitions as usize);
    for p in first_partition..first_partition.saturating_add(partitions) {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (p + start_index) % n;
        let mut replicas = Vec::with_capacity(replication_factor as usize);
        replicas.push(first);
        for j in 0..replication_factor.saturating_sub(1) {
            replicas.push(replica_index(first, shift, j, n));
        }
        out.push(replicas);
    }
    out
}

/// Kafka's `replicaIndex`: the `j`-th follower of a partition whose leader is at `first`.
fn replica_index(first: u32, shift: u32, j: u32, n: u32) -> u32 {
    let step = 1 + (shift + j) % (n - 1).max(1);
    (first + step) % n
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `AdminTest.testReplicaAssignment` (Kafka): 5 brokers, 10 partitions, replication
    /// factor 3, fixed start index 0.
    #[test]
    fn kafka_replica_assignment_vector() {
        let expected: [[u32; 3]; 10] = [
            [0, 1, 2],
            [1, 2, 3],
            [2, 3, 4],
            [3, 4, 0],
            [4, 0, 1],
            [0, 2, 3],
            [1, 3, 4],
            [2, 4, 0],
            [3, 0, 1],
            [4, 1, 2],
        ];
        let actual = assign(10, 0, 3, 5, 0);
        let expected: Vec<Vec<u32>> = expected.iter().map(|r| r.to_vec()).collect();
        assert_eq!(actual, expected);
    }

    /// Every partition's replicas are distinct directories, and leaders and replicas spread
    /// evenly (within one) over the directories.
    #[test]
    fn replicas_are_distinct_and_even() {
        for dirs in 1..=6u32 {
            for rf in 1..=dirs {
                for start in 0..dirs {
                    let partitions = dirs * 4;
                    let placement = assign(partitions, 0, rf, dirs, start);
                    let mut leaders = vec![0u32; dirs as usize];
                    let mut replicas = vec![0u32; dirs as usize];
                    for r in &placement {
                        let mut sorted = r.clone();
                        sorted.sort_unstable();
                        sorted.dedup();
                        assert_eq!(sorted.len(), rf as usize, "{r:?} over {dirs} dirs");
                        leaders[r[0] as usize] += 1;
                        for &d in r {
                            replicas[d as usize] += 1;
                        }
                    }
                    let spread = |v: &[u32]| v.iter().max().unwrap() - v.iter().min().unwrap();
                    assert_eq!(spread(&leaders), 0);
                    assert!(spread(&replicas) <= 1, "{replicas:?}");
                }
            }
        }
    }

    /// A single directory holds every partition's only replica.
    #[test]
    fn one_directory() {
        assert_eq!(assign(3, 0, 1, 1, 7), vec![vec![0], vec![0], vec![0]]);
    }
}
