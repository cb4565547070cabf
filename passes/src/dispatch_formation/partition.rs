//! The partition `dispatch-formation` builds: groups of nodes that become
//! regions, grown by the epilogue and prologue rules of the module doc
//! while keeping the groups orderable.

use super::classes::{class, is_transcendental, reuses, Class};
use omnic_ir::{Graph, ValueRef};
use petgraph::stable_graph::NodeIndex;
use petgraph::Direction;
use std::collections::{BTreeSet, HashMap, HashSet};

/// A group of nodes being formed into a region.
pub(super) struct Group {
    pub(super) members: Vec<NodeIndex>,
    anchor: bool,
    transcendental: bool,
    min_pos: usize,
    max_pos: usize,
}

/// The partition under construction.
pub(super) struct Partition<'g> {
    g: &'g Graph,
    pos: HashMap<NodeIndex, usize>,
    group_of: HashMap<NodeIndex, usize>,
    pub(super) groups: Vec<Option<Group>>,
}

impl<'g> Partition<'g> {
    pub(super) fn new(g: &'g Graph, topo: &[NodeIndex]) -> Self {
        Partition { g, pos: topo.iter().enumerate().map(|(i, &n)| (n, i)).collect(), group_of: HashMap::new(), groups: Vec::new() }
    }

    fn group(&self, k: usize) -> &Group {
        self.groups[k].as_ref().expect("live group")
    }

    fn singleton(&mut self, n: NodeIndex) -> usize {
        let op = &self.g.node(n).op;
        let p = self.pos[&n];
        self.groups.push(Some(Group { members: vec![n], anchor: class(op) == Class::Anchor, transcendental: is_transcendental(op), min_pos: p, max_pos: p }));
        self.group_of.insert(n, self.groups.len() - 1);
        self.groups.len() - 1
    }

    /// Whether merging groups `a` and `b` would put a path from the merged
    /// group back into it through other groups or nodes (a cycle between
    /// regions). Only groups starting before the merged group's last node
    /// can lead back into it, which bounds the search.
    fn creates_cycle(&self, a: usize, b: usize) -> bool {
        let (ga, gb) = (self.group(a), self.group(b));
        let max_pos = ga.max_pos.max(gb.max_pos);
        let inside = |x: NodeIndex| matches!(self.group_of.get(&x), Some(&k) if k == a || k == b);
        let mut stack: Vec<NodeIndex> = Vec::new();
        for &m in ga.members.iter().chain(&gb.members) {
            stack.extend(self.g.g.neighbors_directed(m, Direction::Outgoing).filter(|&s| !inside(s)));
        }
        let (mut seen_nodes, mut seen_groups) = (HashSet::new(), HashSet::new());
        while let Some(x) = stack.pop() {
            match self.group_of.get(&x) {
                Some(&k) if k == a || k == b => return true,
                Some(&k) => {
                    if !seen_groups.insert(k) || self.group(k).min_pos > max_pos {
                        continue;
                    }
                    for &m in &self.group(k).members {
                        stack.extend(self.g.g.neighbors_directed(m, Direction::Outgoing).filter(|s| self.group_of.get(s) != Some(&k)));
                    }
                }
                None => {
                    if seen_nodes.insert(x) && self.pos[&x] <= max_pos {
                        stack.extend(self.g.g.neighbors_directed(x, Direction::Outgoing));
                    }
                }
            }
        }
        false
    }

    /// Move group `b` into group `a`.
    fn merge(&mut self, a: usize, b: usize) {
        let gb = self.groups[b].take().expect("live group");
        for &m in &gb.members {
            self.group_of.insert(m, a);
        }
        let ga = self.groups[a].as_mut().expect("live group");
        ga.members.extend(gb.members);
        ga.anchor |= gb.anchor;
        ga.transcendental |= gb.transcendental;
        ga.min_pos = ga.min_pos.min(gb.min_pos);
        ga.max_pos = ga.max_pos.max(gb.max_pos);
    }

