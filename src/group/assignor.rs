//! Client-side partition assignors: Kafka's `range`, `roundrobin`, `sticky` and
//! `cooperative-sticky` (the protocols of `partition.assignment.strategy`).
//!
//! The group leader runs one of these over the members' [`Subscription`]s and the partition
//! count of each topic. Each assignor is a pure function of that input (no I/O, clock or
//! randomness): the same input always yields the same assignment, whatever order the lists
//! inside the subscriptions come in.
//!
//! Invariants of every assignor's output:
//! - every member of the input is a key, possibly with an empty list, and each list is sorted;
//! - a member only gets partitions of topics it subscribed to that are in the partition map;
//! - no partition goes to two members;
//! - the eager assignors give out every partition of every subscribed topic; the cooperative
//!   one withholds, for one round, the partitions that move away from a member still holding
//!   them (see [`CooperativeStickyAssignor`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::TopicPartition;

/// How members give up partitions during a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RebalanceProtocol {
    /// Every member revokes all its partitions before it rejoins, then takes the new
    /// assignment whole.
    Eager,
    /// Members keep consuming while the group rebalances and revoke only the partitions the
    /// new assignment takes away; a follow-up rebalance hands those to their new owners.
    Cooperative,
}

/// What a member sends when it joins the group: Kafka's `ConsumerProtocolSubscription`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Topics the member wants to consume. Topics missing from the partition map are ignored.
    pub topics: Vec<String>,
    /// Partitions the member holds now; the sticky assignors try to leave them where they are.
    pub owned_partitions: Vec<TopicPartition>,
    /// Generation in which the member got `owned_partitions`; `None` if it never had an
    /// assignment (Kafka's `-1`), which sorts below every generation.
    pub generation: Option<i32>,
    /// `group.instance.id` of a static member (KIP-345); range and round robin order by it.
    pub group_instance_id: Option<String>,
}

impl Subscription {
    /// A dynamic member subscribed to `topics` that owns nothing yet: a first join.
    pub fn new<I>(topics: I) -> Subscription
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Subscription {
            topics: topics.into_iter().map(Into::into).collect(),
            ..Subscription::default()
        }
    }

    /// Claims `partitions` as owned since `generation`: what a member sends when it rejoins.
    #[must_use]
    pub fn owning(
        mut self,
        partitions: impl IntoIterator<Item = TopicPartition>,
        generation: i32,
    ) -> Subscription {
        self.owned_partitions = partitions.into_iter().collect();
        self.generation = Some(generation);
        self
    }

    /// Makes the member static, with `id` as its `group.instance.id`.
    #[must_use]
    pub fn with_group_instance_id(mut self, id: impl Into<String>) -> Subscription {
        self.group_instance_id = Some(id.into());
        self
    }
}

/// A partition assignment strategy, run by the group leader: Kafka's
/// `ConsumerPartitionAssignor`.
///
/// In tarnlog the leader's assignor runs inside the log's group coordinator, in the `poll`
/// that completes a round and under the coordinator's lock: it must be quick and must not
/// call back into the log's consumer groups (that would deadlock). Its name is 1 to 249
/// bytes. A consumer rebalances cooperatively only if every assignor it lists reports
/// [`RebalanceProtocol::Cooperative`].
pub trait Assignor: Send + Sync + std::fmt::Debug {
    /// The protocol name members vote with: `range`, `roundrobin`, `sticky` or
    /// `cooperative-sticky`.
    fn name(&self) -> &'static str;

    /// How members give up partitions when the group uses this assignor.
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    /// Assigns the partitions of the subscribed topics.
    ///
    /// `partitions` holds the partition count of each topic; `members` maps member id to
    /// subscription. Returns member id to assigned partitions, with every member present
    /// (possibly with an empty list) and each list sorted.
    fn assign(
        &self,
        partitions: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>>;
}

/// The assignor registered under a protocol `name`, or `None` for a name this crate lacks.
pub fn assignor_named(name: &str) -> Option<&'static dyn Assignor> {
    match name {
        "range" => Some(&RangeAssignor),
        "roundrobin" => Some(&RoundRobinAssignor),
        "sticky" => Some(&StickyAssignor),
        "cooperative-sticky" => Some(&CooperativeStickyAssignor),
        _ => None,
    }
}

/// Kafka's `RangeAssignor` (`range`, the default): each topic is cut into contiguous ranges,
/// one per subscriber.
///
/// Per topic, the subscribers are ordered as Kafka's `MemberInfo` orders them: static members
/// first by `group.instance.id`, then dynamic members by member id. With `P` partitions and
/// `C` subscribers each gets `P / C`, and the first `P % C` get one more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let order = member_info_order(partitions, members);
        let mut lists = vec![Vec::new(); order.len()];
        for (topic, &count) in partitions {
            let subscribers: Vec<usize> = (0..order.len())
                .filter(|&m| order[m].topics.contains(topic.as_str()))
                .collect();
            if subscribers.is_empty() {
                continue;
            }
            let count = count as usize;
            let per_member = count / subscribers.len();
            let with_extra = count % subscribers.len();
            let mut next = 0;
            for (rank, &member) in subscribers.iter().enumerate() {
                let len = per_member + usize::from(rank < with_extra);
                lists[member]
                    .extend((next..next + len).map(|p| TopicPartition::new(topic, p as u32)));
                next += len;
            }
            debug_assert_eq!(next, count, "the ranges cover the topic");
        }
        finish(&order, lists)
    }
}

/// Kafka's `RoundRobinAssignor` (`roundrobin`): all partitions of all subscribed topics, in
/// (topic, partition) order, dealt one at a time around the members.
///
/// Members are ordered as for [`RangeAssignor`]; the deal skips members not subscribed to the
/// partition's topic and carries on from the member after the one that took it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let order = member_info_order(partitions, members);
        let mut lists = vec![Vec::new(); order.len()];
        let mut next_member = 0;
        for (topic, &count) in partitions {
            for partition in 0..count {
                // One lap around the members finds a subscriber, or the topic has none.
                let subscriber = (0..order.len())
                    .map(|step| (next_member + step) % order.len())
                    .find(|&m| order[m].topics.contains(topic.as_str()));
                let Some(member) = subscriber else { break };
                lists[member].push(TopicPartition::new(topic, partition));
                next_member = member + 1;
            }
        }
        finish(&order, lists)
    }
}

