//! Lowering: a [`CompileRequest`] becomes a [`Program`] of kernels with a planned arena.
//!
//! Every needed non-source node becomes one [`Kernel`]: fusion is decided before lowering, by
//! the fusion passes, which replace a main op and its elementwise consumers (or a tree of
//! elementwise ops) with one [`Op::Fused`] node. This file makes the buffers and the kernels
//! (epilogues via `expr.rs`: a fused node's expression, or the single step of a lone
//! elementwise node); `memory.rs` gives every temporary an arena offset by liveness (greedy by
//! size, 64-byte aligned); a reshape of a temporary, feed, variable or constant gets no
//! kernel but a [`BufferKind::Alias`] of its input's bytes; `concat.rs` lets a backend have a
//! concat's operands written in place ([`BufferKind::Part`]). [`interp`] runs a program with
//! the reference evaluator; it is the test oracle for lowering and the template backends
//! follow. `check.rs` holds [`Program::validate`].
//!
//! Invariants: lowering never evaluates user data except constants; everything that can be
//! wrong with a request (a dim left unknown, a placeholder that is not fed, an assign whose
//! target is not one of the request's variables) is an error naming the node, never a panic.

mod check;
mod concat;
mod expr;
pub mod interp;
mod memory;

pub use concat::{concat_part, part_is_contiguous, write_concat_operands_in_place};
pub use interp::run_program;
pub use memory::plan_keeping;

use crate::Tensor;
use crate::backend::CompileRequest;
use crate::eval::shared_source_value;
use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::program::{Buffer, BufferId, BufferKind, Expr, Kernel, Program, VariableUpdate};
use crate::shape::Dims;
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Lowers a compile request: groups its nodes into kernels, orders them and plans the arena.
///
/// Errors name the offending node: a needed node whose dims are not all known, a needed
/// placeholder or variable missing from the request's lists (or listed twice, or in the wrong
/// list), a constant whose value cannot be made, or an id that is not in the graph.
pub fn lower(request: &CompileRequest<'_>) -> Result<Program> {
    let graph = request.graph;
    check_request(request)?;
    let roots: Vec<NodeId> = request
        .fetches
        .iter()
        .chain(&request.targets)
        .copied()
        .collect();
    let order = graph.topo_order_of(roots.iter().copied());
    let dims = concrete_dims(graph, &order, &request.feeds, &request.variables)?;
    let computed: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&n| !graph.node(n).op.is_source())
        .collect();

    let mut b = Builder {
        graph,
        dims: &dims,
        buffers: Vec::new(),
        of: HashMap::new(),
    };
    let feeds = b.list(&request.feeds, BufferKind::Feed)?;
    let variables = b.list(&request.variables, BufferKind::Variable)?;
    b.constants(&order)?;
    // Each computed node gets its buffer: the first fetch position holding it, else a view of
    // its input's bytes for a reshape that need not copy, else the arena (offsets are assigned
    // by `memory::plan` below).
    // Nodes without a kernel: reshapes viewing their input's bytes, and groups.
    let mut aliases = HashSet::new();
    for &n in &computed {
        // A group computes nothing: its value is a constant and it gets no kernel (its
        // operands still run, being in `order`).
        if graph.node(n).op == Op::Group {
            aliases.insert(n);
            b.add(n, BufferKind::Constant(Arc::new(Tensor::scalar(0.0))))?;
            continue;
        }
        let kind = match request.fetches.iter().position(|&f| f == n) {
            Some(j) => BufferKind::Output(j),
            None => match b.reshaped_source(n) {
                Some(of) => {
                    aliases.insert(n);
                    BufferKind::Alias { of }
                }
                None => BufferKind::Temporary { offset: 0 },
            },
        };
        b.add(n, kind)?;
    }
    let kernels = computed
        .iter()
        .filter(|n| !aliases.contains(*n))
        .map(|&n| b.kernel(n))
        .collect::<Result<Vec<_>>>()?;
    let updates = variable_updates(&kernels, &b.buffers)?;
    let fetches = request.fetches.iter().map(|f| {
        // Every needed node has a buffer: sources above, every other node its kernel's.
        b.of.get(f).copied().ok_or_else(|| {
            Error::Invalid(format!(
                "lowering: fetch %{} has no buffer",
                graph.node(*f).name
            ))
        })
    });
    let fetches = fetches.collect::<Result<Vec<_>>>()?;
    let mut program = Program {
        buffers: b.buffers,
        kernels,
        feeds,
        variables,
        fetches,
        updates,
        arena_bytes: 0,
        sum_temporary_bytes: 0,
    };
    memory::plan(&mut program)?;
    Ok(program)
}