    /// Groups `n` may join as an epilogue, in operand order.
    fn epilogue_candidates(&self, n: NodeIndex) -> Vec<usize> {
        let node = self.g.node(n);
        let ops = self.g.operands(n);
        let group = |v: &ValueRef| self.group_of.get(&v.node).copied();
        match class(&node.op) {
            Class::Elementwise => {
                let mut out = Vec::new();
                for v in &ops {
                    let same_shape = self.g.value_type(*v).is_ok_and(|t| node.outputs.first().is_some_and(|o| o.shape == t.shape));
                    if let (Some(k), true) = (group(v), same_shape) {
                        if !out.contains(&k) {
                            out.push(k);
                        }
                    }
                }
                out
            }
            Class::View => ops.first().and_then(group).into_iter().collect(),
            Class::Concat => {
                let gs: BTreeSet<Option<usize>> = ops.iter().map(group).collect();
                match gs.into_iter().collect::<Vec<_>>().as_slice() {
                    [Some(k)] => vec![*k],
                    _ => vec![],
                }
            }
            Class::Anchor | Class::Gathers | Class::Source => vec![],
        }
    }

    /// Phase 1: every compute node, in topological order, joins an operand's
    /// group as an epilogue or starts one. Returns how many joined.
    pub(super) fn epilogues(&mut self, topo: &[NodeIndex]) -> i64 {
        let mut joined = 0;
        for &n in topo {
            if class(&self.g.node(n).op) == Class::Source {
                continue;
            }
            let cands = self.epilogue_candidates(n);
            let me = self.singleton(n);
            if let Some(&k) = cands.iter().find(|&&k| !self.creates_cycle(k, me)) {
                self.merge(k, me);
                joined += 1;
            }
        }
        joined
    }

    /// The single group using results of group `k`, if there is exactly
    /// one and no result of `k` is a stage output.
    fn sole_user(&self, k: usize, graph_outs: &HashSet<NodeIndex>) -> Option<usize> {
        let mut users = BTreeSet::new();
        for &m in &self.group(k).members {
            if graph_outs.contains(&m) {
                return None;
            }
            for s in self.g.g.neighbors_directed(m, Direction::Outgoing) {
                match self.group_of.get(&s) {
                    Some(&u) if u != k => {
                        users.insert(u);
                    }
                    _ => {}
                }
            }
        }
        match users.len() {
            1 => users.into_iter().next(),
            _ => None,
        }
    }

    /// Whether group `k`, fused into group `into`, would be recomputed for
    /// reused reads while containing costly ops.
    fn costly_recompute(&self, k: usize, into: usize) -> bool {
        let gk = self.group(k);
        if !gk.transcendental {
            return false;
        }
        let set: HashSet<NodeIndex> = gk.members.iter().copied().collect();
        for &u in &self.group(into).members {
            for v in self.g.operands(u) {
                if set.contains(&v.node) && reuses(self.g, u, v) {
                    return true;
                }
            }
        }
        false
    }

    /// Phase 2: anchor-less groups move into their sole user group, to a
    /// fixed point. Returns how many moved.
    pub(super) fn prologues(&mut self) -> i64 {
        let graph_outs: HashSet<NodeIndex> = self.g.outputs.iter().map(|(_, v)| v.node).collect();
        let mut moved = 0;
        loop {
            let mut changed = false;
            // Consumers first: later groups (by first node) are visited first.
            let mut order: Vec<usize> = (0..self.groups.len()).filter(|&k| self.groups[k].is_some()).collect();
            order.sort_by_key(|&k| std::cmp::Reverse(self.group(k).min_pos));
            for k in order {
                if self.groups[k].is_none() || self.group(k).anchor {
                    continue;
                }
                let Some(into) = self.sole_user(k, &graph_outs) else { continue };
                if self.costly_recompute(k, into) || self.creates_cycle(into, k) {
                    continue;
                }
                self.merge(into, k);
                moved += 1;
                changed = true;
            }
            if !changed {
                return moved;
            }
        }
    }
}