/// Kafka's `StickyAssignor` (`sticky`, eager): a balanced assignment that moves as few
/// partitions as it can.
///
/// Balance comes first: partition counts differ by at most one between members that could
/// take each other's partitions, and no chain of members lets a partition travel from one
/// member to another holding two fewer. Within that, a member keeps what it validly owned
/// (see [`Subscription::owned_partitions`]) unless balance needs it elsewhere, and balancing
/// moves partitions handed out in this round before owned ones. With identical subscriptions
/// this moves the fewest partitions possible; with mixed ones it is a greedy approximation,
/// as Kafka's is.
///
/// Ownership claims are checked by generation as Kafka does: only claims made in the highest
/// generation any member reports count; a partition claimed by several members in that
/// generation counts for none of them and is given out afresh. Claims on partitions the
/// member no longer subscribes to, or that no longer exist, are dropped.
///
/// Partitions without a valid owner go, in (topic, partition) order, to the least loaded
/// subscriber (ties to the lower member id), so a group assigned from scratch gets Kafka's
/// round-robin pattern. Members are ordered by member id; `group.instance.id` plays no part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StickyAssignor;

impl Assignor for StickyAssignor {
    fn name(&self) -> &'static str {
        "sticky"
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let (sticky, _) = Sticky::run(partitions, members);
        sticky.into_assignment(members, |_, _| true)
    }
}

/// Kafka's `CooperativeStickyAssignor` (`cooperative-sticky`): the [`StickyAssignor`]'s
/// target assignment, reached in two rebalances so no partition has two consumers at once.
///
/// A partition whose target owner differs from a member still holding it (a claim in the
/// highest generation, valid or not) is withheld from this round's assignment: Kafka's
/// `partitionsTransferringOwnership`. The holder sees it missing, revokes it and rejoins; in
/// the next round nobody claims it and the target owner gets it. Stale claims (older
/// generations) withhold nothing: those members have already lost their partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CooperativeStickyAssignor;

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let (sticky, claims) = Sticky::run(partitions, members);
        sticky.into_assignment(members, |member, slot| !claims.held_by_other(slot, member))
    }
}

/// A member as range and round robin see it.
struct Member<'a> {
    id: &'a str,
    /// Subscribed topics that are in the partition map.
    topics: BTreeSet<&'a str>,
}

/// Members in Kafka's `MemberInfo` order: static members first, by `group.instance.id`, then
/// dynamic members by member id. Equal instance ids fall back to member id, so the order is
/// total and the output deterministic.
fn member_info_order<'a>(
    partitions: &'a BTreeMap<String, u32>,
    members: &'a BTreeMap<String, Subscription>,
) -> Vec<Member<'a>> {
    let mut order: Vec<(&String, &Subscription)> = members.iter().collect();
    order.sort_by_key(|(id, s)| {
        let instance = s.group_instance_id.as_deref();
        (instance.is_none(), instance, *id)
    });
    order
        .into_iter()
        .map(|(id, s)| Member {
            id,
            topics: known_topics(partitions, s),
        })
        .collect()
}

/// The topics of `subscription` that are in `partitions`, deduplicated.
fn known_topics<'a>(
    partitions: &'a BTreeMap<String, u32>,
    subscription: &Subscription,
) -> BTreeSet<&'a str> {
    subscription
        .topics
        .iter()
        .filter_map(|t| partitions.get_key_value(t.as_str()))
        .map(|(t, _)| t.as_str())
        .collect()
}

/// Pairs each member with its list, sorted.
fn finish(
    order: &[Member<'_>],
    lists: Vec<Vec<TopicPartition>>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    order
        .iter()
        .zip(lists)
        .map(|(member, mut list)| {
            list.sort();
            (member.id.to_owned(), list)
        })
        .collect()
}

/// A partition inside the sticky engine: the topic name borrowed from the partition map, and
/// the partition number. Orders as [`TopicPartition`] does.
type Slot<'a> = (&'a str, u32);

/// `tp` as a slot, if its topic is in `partitions` and the partition exists.
fn slot<'a>(partitions: &'a BTreeMap<String, u32>, tp: &TopicPartition) -> Option<Slot<'a>> {
    let (topic, &count) = partitions.get_key_value(tp.topic.as_str())?;
    (tp.partition < count).then_some((topic.as_str(), tp.partition))
}

/// Ownership claims that survive Kafka's generation check.
struct Claims<'a> {
    /// Members (by index in member-id order) that claimed each existing partition in the
    /// highest generation reported.
    claimants: BTreeMap<Slot<'a>, Vec<usize>>,
}

