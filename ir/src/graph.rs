//! The dataflow graph of one stage, over petgraph's `StableGraph`.
//!
//! Nodes hold an [`Op`], the types of its results and annotations. An edge
//! `a → b` carries which result of `a` (`port`) feeds which operand of `b`
//! (`slot`). Node indices stay valid when other nodes are removed, so passes
//! can rewrite in place.

use crate::error::IrError;
use crate::op::{Op, TensorType};
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::fmt;

/// One result of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    pub node: NodeIndex,
    pub port: u32,
}

impl ValueRef {
    pub fn new(node: NodeIndex, port: u32) -> Self {
        ValueRef { node, port }
    }
}

/// Roles that passes look for. They mark meaning, not names: passes rely on
/// them instead of tensor names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The first block's adaLN-modulated hidden state (TeaCache compares it).
    ModulatedInput,
    /// The timestep (and guidance/text) conditioning embedding.
    TimestepEmbedding,
    /// A residual stream entering the block stack.
    ResidualIn,
    /// A residual stream leaving the block stack.
    ResidualOut,
    /// Anything else, by name.
    Other(String),
}

impl Role {
    pub fn name(&self) -> &str {
        match self {
            Role::ModulatedInput => "modulated_input",
            Role::TimestepEmbedding => "timestep_embedding",
            Role::ResidualIn => "residual_in",
            Role::ResidualOut => "residual_out",
            Role::Other(s) => s,
        }
    }
    pub fn from_name(s: &str) -> Role {
        match s {
            "modulated_input" => Role::ModulatedInput,
            "timestep_embedding" => Role::TimestepEmbedding,
            "residual_in" => Role::ResidualIn,
            "residual_out" => Role::ResidualOut,
            other => Role::Other(other.to_string()),
        }
    }
}

/// Annotation on a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Annotation {
    /// The node belongs to repeated block `i` of a block stack.
    Block(u32),
    /// The node's result plays this role (every result, for a multi-result
    /// node: the split ending FLUX's stack yields both residual streams).
    Role(Role),
    /// The node belongs to dispatch region `k`: the region's nodes run as
    /// one kernel (see [`crate::regions`] for the rules a region obeys).
    Dispatch(u32),
    /// Result `result` of the node is stored in buffer `id` of the stage's
    /// memory plan (written by the `memory-plan` pass; results without one
    /// are not materialised or are stage inputs/weights).
    Buffer { id: u32, result: u32 },
}

impl fmt::Display for Annotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Annotation::Block(i) => write!(f, "block({i})"),
            Annotation::Role(r) => write!(f, "role({})", r.name()),
            Annotation::Dispatch(k) => write!(f, "dispatch({k})"),
            Annotation::Buffer { id, result: 0 } => write!(f, "buffer({id})"),
            Annotation::Buffer { id, result } => write!(f, "buffer({id}, result={result})"),
        }
    }
}

/// A node: operation, result types, annotations and an optional label
/// (usually the checkpoint module path it came from, for diagnostics).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub outputs: Vec<TensorType>,
    pub annotations: Vec<Annotation>,
    pub label: Option<String>,
}

impl Node {
    pub fn block(&self) -> Option<u32> {
        self.annotations.iter().find_map(|a| match a {
            Annotation::Block(i) => Some(*i),
            _ => None,
        })
    }
    /// The dispatch region the node belongs to, if any.
    pub fn dispatch(&self) -> Option<u32> {
        self.annotations.iter().find_map(|a| match a {
            Annotation::Dispatch(k) => Some(*k),
            _ => None,
        })
    }
    /// The memory-plan buffer holding result `result`, if any.
    pub fn buffer(&self, result: u32) -> Option<u32> {
        self.annotations.iter().find_map(|a| match a {
            Annotation::Buffer { id, result: r } if *r == result => Some(*id),
            _ => None,
        })
    }
    pub fn has_role(&self, r: &Role) -> bool {
        self.annotations.iter().any(|a| matches!(a, Annotation::Role(x) if x == r))
    }
}

/// Edge payload: result `port` of the source feeds operand `slot` of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub port: u32,
    pub slot: u32,
}

/// A stage's dataflow graph with named outputs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub g: StableGraph<Node, Edge>,
    /// Named results of the stage, in order.
    pub outputs: Vec<(String, ValueRef)>,
}

impl Graph {
    pub fn new() -> Self {
        Graph::default()
    }

    /// Add a node whose result types are inferred from its operands.
    pub fn add(&mut self, op: Op, operands: &[ValueRef]) -> Result<NodeIndex, IrError> {
        let tys: Vec<&TensorType> = operands.iter().map(|v| self.value_type(*v)).collect::<Result<_, _>>()?;
        let outputs = crate::infer::infer(&op, &tys).map_err(|msg| IrError::Verify {
            op: op.mnemonic().to_string(),
            value: "(new node)".into(),
            message: msg,
        })?;
        Ok(self.add_unchecked(op, operands, outputs))
    }