/// Every id of the request is in the graph, and no feed or variable is listed twice.
fn check_request(request: &CompileRequest<'_>) -> Result<()> {
    let graph = request.graph;
    let all = [
        &request.fetches,
        &request.targets,
        &request.feeds,
        &request.variables,
    ];
    if let Some(id) = all
        .iter()
        .flat_map(|l| l.iter())
        .find(|&&id| graph.get(id).is_none())
    {
        return Err(Error::Invalid(format!(
            "lowering: node {id} is not in the graph"
        )));
    }
    for (list, what) in [(&request.feeds, "feeds"), (&request.variables, "variables")] {
        let mut seen = HashSet::new();
        if let Some(&id) = list.iter().find(|&&id| !seen.insert(id)) {
            return Err(Error::Invalid(format!(
                "lowering: %{} appears twice in the request's {what}",
                graph.node(id).name
            )));
        }
    }
    Ok(())
}

/// The update of each variable written by an assign or optimizer update kernel (operand `i <
/// k` of an op writing `k` variables, its new value at element `i * numel`), keeping only the
/// last one per variable: of several updates to one variable only the last is observable
/// (commits run in order), so the others are dropped and their values die with their kernels.
fn variable_updates(kernels: &[Kernel], buffers: &[Buffer]) -> Result<Vec<VariableUpdate>> {
    let mut updates: Vec<VariableUpdate> = Vec::new();
    for kernel in kernels {
        let k = kernel.main.as_ref().map_or(0, Op::updated_variables);
        for i in 0..k {
            let target = kernel.inputs.get(i).map(|&v| &buffers[v.index()]);
            let Some(&Buffer {
                kind: BufferKind::Variable(variable),
                ..
            }) = target
            else {
                return Err(Error::Invalid(format!(
                    "lowering: %{} writes operand {i}, which is not one of the request's \
                     variables",
                    kernel.name
                )));
            };
            let numel = target.map_or(0, Buffer::numel);
            updates.retain(|u| u.variable != variable);
            updates.push(VariableUpdate {
                variable,
                value: kernel.output,
                node: kernel.name.clone(),
                offset: i * numel,
            });
        }
    }
    Ok(updates)
}

/// The concrete dims of every needed node (and of every fed placeholder and passed variable),
/// or an error naming the first node with an unknown dim.
fn concrete_dims(
    graph: &Graph,
    order: &[NodeId],
    feeds: &[NodeId],
    variables: &[NodeId],
) -> Result<HashMap<NodeId, Vec<usize>>> {
    let mut dims = HashMap::with_capacity(order.len());
    for &id in order.iter().chain(feeds).chain(variables) {
        let node = graph.node(id);
        let d = node.ty.shape.to_dims().ok_or_else(|| Error::Op {
            node: node.name.clone(),
            op: node.op.name(),
            message: format!(
                "type {} has unknown dims at lowering; every placeholder's shape must be fixed \
                 from the feeds first",
                node.ty
            ),
        })?;
        dims.insert(id, d.to_vec());
    }
    Ok(dims)
}

/// Buffers made so far and the node -> buffer map.
struct Builder<'a> {
    graph: &'a Graph,
    dims: &'a HashMap<NodeId, Vec<usize>>,
    buffers: Vec<Buffer>,
    of: HashMap<NodeId, BufferId>,
}