impl<'a> Claims<'a> {
    fn new(
        partitions: &'a BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> Claims<'a> {
        let highest = members.values().map(|s| s.generation).max().flatten();
        let mut claimants: BTreeMap<Slot<'a>, Vec<usize>> = BTreeMap::new();
        for (member, subscription) in members.values().enumerate() {
            if subscription.generation != highest {
                continue;
            }
            // A set, so a member listing a partition twice does not conflict with itself.
            let owned: BTreeSet<Slot<'a>> = subscription
                .owned_partitions
                .iter()
                .filter_map(|tp| slot(partitions, tp))
                .collect();
            for claimed in owned {
                claimants.entry(claimed).or_default().push(member);
            }
        }
        Claims { claimants }
    }

    /// The previous owner of `slot`: its only claimant, if it has exactly one.
    fn owner(&self, slot: &Slot<'a>) -> Option<usize> {
        match self.claimants.get(slot)?.as_slice() {
            [member] => Some(*member),
            _ => None,
        }
    }

    /// Whether a member other than `member` still holds `slot` from the highest generation.
    fn held_by_other(&self, slot: &Slot<'a>, member: usize) -> bool {
        self.claimants
            .get(slot)
            .is_some_and(|holders| holders.iter().any(|&m| m != member))
    }
}

/// The sticky assignment being built. Members are indexes in member-id order.
struct Sticky<'a> {
    /// Subscribed topics of each member that are in the partition map.
    topics: Vec<BTreeSet<&'a str>>,
    /// Subscribers of each topic, ascending.
    subscribers: BTreeMap<&'a str, Vec<usize>>,
    /// What each member holds: topic to partition numbers.
    held: Vec<BTreeMap<&'a str, BTreeSet<u32>>>,
    /// How many partitions each member holds.
    counts: Vec<usize>,
    /// Partitions left with their valid previous owner; moving one costs a revocation.
    previous_owner: BTreeMap<Slot<'a>, usize>,
}

impl<'a> Sticky<'a> {
    /// Keeps valid claims, hands out the rest, then balances.
    fn run(
        partitions: &'a BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> (Sticky<'a>, Claims<'a>) {
        let claims = Claims::new(partitions, members);
        let mut sticky = Sticky::new(partitions, members);
        sticky.keep(&claims);
        sticky.fill(partitions);
        sticky.balance();
        (sticky, claims)
    }