    /// Add a node with given result types (the parser and passes use this;
    /// run the verifier afterwards).
    pub fn add_unchecked(&mut self, op: Op, operands: &[ValueRef], outputs: Vec<TensorType>) -> NodeIndex {
        let n = self.g.add_node(Node { op, outputs, annotations: Vec::new(), label: None });
        for (slot, v) in operands.iter().enumerate() {
            self.g.add_edge(v.node, n, Edge { port: v.port, slot: slot as u32 });
        }
        n
    }

    pub fn node(&self, n: NodeIndex) -> &Node {
        &self.g[n]
    }

    pub fn node_mut(&mut self, n: NodeIndex) -> &mut Node {
        &mut self.g[n]
    }

    pub fn contains(&self, n: NodeIndex) -> bool {
        self.g.contains_node(n)
    }

    /// Type of a value, or an error if the node or port does not exist.
    pub fn value_type(&self, v: ValueRef) -> Result<&TensorType, IrError> {
        let node = self.g.node_weight(v.node).ok_or_else(|| IrError::Graph(format!("node {} does not exist", v.node.index())))?;
        node.outputs
            .get(v.port as usize)
            .ok_or_else(|| IrError::Graph(format!("`{}` node {} has no result {}", node.op.mnemonic(), v.node.index(), v.port)))
    }

    /// Operands of `n` in slot order.
    pub fn operands(&self, n: NodeIndex) -> Vec<ValueRef> {
        let mut es: Vec<(u32, ValueRef)> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| (e.weight().slot, ValueRef::new(e.source(), e.weight().port)))
            .collect();
        es.sort_by_key(|(s, _)| *s);
        es.into_iter().map(|(_, v)| v).collect()
    }

    /// Nodes that use any result of `n` (deduplicated, index order).
    pub fn users(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut us: Vec<NodeIndex> = self.g.neighbors_directed(n, Direction::Outgoing).collect();
        us.sort();
        us.dedup();
        us
    }

    /// Number of uses of value `v` (as operands and as graph outputs).
    pub fn use_count(&self, v: ValueRef) -> usize {
        let edges = self.g.edges_directed(v.node, Direction::Outgoing).filter(|e| e.weight().port == v.port).count();
        edges + self.outputs.iter().filter(|(_, o)| *o == v).count()
    }

    /// Redirect every use of `from` (operands and graph outputs) to `to`.
    pub fn replace_all_uses(&mut self, from: ValueRef, to: ValueRef) {
        let uses: Vec<_> = self
            .g
            .edges_directed(from.node, Direction::Outgoing)
            .filter(|e| e.weight().port == from.port)
            .map(|e| (e.id(), e.target(), e.weight().slot))
            .collect();
        for (id, target, slot) in uses {
            self.g.remove_edge(id);
            self.g.add_edge(to.node, target, Edge { port: to.port, slot });
        }
        for (_, o) in self.outputs.iter_mut() {
            if *o == from {
                *o = to;
            }
        }
    }

    pub fn remove_node(&mut self, n: NodeIndex) -> Option<Node> {
        self.g.remove_node(n)
    }

    /// Stage inputs as (name, node) in node order.
    pub fn inputs(&self) -> Vec<(String, NodeIndex)> {
        self.g
            .node_indices()
            .filter_map(|n| match &self.g[n].op {
                Op::Input { name, .. } => Some((name.clone(), n)),
                _ => None,
            })
            .collect()
    }

    /// Weights referenced, as (name, node) in node order.
    pub fn params(&self) -> Vec<(String, NodeIndex)> {
        self.g
            .node_indices()
            .filter_map(|n| match &self.g[n].op {
                Op::Param { name, .. } => Some((name.clone(), n)),
                _ => None,
            })
            .collect()
    }

    pub fn output(&self, name: &str) -> Option<ValueRef> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// Nodes in a deterministic topological order (operands before users,
    /// ties broken by node index). Errors on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeIndex>, IrError> {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        let mut indeg: HashMap<NodeIndex, usize> = HashMap::new();
        for n in self.g.node_indices() {
            indeg.insert(n, self.g.edges_directed(n, Direction::Incoming).count());
        }
        let mut ready: BinaryHeap<Reverse<NodeIndex>> =
            indeg.iter().filter(|(_, &d)| d == 0).map(|(&n, _)| Reverse(n)).collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        if order.len() != indeg.len() {
            return Err(IrError::Graph(format!("graph has a cycle through {} nodes", indeg.len() - order.len())));
        }
        Ok(order)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// Number of compute ops (everything but inputs, params and constants).
    pub fn op_count(&self) -> usize {
        self.g.node_indices().filter(|&n| !self.g[n].op.is_source()).count()
    }
}