impl Builder<'_> {
    /// Adds the buffer holding node `id`'s value, or returns the one it has. A feed or
    /// variable kind must name a placeholder or variable that has no buffer yet.
    fn add(&mut self, id: NodeId, kind: BufferKind) -> Result<BufferId> {
        let node = self.graph.node(id);
        let listed = match kind {
            BufferKind::Feed(_) => Some(("placeholder", matches!(node.op, Op::Input(_)))),
            BufferKind::Variable(_) => Some(("variable", matches!(node.op, Op::Var(_)))),
            _ => None,
        };
        if let Some((what, is_one)) = listed
            && (!is_one || self.of.contains_key(&id))
        {
            return Err(Error::Invalid(format!(
                "lowering: the request lists %{} ({}) as a {what}",
                node.name,
                node.op.name()
            )));
        }
        if let Some(&b) = self.of.get(&id) {
            return Ok(b);
        }
        let id32 = u32::try_from(self.buffers.len())
            .map_err(|_| Error::Invalid("lowering: more than 2^32 buffers".into()))?;
        // Invariant: `concrete_dims` covered every needed node, feed and variable.
        let dims: Dims = self.dims[&id].iter().copied().collect();
        self.buffers.push(Buffer {
            name: node.name.clone(),
            dtype: node.ty.dtype,
            dims,
            kind,
        });
        self.of.insert(id, BufferId(id32));
        Ok(BufferId(id32))
    }

    /// Buffers for the request's feeds or variables, `kind(i)` for the i-th.
    fn list(&mut self, ids: &[NodeId], kind: fn(usize) -> BufferKind) -> Result<Vec<BufferId>> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| self.add(id, kind(i)))
            .collect()
    }

    /// Buffers for the constants in `order`; a placeholder or variable there that the request
    /// does not list is an error.
    fn constants(&mut self, order: &[NodeId]) -> Result<()> {
        for &id in order {
            let node = self.graph.node(id);
            match &node.op {
                Op::Const(src) => {
                    let value = shared_source_value(src).map_err(|message| Error::Eval {
                        node: node.name.clone(),
                        op: node.op.name(),
                        message,
                    })?;
                    self.add(id, BufferKind::Constant(value))?;
                }
                Op::Input(_) if !self.of.contains_key(&id) => {
                    return Err(Error::Feed {
                        name: node.name.clone(),
                        message: "the run needs this placeholder but the request does not feed it"
                            .into(),
                    });
                }
                Op::Var(_) if !self.of.contains_key(&id) => {
                    return Err(Error::Invalid(format!(
                        "lowering: the run reads variable %{} but the request does not pass it",
                        node.name
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The buffer whose bytes node `n` can view instead of copying them: `n` is a plain
    /// reshape or a stop_gradient (row-major, so the same bytes in the same order) of a temporary, a feed, a
    /// variable or a constant (kernels only read those during a run), or of an alias of one.
    /// An output is copied (a fetch's bytes are the caller's result tensor), and so is an
    /// assign's result (it becomes a variable's new value and keeps its own buffer).
    fn reshaped_source(&self, n: NodeId) -> Option<BufferId> {
        if !matches!(self.graph.node(n).op, Op::Reshape { .. } | Op::StopGradient) {
            return None;
        }
        let inputs = self.graph.inputs(n);
        let &[input] = inputs.as_slice() else {
            return None;
        };
        if self.graph.node(input).op.has_side_effect() {
            return None;
        }
        let source = *self.of.get(&input)?;
        match self.buffers[source.index()].kind {
            BufferKind::Temporary { .. }
            | BufferKind::Feed(_)
            | BufferKind::Variable(_)
            | BufferKind::Constant(_) => Some(source),
            BufferKind::Alias { of } => Some(of),
            BufferKind::Output(_) | BufferKind::Part { .. } => None,
        }
    }

    /// The kernel computing node `n`; every buffer it reads or writes exists already.
    fn kernel(&self, n: NodeId) -> Result<Kernel> {
        let graph = self.graph;
        let node = graph.node(n);
        let fail = |message: String| Error::Op {
            node: node.name.clone(),
            op: node.op.name(),
            message,
        };
        let operands = graph.inputs(n);
        // Invariant: every operand of a needed node is needed, so it has a buffer.
        let buffers: Vec<BufferId> = operands.iter().map(|i| self.of[i]).collect();
        let out = &self.dims[&n];
        let operand_dims: Vec<&[usize]> =
            operands.iter().map(|i| self.dims[i].as_slice()).collect();
        let (main, inputs, epilogue) = match &node.op {
            Op::Unary(_) | Op::Binary(_) | Op::BiasAdd { .. } => {
                let e = expr::single(&node.op, &buffers, &operand_dims, out).map_err(fail)?;
                (None, Vec::new(), e)
            }
            Op::BroadcastLike => {
                let e = expr::broadcast(buffers[0], operand_dims[0], out).map_err(fail)?;
                (None, Vec::new(), e)
            }
            Op::Fused(f) => {
                let e = expr::fused(f.expr(), &buffers, &operand_dims, out).map_err(fail)?;
                let k = f.main_arity();
                let main = match f.main() {
                    Some(m) => {
                        let rank = operand_dims.first().map_or(0, |d| d.len());
                        Some(normalize_main_op(m, rank, out).map_err(fail)?)
                    }
                    None => None,
                };
                (main, buffers[..k.min(buffers.len())].to_vec(), e)
            }
            op => {
                let rank = operand_dims.first().map_or(0, |d| d.len());
                let main = Some(normalize_main_op(op, rank, out).map_err(fail)?);
                (main, buffers, Expr::identity())
            }
        };
        Ok(Kernel {
            name: node.name.clone(),
            nodes: vec![node.name.clone()],
            main,
            inputs,
            epilogue,
            output: self.of[&n], // every computed node got its buffer before kernels are built
        })
    }
}

/// A kernel's main op: `op` (a kernel op, see [`Op::is_kernel_main`]) with its attributes in
/// normal form for operands of rank `rank` (the first operand's) and output dims `out`: axes
/// in `0..rank`, a reduction's axes listed, sorted and distinct, reshape's shape and slice's
/// size equal to `out`. Normalising a normal op gives it back unchanged, which is how
/// [`Program::validate`] checks the form. Errors mean an op inconsistent with its operands
/// (the graph was checked by inference, so a lowered program never has one).
pub fn normalize_main_op(op: &Op, rank: usize, out: &[usize]) -> Result<Op, String> {
    let axis = |a: i64| -> Result<i64, String> {
        let r = rank as i64;
        if a < -r || a >= r {
            return Err(format!("axis {a} is out of range for rank {rank}"));
        }
        Ok(if a < 0 { a + r } else { a })
    };
    let out_axis = |a: i64| -> Result<i64, String> {
        let r = out.len() as i64;
        if a < -r || a >= r {
            return Err(format!(
                "axis {a} is out of range for the result's rank {r}"
            ));
        }
        Ok(if a < 0 { a + r } else { a })
    };
    let out_i64 = || out.iter().map(|&d| d as i64).collect::<Vec<_>>();
    if !op.is_kernel_main() {
        return Err(format!("{} is not a main op of a kernel", op.name()));
    }
    Ok(match op {
        Op::Reduce { op, axes, keepdims } => {
            let mut list: Vec<i64> = match axes {
                Some(axes) => axes.iter().map(|&a| axis(a)).collect::<Result<_, _>>()?,
                None => (0..rank as i64).collect(),
            };
            list.sort_unstable();
            list.dedup();
            Op::Reduce {
                op: *op,
                axes: Some(list),
                keepdims: *keepdims,
            }
        }
        Op::Softmax { axis: a } => Op::Softmax { axis: axis(*a)? },
        Op::LogSoftmax { axis: a } => Op::LogSoftmax { axis: axis(*a)? },
        Op::Concat { axis: a } => Op::Concat { axis: axis(*a)? },
        Op::ArgMax {
            axis: a,
            output_type,
        } => Op::ArgMax {
            axis: axis(*a)?,
            output_type: *output_type,
        },
        Op::Gather { axis: a } => Op::Gather { axis: axis(*a)? },
        // stop_gradient is the identity at run time: a reshape to its own shape.
        Op::Reshape { .. } | Op::StopGradient => Op::Reshape { shape: out_i64() },
        // Both count their axis in the result's rank.
        Op::OneHot {
            depth,
            on_value,
            off_value,
            axis: a,
        } => Op::OneHot {
            depth: *depth,
            on_value: *on_value,
            off_value: *off_value,
            axis: out_axis(*a)?,
        },
        Op::GatherGrad { axis: a, size } => Op::GatherGrad {
            axis: out_axis(*a)?,
            size: *size,
        },
        Op::Slice { begin, .. } => {
            if begin.len() != out.len() {
                return Err(format!(
                    "slice begin {begin:?} does not match rank {}",
                    out.len()
                ));
            }
            Op::Slice {
                begin: begin.clone(),
                size: out_i64(),
            }
        }
        op => op.clone(),
    })
}

/// An axis of a normalised main op as an index (normal form guarantees `0..rank`).
pub fn axis_index(axis: i64) -> usize {
    usize::try_from(axis).unwrap_or(usize::MAX)
}