    fn new(
        partitions: &'a BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
    ) -> Sticky<'a> {
        let topics: Vec<BTreeSet<&'a str>> = members
            .values()
            .map(|s| known_topics(partitions, s))
            .collect();
        let mut subscribers: BTreeMap<&'a str, Vec<usize>> = BTreeMap::new();
        for (member, subscribed) in topics.iter().enumerate() {
            for &topic in subscribed {
                subscribers.entry(topic).or_default().push(member);
            }
        }
        Sticky {
            held: vec![BTreeMap::new(); topics.len()],
            counts: vec![0; topics.len()],
            topics,
            subscribers,
            previous_owner: BTreeMap::new(),
        }
    }

    /// Leaves each validly claimed partition with its owner, if the owner still subscribes.
    fn keep(&mut self, claims: &Claims<'a>) {
        for slot in claims.claimants.keys() {
            let Some(owner) = claims.owner(slot) else {
                continue;
            };
            if self.topics[owner].contains(slot.0) {
                self.give(owner, *slot);
                self.previous_owner.insert(*slot, owner);
            }
        }
    }

    /// Gives every partition nobody kept to its least loaded subscriber, ties to the lower
    /// member id.
    fn fill(&mut self, partitions: &'a BTreeMap<String, u32>) {
        let mut by_load: BTreeSet<(usize, usize)> = self.counts.iter().copied().zip(0..).collect();
        for (topic, &count) in partitions {
            let topic = topic.as_str();
            if !self.subscribers.contains_key(topic) {
                continue;
            }
            for partition in 0..count {
                let slot = (topic, partition);
                if self.previous_owner.contains_key(&slot) {
                    continue;
                }
                let least_loaded = by_load
                    .iter()
                    .copied()
                    .find(|&(_, m)| self.topics[m].contains(topic));
                let Some((load, member)) = least_loaded else {
                    break;
                };
                by_load.remove(&(load, member));
                by_load.insert((load + 1, member));
                self.give(member, slot);
            }
        }
    }

    /// Shifts partitions along improving chains until there is none.
    fn balance(&mut self) {
        // A shift lowers the sum of squared counts by at least 2, and that sum starts at most
        // total², so this many rounds always suffice.
        let total: usize = self.counts.iter().sum();
        let max_shifts = total.saturating_mul(total) / 2 + 1;
        for _ in 0..max_shifts {
            let Some(path) = self.improving_path() else {
                return;
            };
            self.shift(&path);
        }
        debug_assert!(self.improving_path().is_none(), "balancing must converge");
    }

    /// A chain `[source, .., receiver]` in which each member holds a partition of a topic the
    /// next one subscribes to, and the source holds at least two more than the receiver.
    /// Least loaded receivers first, then the shortest chain, then the most loaded source.
    fn improving_path(&self) -> Option<Vec<usize>> {
        let most = self.counts.iter().copied().max()?;
        let mut receivers: Vec<usize> = (0..self.counts.len())
            .filter(|&m| self.counts[m] + 2 <= most)
            .collect();
        receivers.sort_by_key(|&m| (self.counts[m], m));
        receivers.into_iter().find_map(|m| self.path_to(m))
    }

    /// Breadth-first search backwards from `receiver`, one level at a time.
    fn path_to(&self, receiver: usize) -> Option<Vec<usize>> {
        let wanted = self.counts[receiver] + 2;
        // next_hop[m]: the member `m` passes a partition to on the way to `receiver`.
        let mut next_hop: Vec<Option<usize>> = vec![None; self.counts.len()];
        let mut seen = vec![false; self.counts.len()];
        seen[receiver] = true;
        let mut level = vec![receiver];
        while !level.is_empty() {
            let mut next_level = Vec::new();
            for &to in &level {
                for topic in &self.topics[to] {
                    for &from in self.subscribers.get(topic).map_or(&[][..], Vec::as_slice) {
                        if !seen[from] && self.held[from].contains_key(topic) {
                            seen[from] = true;
                            next_hop[from] = Some(to);
                            next_level.push(from);
                        }
                    }
                }
            }
            let source = next_level
                .iter()
                .copied()
                .filter(|&m| self.counts[m] >= wanted)
                .min_by_key(|&m| (Reverse(self.counts[m]), m));
            if let Some(source) = source {
                // Each hop is one level nearer the receiver, whose next hop is None.
                return Some(std::iter::successors(Some(source), |&m| next_hop[m]).collect());
            }
            level = next_level;
        }
        None
    }

    /// Moves one partition across each hop of `path`.
    fn shift(&mut self, path: &[usize]) {
        for hop in path.windows(2) {
            let (from, to) = (hop[0], hop[1]);
            // path_to saw `from` hold a topic `to` takes; earlier hops only added to `from`.
            let Some(slot) = self.pick(from, to) else {
                debug_assert!(false, "member {from} has nothing member {to} can take");
                return;
            };
            self.take(from, slot);
            self.give(to, slot);
        }
    }

    /// The partition `from` should hand to `to`: one it did not own before this assignment
    /// if it has any (moving that revokes nothing), else its last, so an owner keeps its
    /// first partitions as Kafka's does.
    fn pick(&self, from: usize, to: usize) -> Option<Slot<'a>> {
        self.topics[to]
            .iter()
            .filter_map(|topic| self.held[from].get_key_value(topic))
            .flat_map(|(&topic, numbers)| numbers.iter().map(move |&p| (topic, p)))
            .max_by_key(|slot| (self.previous_owner.get(slot) != Some(&from), *slot))
    }

    fn give(&mut self, member: usize, (topic, partition): Slot<'a>) {
        if self.held[member]
            .entry(topic)
            .or_default()
            .insert(partition)
        {
            self.counts[member] += 1;
        }
    }

    fn take(&mut self, member: usize, (topic, partition): Slot<'a>) {
        let Some(numbers) = self.held[member].get_mut(topic) else {
            return;
        };
        if numbers.remove(&partition) {
            self.counts[member] -= 1;
        }
        if numbers.is_empty() {
            self.held[member].remove(topic);
        }
    }

    /// The assignment by member id, keeping only the slots `keep(member, slot)` accepts.
    fn into_assignment(
        self,
        members: &BTreeMap<String, Subscription>,
        keep: impl Fn(usize, &Slot<'a>) -> bool,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        members
            .keys()
            .zip(self.held)
            .enumerate()
            .map(|(member, (id, held))| {
                // BTreeMap and BTreeSet order: (topic, partition), so the list is sorted.
                let list = held
                    .into_iter()
                    .flat_map(|(topic, numbers)| numbers.into_iter().map(move |p| (topic, p)))
                    .filter(|slot| keep(member, slot))
                    .map(|(topic, p)| TopicPartition::new(topic, p))
                    .collect();
                (id.clone(), list)
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    const ALL: [&dyn Assignor; 4] = [
        &RangeAssignor,
        &RoundRobinAssignor,
        &StickyAssignor,
        &CooperativeStickyAssignor,
    ];

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn topics(counts: &[(&str, u32)]) -> BTreeMap<String, u32> {
        counts.iter().map(|&(t, n)| (t.to_owned(), n)).collect()
    }

    fn group(members: Vec<(&str, Subscription)>) -> BTreeMap<String, Subscription> {
        members
            .into_iter()
            .map(|(id, s)| (id.to_owned(), s))
            .collect()
    }

    fn sub(topics: &[&str]) -> Subscription {
        Subscription::new(topics.iter().copied())
    }

    /// The expected assignment: member id and its (topic, partition) list, which is sorted here.
    fn expected(rows: &[(&str, &[(&str, u32)])]) -> BTreeMap<String, Vec<TopicPartition>> {
        rows.iter()
            .map(|&(id, list)| {
                let mut list: Vec<_> = list.iter().map(|&(t, p)| tp(t, p)).collect();
                list.sort();
                (id.to_owned(), list)
            })
            .collect()
    }

    // Scenario: RangeAssignorTest.testMultipleConsumersMixedTopics; prevents giving a member a
    // topic it did not subscribe to or cutting ranges over the wrong subscriber set.
    #[test]
    fn range_multiple_consumers_mixed_topics() {
        let partitions = topics(&[("t1", 3), ("t2", 2)]);
        let members = group(vec![
            ("c1", sub(&["t1"])),
            ("c2", sub(&["t1", "t2"])),
            ("c3", sub(&["t1"])),
        ]);
        assert_eq!(
            RangeAssignor.assign(&partitions, &members),
            expected(&[
                ("c1", &[("t1", 0)]),
                ("c2", &[("t1", 1), ("t2", 0), ("t2", 1)]),
                ("c3", &[("t1", 2)]),
            ])
        );
    }

    // Scenario: RoundRobinAssignorTest.testMultipleConsumersMixedTopics. The deal goes
    // t1p0→c1, t1p1→c2, t1p2→c3, then t2p0 skips c1 (not subscribed) →c2, and t2p1 skips c3
    // and c1 →c2. Prevents dealing a partition to a member not subscribed to its topic.
    #[test]
    fn round_robin_multiple_consumers_mixed_topics() {
        let partitions = topics(&[("t1", 3), ("t2", 2)]);
        let members = group(vec![
            ("c1", sub(&["t1"])),
            ("c2", sub(&["t1", "t2"])),
            ("c3", sub(&["t1"])),
        ]);
        assert_eq!(
            RoundRobinAssignor.assign(&partitions, &members),
            expected(&[
                ("c1", &[("t1", 0)]),
                ("c2", &[("t1", 1), ("t2", 0), ("t2", 1)]),
                ("c3", &[("t1", 2)]),
            ])
        );
    }

    // Scenario: Kafka's documented two-consumer, two-topic example; prevents range from
    // balancing across topics and round robin from restarting its deal per topic.
    #[test]
    fn two_consumers_two_topics_range_and_round_robin() {
        let partitions = topics(&[("t0", 3), ("t1", 3)]);
        let members = group(vec![("C0", sub(&["t0", "t1"])), ("C1", sub(&["t0", "t1"]))]);
        assert_eq!(
            RangeAssignor.assign(&partitions, &members),
            expected(&[
                ("C0", &[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]),
                ("C1", &[("t0", 2), ("t1", 2)]),
            ])
        );
        assert_eq!(
            RoundRobinAssignor.assign(&partitions, &members),
            expected(&[
                ("C0", &[("t0", 0), ("t0", 2), ("t1", 1)]),
                ("C1", &[("t0", 1), ("t1", 0), ("t1", 2)]),
            ])
        );
    }

    // Scenario: static members sort by group.instance.id before dynamic ones by member id;
    // prevents a restarted static member (new member id) from shuffling the assignment.
    #[test]
    fn range_and_round_robin_order_static_members_first() {
        let partitions = topics(&[("t", 3)]);
        let members = group(vec![
            ("a", sub(&["t"])),
            ("b", sub(&["t"]).with_group_instance_id("i2")),
            ("c", sub(&["t"]).with_group_instance_id("i1")),
        ]);
        let want = expected(&[("a", &[("t", 2)]), ("b", &[("t", 1)]), ("c", &[("t", 0)])]);
        assert_eq!(RangeAssignor.assign(&partitions, &members), want);
        assert_eq!(RoundRobinAssignor.assign(&partitions, &members), want);
    }

    // Scenario: subscriptions to topics missing from the partition map, and an empty group;
    // prevents a panic or a phantom partition for an unknown topic.
    #[test]
    fn unknown_topics_and_empty_groups_assign_nothing() {
        let partitions = topics(&[("t", 2), ("empty", 0)]);
        let members = group(vec![("a", sub(&["nope", "empty"])), ("b", sub(&[]))]);
        for assignor in ALL {
            let want = expected(&[("a", &[]), ("b", &[])]);
            assert_eq!(assignor.assign(&partitions, &members), want, "{assignor:?}");
            assert!(assignor.assign(&partitions, &BTreeMap::new()).is_empty());
        }
    }

    // Scenario: the StickyAssignor javadoc example, then C1 leaves; prevents the sticky
    // assignor from reshuffling what C0 and C2 kept.
    #[test]
    fn sticky_javadoc_example() {
        let all = ["t0", "t1", "t2", "t3"];
        let partitions = topics(&[("t0", 2), ("t1", 2), ("t2", 2), ("t3", 2)]);
        let members = group(vec![
            ("C0", sub(&all)),
            ("C1", sub(&all)),
            ("C2", sub(&all)),
        ]);
        let first = StickyAssignor.assign(&partitions, &members);
        assert_eq!(
            first,
            expected(&[
                ("C0", &[("t0", 0), ("t1", 1), ("t3", 0)]),
                ("C1", &[("t0", 1), ("t2", 0), ("t3", 1)]),
                ("C2", &[("t1", 0), ("t2", 1)]),
            ])
        );

        let rejoin = |id: &str| sub(&all).owning(first[id].clone(), 1);
        let members = group(vec![("C0", rejoin("C0")), ("C2", rejoin("C2"))]);
        assert_eq!(
            StickyAssignor.assign(&partitions, &members),
            expected(&[
                ("C0", &[("t0", 0), ("t1", 1), ("t3", 0), ("t2", 0)]),
                ("C2", &[("t1", 0), ("t2", 1), ("t0", 1), ("t3", 1)]),
            ])
        );
    }

    // Scenario: AbstractStickyAssignorTest.testTwoConsumersTwoTopicsSixPartitions; prevents a
    // fresh sticky assignment from departing from Kafka's round-robin pattern.
    #[test]
    fn sticky_two_consumers_two_topics_six_partitions() {
        let partitions = topics(&[("topic1", 3), ("topic2", 3)]);
        let both = ["topic1", "topic2"];
        let members = group(vec![("consumer1", sub(&both)), ("consumer2", sub(&both))]);
        for assignor in [&StickyAssignor as &dyn Assignor, &CooperativeStickyAssignor] {
            assert_eq!(
                assignor.assign(&partitions, &members),
                expected(&[
                    ("consumer1", &[("topic1", 0), ("topic1", 2), ("topic2", 1)]),
                    ("consumer2", &[("topic1", 1), ("topic2", 0), ("topic2", 2)]),
                ])
            );
        }
    }

    // Scenario: AbstractStickyAssignorTest.testAddRemoveConsumerOneTopic for the eager sticky
    // assignor; prevents moving more than the one partition balance needs.
    #[test]
    fn sticky_add_remove_consumer_one_topic() {
        let partitions = topics(&[("t", 3)]);
        let first = StickyAssignor.assign(&partitions, &group(vec![("c1", sub(&["t"]))]));
        assert_eq!(first, expected(&[("c1", &[("t", 0), ("t", 1), ("t", 2)])]));

        let members = group(vec![
            ("c1", sub(&["t"]).owning(first["c1"].clone(), 1)),
            ("c2", sub(&["t"]).owning([], 1)),
        ]);
        let second = StickyAssignor.assign(&partitions, &members);
        assert_eq!(
            second,
            expected(&[("c1", &[("t", 0), ("t", 1)]), ("c2", &[("t", 2)])])
        );

        let members = group(vec![("c2", sub(&["t"]).owning(second["c2"].clone(), 2))]);
        assert_eq!(
            StickyAssignor.assign(&partitions, &members),
            expected(&[("c2", &[("t", 0), ("t", 1), ("t", 2)])])
        );
    }

    // Scenario: the same test for cooperative-sticky: p2 transfers from c1 to c2, so it is
    // withheld for one round and handed over in the next; prevents two consumers on p2 at once.
    #[test]
    fn cooperative_add_remove_consumer_one_topic() {
        let partitions = topics(&[("t", 3)]);
        let assignor = CooperativeStickyAssignor;
        let first = assignor.assign(&partitions, &group(vec![("c1", sub(&["t"]))]));
        assert_eq!(first, expected(&[("c1", &[("t", 0), ("t", 1), ("t", 2)])]));

        let members = group(vec![
            ("c1", sub(&["t"]).owning(first["c1"].clone(), 1)),
            ("c2", sub(&["t"]).owning([], 1)),
        ]);
        let second = assignor.assign(&partitions, &members);
        assert_eq!(
            second,
            expected(&[("c1", &[("t", 0), ("t", 1)]), ("c2", &[])])
        );

        // c1 revoked p2 and rejoined: the follow-up round hands it over.
        let members = group(vec![
            ("c1", sub(&["t"]).owning(second["c1"].clone(), 2)),
            ("c2", sub(&["t"]).owning(second["c2"].clone(), 2)),
        ]);
        let third = assignor.assign(&partitions, &members);
        assert_eq!(
            third,
            expected(&[("c1", &[("t", 0), ("t", 1)]), ("c2", &[("t", 2)])])
        );

        let members = group(vec![("c2", sub(&["t"]).owning(third["c2"].clone(), 3))]);
        assert_eq!(
            assignor.assign(&partitions, &members),
            expected(&[("c2", &[("t", 0), ("t", 1), ("t", 2)])])
        );
    }

    // Scenario: c2's claim is from generation 1 while c1 and c3 report generation 2; prevents
    // a zombie's stale claim from steering the assignment or withholding a partition.
    #[test]
    fn stale_generation_claims_are_ignored() {
        let partitions = topics(&[("t", 4)]);
        let members = group(vec![
            ("c1", sub(&["t"]).owning([tp("t", 0), tp("t", 1)], 2)),
            ("c2", sub(&["t"]).owning([tp("t", 0), tp("t", 3)], 1)),
            ("c3", sub(&["t"]).owning([], 2)),
        ]);
        // Honouring c2's claim would keep t-3 on c2; ignored, t-2 and t-3 go out in order.
        let want = expected(&[
            ("c1", &[("t", 0), ("t", 1)]),
            ("c2", &[("t", 2)]),
            ("c3", &[("t", 3)]),
        ]);
        assert_eq!(StickyAssignor.assign(&partitions, &members), want);
        assert_eq!(
            CooperativeStickyAssignor.assign(&partitions, &members),
            want
        );
    }

    // Scenario: AbstractStickyAssignorTest's "owned partition invalidated when claimed by
    // multiple consumers in the same generation": c1 and c2 both claim t-0, so it is given out
    // fresh (to c3, the least loaded); cooperative withholds it until both have let it go.
    #[test]
    fn partition_claimed_twice_in_one_generation_is_given_out_fresh() {
        let partitions = topics(&[("t", 3)]);
        let members = group(vec![
            ("c1", sub(&["t"]).owning([tp("t", 0), tp("t", 1)], 1)),
            ("c2", sub(&["t"]).owning([tp("t", 0), tp("t", 2)], 1)),
            ("c3", sub(&["t"]).owning([], 1)),
        ]);
        let want = expected(&[
            ("c1", &[("t", 1)]),
            ("c2", &[("t", 2)]),
            ("c3", &[("t", 0)]),
        ]);
        assert_eq!(StickyAssignor.assign(&partitions, &members), want);

        let first = CooperativeStickyAssignor.assign(&partitions, &members);
        assert_eq!(
            first,
            expected(&[("c1", &[("t", 1)]), ("c2", &[("t", 2)]), ("c3", &[])])
        );
        let members: BTreeMap<_, _> = first
            .iter()
            .map(|(id, owned)| (id.clone(), sub(&["t"]).owning(owned.clone(), 2)))
            .collect();
        assert_eq!(
            CooperativeStickyAssignor.assign(&partitions, &members),
            want
        );
    }

    // Scenario: c1 drops topic b, whose partitions it owned. b goes to c2 (its only
    // subscriber) and balance then moves a-1 from c2 to c1. Prevents keeping partitions on a
    // member that left their topic and, for cooperative, handing over any of the three moved
    // partitions while its holder still has it.
    #[test]
    fn claims_on_unsubscribed_topics_move_and_cooperative_withholds_them() {
        let partitions = topics(&[("a", 2), ("b", 2)]);
        let members = group(vec![
            (
                "c1",
                sub(&["a"]).owning([tp("a", 0), tp("b", 0), tp("b", 1)], 1),
            ),
            ("c2", sub(&["a", "b"]).owning([tp("a", 1)], 1)),
        ]);
        let want = expected(&[("c1", &[("a", 0), ("a", 1)]), ("c2", &[("b", 0), ("b", 1)])]);
        assert_eq!(StickyAssignor.assign(&partitions, &members), want);
        assert_eq!(
            CooperativeStickyAssignor.assign(&partitions, &members),
            expected(&[("c1", &[("a", 0)]), ("c2", &[])])
        );
    }

    // Scenario: c1 subscribes to x only, c2 to x and y, c3 to y only, and c1 holds all of x:
    // only a chain c1→c2→c3 evens the load; prevents stopping at a pairwise-balanced state.
    #[test]
    fn sticky_balances_through_a_chain_of_members() {
        let partitions = topics(&[("x", 4), ("y", 2)]);
        let x: Vec<_> = (0..4).map(|p| tp("x", p)).collect();
        let y: Vec<_> = (0..2).map(|p| tp("y", p)).collect();
        let members = group(vec![
            ("c1", sub(&["x"]).owning(x, 1)),
            ("c2", sub(&["x", "y"]).owning(y, 1)),
            ("c3", sub(&["y"]).owning([], 1)),
        ]);
        let counts: Vec<usize> = StickyAssignor
            .assign(&partitions, &members)
            .values()
            .map(Vec::len)
            .collect();
        assert_eq!(counts, [2, 2, 2]);
    }

    // Scenario: 10 000 partitions over 100 members, then a 101st joins; prevents a sticky
    // rebalance that moves more than the newcomer's share (and catches quadratic blowups).
    #[test]
    fn sticky_adding_a_member_to_a_large_group_moves_only_its_share() {
        let names: Vec<String> = (0..20).map(|t| format!("topic{t:02}")).collect();
        let partitions: BTreeMap<String, u32> = names.iter().map(|t| (t.clone(), 500)).collect();
        let mut members: BTreeMap<String, Subscription> = (0..100)
            .map(|m| (format!("m{m:03}"), Subscription::new(names.iter().cloned())))
            .collect();
        let first = StickyAssignor.assign(&partitions, &members);
        assert!(first.values().all(|list| list.len() == 100));

        for (id, subscription) in &mut members {
            subscription.owned_partitions.clone_from(&first[id]);
            subscription.generation = Some(1);
        }
        members.insert("m100".to_owned(), Subscription::new(names.iter().cloned()));
        let second = StickyAssignor.assign(&partitions, &members);
        assert_eq!(second["m100"].len(), 99);
        for (id, list) in &first {
            assert!(
                second[id].iter().all(|p| list.contains(p)),
                "{id} gained a partition"
            );
            assert!(second[id].len() >= 99, "{id} lost more than needed");
        }
    }

    #[test]
    fn names_protocols_and_lookup() {
        let names: Vec<_> = ALL.iter().map(|a| a.name()).collect();
        assert_eq!(
            names,
            ["range", "roundrobin", "sticky", "cooperative-sticky"]
        );
        for assignor in ALL {
            assert_eq!(
                assignor_named(assignor.name()).unwrap().name(),
                assignor.name()
            );
            let cooperative = assignor.name() == "cooperative-sticky";
            let want = if cooperative {
                RebalanceProtocol::Cooperative
            } else {
                RebalanceProtocol::Eager
            };
            assert_eq!(assignor.protocol(), want);
        }
        assert!(assignor_named("uniform").is_none());
    }

    /// A random group: up to 4 topics (`t0`..`t3`, some may be missing from the partition
    /// map), up to 6 members with random subscriptions, claims (some on partitions that do
    /// not exist), generations and instance ids. `identical` gives every member the first
    /// member's topics.
    fn scenario(
        identical: bool,
    ) -> impl Strategy<Value = (BTreeMap<String, u32>, BTreeMap<String, Subscription>)> {
        let member = (
            0u8..16,
            proptest::collection::vec((0u8..4, 0u32..7), 0..8),
            proptest::option::of(1i32..3),
            proptest::option::of(0u8..3),
        );
        (
            proptest::collection::vec(0u32..7, 1..4),
            proptest::collection::vec(member, 1..7),
        )
            .prop_map(move |(counts, specs)| {
                let partitions = (0..)
                    .zip(counts)
                    .map(|(t, n)| (format!("t{t}"), n))
                    .collect();
                let first_mask = specs[0].0;
                let members = (0..)
                    .zip(specs)
                    .map(|(m, (mask, owned, generation, instance))| {
                        let mask = if identical { first_mask } else { mask };
                        let subscription = Subscription {
                            topics: (0..4)
                                .filter(|t| mask & (1 << t) != 0)
                                .map(|t| format!("t{t}"))
                                .collect(),
                            owned_partitions: owned
                                .into_iter()
                                .map(|(t, p)| tp(&format!("t{t}"), p))
                                .collect(),
                            generation,
                            group_instance_id: instance.map(|i| format!("i{i}")),
                        };
                        (format!("m{m}"), subscription)
                    })
                    .collect();
                (partitions, members)
            })
    }

    /// Every partition of a subscribed topic goes to exactly one subscriber (at most one if
    /// `exact` is false); nobody gets anything else; every member is present, lists sorted.
    fn check_valid(
        partitions: &BTreeMap<String, u32>,
        members: &BTreeMap<String, Subscription>,
        assignment: &BTreeMap<String, Vec<TopicPartition>>,
        exact: bool,
    ) -> Result<(), TestCaseError> {
        prop_assert!(assignment.keys().eq(members.keys()), "every member present");
        let mut owners: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
        for (id, list) in assignment {
            prop_assert!(list.is_sorted(), "{id}'s list is sorted");
            for p in list {
                prop_assert!(
                    members[id].topics.contains(&p.topic),
                    "{id} subscribed to {p}"
                );
                prop_assert!(p.partition < partitions[&p.topic], "{p} exists");
                prop_assert!(owners.insert(p, id).is_none(), "{p} given twice");
            }
        }
        if exact {
            for (topic, &count) in partitions {
                if members.values().any(|s| s.topics.contains(topic)) {
                    for p in 0..count {
                        prop_assert!(owners.contains_key(&tp(topic, p)), "{topic}-{p} unassigned");
                    }
                }
            }
        }
        Ok(())
    }

    /// Balance as the subscriptions allow: no member can pass a partition, directly (Kafka's
    /// `isBalanced`) or along a chain of members, to one holding two fewer.
    fn check_balanced(
        members: &BTreeMap<String, Subscription>,
        assignment: &BTreeMap<String, Vec<TopicPartition>>,
    ) -> Result<(), TestCaseError> {
        let can_pass = |from: &str, to: &str| {
            assignment[from]
                .iter()
                .any(|p| members[to].topics.contains(&p.topic))
        };
        for (big, big_list) in assignment {
            let mut reached = BTreeSet::from([big.as_str()]);
            let mut frontier = vec![big.as_str()];
            while let Some(from) = frontier.pop() {
                for to in assignment.keys().map(String::as_str) {
                    if !reached.contains(to) && can_pass(from, to) {
                        reached.insert(to);
                        frontier.push(to);
                    }
                }
            }
            for small in reached {
                let gap = big_list.len().saturating_sub(assignment[small].len());
                prop_assert!(gap < 2, "{big} could pass a partition on to {small}");
            }
        }
        Ok(())
    }

    /// Each member rejoins owning what `assignment` gave it, in the next generation.
    fn rejoin(
        members: &BTreeMap<String, Subscription>,
        assignment: &BTreeMap<String, Vec<TopicPartition>>,
    ) -> BTreeMap<String, Subscription> {
        let next = members
            .values()
            .filter_map(|s| s.generation)
            .max()
            .unwrap_or(0)
            + 1;
        members
            .iter()
            .map(|(id, s)| (id.clone(), s.clone().owning(assignment[id].clone(), next)))
            .collect()
    }

    /// Seeded from `PROPTEST_RNG_SEED` or the clock, printed so a failure replays.
    fn config() -> ProptestConfig {
        let seed = std::env::var("PROPTEST_RNG_SEED")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
        println!("group::assignor proptests: PROPTEST_RNG_SEED={seed}");
        ProptestConfig {
            rng_seed: RngSeed::Fixed(seed),
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        // Scenario: random groups through every assignor; prevents lost, doubled or
        // unsubscribed partitions, and cooperative withholding anything but transfers.
        #[test]
        fn every_assignor_gives_each_partition_to_one_subscriber(
            (partitions, members) in scenario(false),
        ) {
            for assignor in [&RangeAssignor as &dyn Assignor, &RoundRobinAssignor, &StickyAssignor] {
                let assignment = assignor.assign(&partitions, &members);
                check_valid(&partitions, &members, &assignment, true)?;
            }
            let sticky = StickyAssignor.assign(&partitions, &members);
            let cooperative = CooperativeStickyAssignor.assign(&partitions, &members);
            check_valid(&partitions, &members, &cooperative, false)?;
            let highest = members.values().map(|s| s.generation).max().flatten();
            for (id, list) in &sticky {
                for p in list {
                    if cooperative[id].contains(p) {
                        continue;
                    }
                    let holder = members.iter().find(|&(other, s)| {
                        other != id && s.generation == highest && s.owned_partitions.contains(p)
                    });
                    prop_assert!(holder.is_some(), "{p} withheld from {id} though nobody else holds it");
                }
                prop_assert!(cooperative[id].iter().all(|p| list.contains(p)), "cooperative ⊆ sticky");
            }
        }

        // Scenario: the same group twice, and with every list inside the subscriptions
        // reversed; prevents output that depends on anything but the input's content.
        #[test]
        fn assignments_are_deterministic((partitions, members) in scenario(false)) {
            let reversed: BTreeMap<String, Subscription> = members
                .iter()
                .map(|(id, s)| {
                    let mut s = s.clone();
                    s.topics.reverse();
                    s.owned_partitions.reverse();
                    (id.clone(), s)
                })
                .collect();
            for assignor in ALL {
                let once = assignor.assign(&partitions, &members);
                prop_assert_eq!(&once, &assignor.assign(&partitions, &members));
                prop_assert_eq!(&once, &assignor.assign(&partitions, &reversed));
            }
        }

        // Scenario: random groups with identical subscriptions; prevents counts differing by
        // more than one, and cooperative needing more than one follow-up round.
        #[test]
        fn sticky_is_fully_balanced_for_identical_subscriptions(
            (partitions, members) in scenario(true),
        ) {
            let assignment = StickyAssignor.assign(&partitions, &members);
            let counts = assignment.values().map(Vec::len);
            let spread = counts.clone().max().unwrap() - counts.min().unwrap();
            prop_assert!(spread <= 1, "counts differ by {spread}: {assignment:?}");

            let first = CooperativeStickyAssignor.assign(&partitions, &members);
            let second = CooperativeStickyAssignor.assign(&partitions, &rejoin(&members, &first));
            check_valid(&partitions, &members, &second, true)?;
        }

        // Scenario: members of a sticky group (identical subscriptions) leave and join, the
        // rest rejoin with what they own; prevents revoking more partitions than balance needs:
        // the members owning most keep the P % C larger shares, everybody else keeps the rest.
        #[test]
        fn sticky_moves_the_fewest_partitions_for_identical_subscriptions(
            (partitions, members) in scenario(true),
            leaving in any::<u8>(),
            joining in 0usize..3,
        ) {
            let topics = members.values().next().unwrap().topics.clone();
            let first = StickyAssignor.assign(&partitions, &members);
            let mut next: BTreeMap<String, Subscription> = rejoin(&members, &first)
                .into_iter()
                .enumerate()
                .filter(|(i, _)| leaving & (1 << (i % 8)) == 0)
                .map(|(_, member)| member)
                .collect();
            for j in 0..joining {
                next.insert(format!("new{j}"), Subscription::new(topics.clone()));
            }
            let second = StickyAssignor.assign(&partitions, &next);
            check_valid(&partitions, &next, &second, true)?;

            let total: usize = second.values().map(Vec::len).sum();
            let mut kept: Vec<usize> = next.values().map(|s| s.owned_partitions.len()).collect();
            kept.sort_unstable_by(|a, b| b.cmp(a));
            let (floor, extra) = (total / kept.len().max(1), total % kept.len().max(1));
            let fewest: usize = (0..)
                .zip(&kept)
                .map(|(rank, &k)| k.saturating_sub(floor + usize::from(rank < extra)))
                .sum();
            let revoked: usize = next
                .iter()
                .map(|(id, s)| s.owned_partitions.iter().filter(|p| !second[id].contains(p)).count())
                .sum();
            prop_assert_eq!(revoked, fewest);
        }

        // Scenario: random groups with mixed subscriptions; prevents a member holding two more
        // than another that could take one of its partitions.
        #[test]
        fn sticky_is_as_balanced_as_subscriptions_allow((partitions, members) in scenario(false)) {
            let assignment = StickyAssignor.assign(&partitions, &members);
            check_balanced(&members, &assignment)?;
        }

        // Scenario: members rejoin owning what sticky gave them; prevents a rebalance with
        // nothing changed from moving any partition.
        #[test]
        fn sticky_is_stable_when_members_rejoin_with_its_output(
            (partitions, members) in scenario(false),
        ) {
            for assignor in [&StickyAssignor as &dyn Assignor, &CooperativeStickyAssignor] {
                let first = StickyAssignor.assign(&partitions, &members);
                let again = assignor.assign(&partitions, &rejoin(&members, &first));
                prop_assert_eq!(&first, &again, "{}", assignor.name());
            }
        }
    }
}
