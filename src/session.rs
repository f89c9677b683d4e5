//! The session: owns the variables, compiles what a run needs and caches the result.
//!
//! A run names its feeds (placeholders and their tensors), fetches (values to return) and
//! targets (side-effect nodes such as assigns). The session checks every feed against its
//! placeholder, prunes the graph to what the fetches and targets need, fixes the placeholders'
//! shapes, compiles with its backend and caches the executable keyed by
//! (fetches, targets, feed shapes); a later run with the same key compiles nothing.

use crate::optimize::{OptimizeOptions, optimize_graph};
use crate::{BackendKind, Graph};
use kiln_ir::backend::{Backend, CompileRequest, Executable, ExecutableInfo, KernelTime};
use kiln_ir::eval::source_value;
use kiln_ir::shape::{Dims, fmt_dims};
use kiln_ir::{Error, NodeId, Op, Result, Shape, Tensor};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many compiled (fetches, targets, feed shapes) combinations a session keeps.
const DEFAULT_CACHE_CAPACITY: usize = 32;

/// A run's fetches and targets.
type RunRoots = (Vec<NodeId>, Vec<NodeId>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    fetches: Vec<NodeId>,
    targets: Vec<NodeId>,
    feeds: Vec<(NodeId, Dims)>,
}

/// One compiled run: the executable and the order in which it takes feeds and variables
/// (ids of the session's graph).
struct Compiled {
    executable: Box<dyn Executable>,
    feeds: Vec<NodeId>,
    variables: Vec<NodeId>,
}

/// What the last compilation cost and produced.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileStats {
    /// Wall time of pruning, lowering and code generation.
    pub time: Duration,
    /// CPU time (user + system, every thread of the process) over the same span, where the
    /// platform reports it: unlike `time`, not inflated by waiting for a core.
    pub cpu_time: Option<Duration>,
    /// Facts about the compiled code.
    pub info: ExecutableInfo,
}

/// Runs a graph: `Session::new(&graph)?.run(&[(input, &tensor)], &[output])`.
pub struct Session {
    graph: kiln_ir::Graph,
    optimize: OptimizeOptions,
    backend_kind: BackendKind,
    backend: Box<dyn Backend>,
    variables: HashMap<NodeId, Tensor>,
    cache: HashMap<CacheKey, Arc<Compiled>>,
    lru: VecDeque<CacheKey>,
    cache_capacity: usize,
    compilations: usize,
    last_compile: Option<CompileStats>,
    /// Placeholders each (fetches, targets) needs, so a run does not walk the graph.
    placeholders_needed: HashMap<RunRoots, Arc<Vec<NodeId>>>,
}

impl Session {
    /// A session on the default backend.
    pub fn new(graph: &Graph) -> Result<Session> {
        Session::with_backend(graph, BackendKind::default_kind())
    }

    /// A session on the given backend, optimising with its default pipeline.
    pub fn with_backend(graph: &Graph, backend: BackendKind) -> Result<Session> {
        Session::with_options(graph, backend, OptimizeOptions::default())
    }

    /// A session on the given backend with the given optimisation options. Variables get
    /// their initial values here.
    pub fn with_options(
        graph: &Graph,
        backend: BackendKind,
        optimize: OptimizeOptions,
    ) -> Result<Session> {
        let known = backend.pipeline().passes();
        if let Some(bad) = optimize
            .disabled
            .iter()
            .find(|d| !known.contains(&d.as_str()))
        {
            return Err(Error::Invalid(format!(
                "no pass named {bad:?}; the {} pipeline has: {}",
                backend.name(),
                known.join(", ")
            )));
        }
        let graph = graph.ir().clone();
        let mut variables = HashMap::new();
        for id in graph.variables() {
            let node = graph.node(id);
            let Op::Var(src) = &node.op else {
                unreachable!("variables() returns only vars")
            };
            let value = source_value(src).map_err(|message| Error::Eval {
                node: node.name.clone(),
                op: "var",
                message,
            })?;
            variables.insert(id, value);
        }
        Ok(Session {
            optimize,
            backend: backend.create()?,
            backend_kind: backend,
            graph,
            variables,
            cache: HashMap::new(),
            lru: VecDeque::new(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            compilations: 0,
            last_compile: None,
            placeholders_needed: HashMap::new(),
        })
    }

    /// The backend this session compiles for.
    pub fn backend(&self) -> &BackendKind {
        &self.backend_kind
    }

    /// The session's graph.
    pub fn graph(&self) -> &kiln_ir::Graph {
        &self.graph
    }

    /// How many times this session has compiled (for checking that the cache works).
    pub fn compilations(&self) -> usize {
        self.compilations
    }

    /// Time and facts of the most recent compilation (a cache hit compiles nothing).
    pub fn last_compile(&self) -> Option<&CompileStats> {
        self.last_compile.as_ref()
    }

    /// Bounds the number of compiled variants kept (least recently used go first).
    pub fn set_cache_capacity(&mut self, capacity: usize) {
        self.cache_capacity = capacity.max(1);
        self.evict();
    }

    /// Runs the graph: feeds placeholders, returns the fetched values in order.
    pub fn run(&mut self, feeds: &[(NodeId, &Tensor)], fetches: &[NodeId]) -> Result<Vec<Tensor>> {
        self.run_with_targets(feeds, fetches, &[])
    }

    /// Like [`Session::run`], with feeds and fetches named (without `%`).
    pub fn run_named(
        &mut self,
        feeds: &[(&str, &Tensor)],
        fetches: &[&str],
    ) -> Result<Vec<Tensor>> {
        let feeds = self.named_feeds(feeds)?;
        let fetches = fetches
            .iter()
            .map(|n| self.graph.lookup(n))
            .collect::<Result<Vec<_>>>()?;
        self.run(&feeds, &fetches)
    }

    /// Runs the graph's declared outputs; returns (name, value) pairs in output order.
    pub fn run_outputs(&mut self, feeds: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let outputs = self.graph.outputs().to_vec();
        if outputs.is_empty() {
            return Err(Error::Invalid("the graph declares no outputs".into()));
        }
        let feeds = self.named_feeds(feeds)?;
        let values = self.run(&feeds, &outputs)?;
        let names = outputs.iter().map(|&o| self.graph.node(o).name.clone());
        Ok(names.zip(values).collect())
    }

    /// Runs `targets` (e.g. assigns) for their effect and returns the `fetches`.
    pub fn run_with_targets(
        &mut self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
        targets: &[NodeId],
    ) -> Result<Vec<Tensor>> {
        Ok(self.execute(feeds, fetches, targets, false)?.0)
    }

    /// Like [`Session::run`], and also the time each kernel took (empty when the backend
    /// cannot time kernels).
    pub fn run_profiled(
        &mut self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        self.execute(feeds, fetches, &[], true)
    }

    /// Like [`Session::run_with_targets`], and also the time each kernel took (a train step's
    /// profile).
    pub fn run_profiled_with_targets(
        &mut self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
        targets: &[NodeId],
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        self.execute(feeds, fetches, targets, true)
    }

    fn execute(
        &mut self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
        targets: &[NodeId],
        profile: bool,
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        for &id in fetches.iter().chain(targets) {
            if self.graph.get(id).is_none() {
                return Err(Error::Invalid(format!(
                    "fetch or target {id} is not in this graph"
                )));
            }
        }
        let fed = self.check_feeds(feeds)?;
        let needed = self.needed_placeholders(fetches, targets);
        let mut key_feeds = Vec::with_capacity(needed.len());
        for &id in needed.iter() {
            let Some(t) = fed.get(&id) else {
                let node = self.graph.node(id);
                return Err(Error::Feed {
                    name: node.name.clone(),
                    message: format!("missing feed for placeholder of type {}", node.ty),
                });
            };
            key_feeds.push((id, Dims::from(t.dims())));
        }
        let key = CacheKey {
            fetches: fetches.to_vec(),
            targets: targets.to_vec(),
            feeds: key_feeds,
        };
        let compiled = self.compiled(key)?;

        let feed_tensors: Vec<&Tensor> = compiled.feeds.iter().map(|id| fed[id]).collect();
        let mut vars: Vec<Tensor> = compiled
            .variables
            .iter()
            .map(|id| {
                std::mem::replace(
                    self.variables.get_mut(id).expect("every var has a value"),
                    Tensor::scalar(0.0),
                )
            })
            .collect();
        let result = if profile {
            compiled.executable.run_profiled(&feed_tensors, &mut vars)
        } else {
            compiled
                .executable
                .run(&feed_tensors, &mut vars)
                .map(|r| (r, Vec::new()))
        };
        // Put the (possibly updated) values back even when the run failed.
        for (id, value) in compiled.variables.iter().zip(vars) {
            self.variables.insert(*id, value);
        }
        result
    }

    /// The placeholders that `fetches` and `targets` depend on, in topological order; found once
    /// per fetch set, since walking the graph on every run would cost more than a small run.
    fn needed_placeholders(&mut self, fetches: &[NodeId], targets: &[NodeId]) -> Arc<Vec<NodeId>> {
        let key = (fetches.to_vec(), targets.to_vec());
        if let Some(found) = self.placeholders_needed.get(&key) {
            return found.clone();
        }
        let graph = &self.graph;
        let roots = fetches.iter().chain(targets).copied();
        let needed: Vec<NodeId> = graph
            .topo_order_of(roots)
            .into_iter()
            .filter(|&id| matches!(graph.node(id).op, Op::Input(_)))
            .collect();
        if self.placeholders_needed.len() >= 4 * self.cache_capacity {
            self.placeholders_needed.clear();
        }
        let needed = Arc::new(needed);
        self.placeholders_needed.insert(key, needed.clone());
        needed
    }

    /// The compiled executable for `key`, compiling on a miss.
    fn compiled(&mut self, key: CacheKey) -> Result<Arc<Compiled>> {
        if let Some(c) = self.cache.get(&key).cloned() {
            self.lru.retain(|k| k != &key);
            self.lru.push_back(key);
            return Ok(c);
        }
        let started = Instant::now();
        let cpu_started = kiln_cpu::cpu_time::process_cpu_time();
        let shapes: HashMap<NodeId, Shape> = key
            .feeds
            .iter()
            .map(|(id, dims)| (*id, Shape::known(dims)))
            .collect();
        let roots: Vec<NodeId> = key.fetches.iter().chain(&key.targets).copied().collect();
        let (mut sub, map) = self.graph.extract(&roots, &shapes)?;
        // Fetches become the graph's outputs so that every rewrite keeps their names.
        let mut fetch_ids: Vec<NodeId> = key.fetches.iter().map(|f| map[f]).collect();
        fetch_ids.dedup();
        sub.set_outputs(fetch_ids);
        let sub_roots: Vec<NodeId> = roots.iter().map(|r| map[r]).collect();
        let current: HashMap<NodeId, &Tensor> = map
            .iter()
            .filter_map(|(old, new)| self.variables.get(old).map(|t| (*new, t)))
            .collect();
        let passes_started = Instant::now();
        optimize_graph(
            &mut sub,
            &self.backend_kind,
            &self.optimize,
            &sub_roots,
            &|id| current.get(&id).map(|t| (*t).clone()),
        )?;
        let passes = passes_started.elapsed();
        // Passes keep names, not ids: find the run's nodes again by name.
        let by_name = |id: &NodeId| sub.find(&self.graph.node(*id).name);
        let lookup = |ids: &[NodeId]| -> Result<Vec<NodeId>> {
            ids.iter()
                .map(|id| {
                    by_name(id).ok_or_else(|| {
                        Error::Invalid(format!(
                            "internal error: optimisation lost %{}",
                            self.graph.node(*id).name
                        ))
                    })
                })
                .collect()
        };
        let feeds: Vec<NodeId> = key
            .feeds
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| by_name(id).is_some())
            .collect();
        let variables: Vec<NodeId> = self
            .graph
            .variables()
            .into_iter()
            .filter(|v| by_name(v).is_some_and(|s| matches!(sub.node(s).op, Op::Var(_))))
            .collect();
        let request = CompileRequest {
            graph: &sub,
            feeds: lookup(&feeds)?,
            variables: lookup(&variables)?,
            fetches: lookup(&key.fetches)?,
            targets: lookup(&key.targets)?,
        };
        let executable = self.backend.compile(&request)?;
        if let Some(limit) = self.optimize.memory_limit_bytes {
            check_memory_limit(&sub, &request.fetches, &executable.info(), limit)?;
        }
        self.compilations += 1;
        let mut info = executable.info();
        info.compile_times.passes = passes;
        let cpu_now = kiln_cpu::cpu_time::process_cpu_time();
        self.last_compile = Some(CompileStats {
            time: started.elapsed(),
            cpu_time: cpu_started.zip(cpu_now).map(|(a, b)| b.saturating_sub(a)),
            info,
        });
        let compiled = Arc::new(Compiled {
            executable,
            feeds,
            variables,
        });
        self.cache.insert(key.clone(), compiled.clone());
        self.lru.push_back(key);
        self.evict();
        Ok(compiled)
    }

    fn evict(&mut self) {
        while self.lru.len() > self.cache_capacity {
            if let Some(old) = self.lru.pop_front() {
                self.cache.remove(&old);
            }
        }
    }

    /// Checks each feed against its placeholder; returns them by id.
    fn check_feeds<'t>(
        &self,
        feeds: &[(NodeId, &'t Tensor)],
    ) -> Result<HashMap<NodeId, &'t Tensor>> {
        let mut fed = HashMap::new();
        for &(id, tensor) in feeds {
            let node = self
                .graph
                .get(id)
                .ok_or_else(|| Error::Invalid(format!("feed {id} is not a node of this graph")))?;
            let feed_err = |message: String| Error::Feed {
                name: node.name.clone(),
                message,
            };
            let Op::Input(ty) = &node.op else {
                return Err(feed_err(format!(
                    "only placeholders can be fed; this node is a {}",
                    node.op.name()
                )));
            };
            if tensor.dtype() != ty.dtype {
                return Err(feed_err(format!(
                    "expected {} data ({ty}), got {} data {}",
                    ty.dtype,
                    tensor.dtype(),
                    fmt_dims(tensor.dims())
                )));
            }
            if !ty.shape.matches(tensor.dims()) {
                return Err(feed_err(format!(
                    "expected shape {} ({ty}), got {}",
                    ty.shape,
                    fmt_dims(tensor.dims())
                )));
            }
            if fed.insert(id, tensor).is_some() {
                return Err(feed_err("fed twice".into()));
            }
        }
        Ok(fed)
    }

    /// Feeds given by placeholder name, resolved to ids; an unknown name lists the real ones.
    fn named_feeds<'t>(&self, feeds: &[(&str, &'t Tensor)]) -> Result<Vec<(NodeId, &'t Tensor)>> {
        feeds
            .iter()
            .map(|&(name, t)| {
                let id = self.graph.find(name).ok_or_else(|| {
                    let known: Vec<String> = self
                        .graph
                        .placeholders()
                        .iter()
                        .map(|&p| format!("%{}", self.graph.node(p).name))
                        .collect();
                    Error::Feed {
                        name: name.to_string(),
                        message: format!(
                            "no such placeholder; the graph's placeholders are: {}",
                            known.join(", ")
                        ),
                    }
                })?;
                Ok((id, t))
            })
            .collect()
    }

    /// The current value of a variable (by id).
    pub fn variable(&self, id: NodeId) -> Result<&Tensor> {
        self.variables
            .get(&id)
            .ok_or_else(|| match self.graph.get(id) {
                Some(n) => {
                    Error::Invalid(format!("%{} is a {}, not a variable", n.name, n.op.name()))
                }
                None => Error::Invalid(format!("{id} is not a node of this graph")),
            })
    }

    /// The current value of a variable (by name).
    pub fn variable_named(&self, name: &str) -> Result<&Tensor> {
        self.variable(self.graph.lookup(name)?)
    }

    /// Sets a variable; the value must have the variable's dtype and shape.
    pub fn set_variable(&mut self, id: NodeId, value: Tensor) -> Result<()> {
        let current = self.variable(id)?;
        if current.ty() != value.ty() {
            let name = &self.graph.node(id).name;
            return Err(Error::Invalid(format!(
                "variable %{name} is {}, cannot set it to a {} value",
                current.ty(),
                value.ty()
            )));
        }
        self.variables.insert(id, value);
        if self.optimize.freeze_variables {
            // Frozen variables are compiled in as constants.
            self.cache.clear();
            self.lru.clear();
        }
        Ok(())
    }

    /// Variables as (name, value) pairs, in graph order.
    pub fn variables(&self) -> Vec<(&str, &Tensor)> {
        self.graph
            .variables()
            .into_iter()
            .map(|id| (self.graph.node(id).name.as_str(), &self.variables[&id]))
            .collect()
    }
}

/// Errors when a run would need more than `limit` bytes: its arena plus its outputs (each
/// distinct fetch once). Feeds, variables and constants are not counted: they exist already.
fn check_memory_limit(
    graph: &kiln_ir::Graph,
    fetches: &[NodeId],
    info: &ExecutableInfo,
    limit: usize,
) -> Result<()> {
    let mut distinct: Vec<NodeId> = fetches.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let mut outputs = 0usize;
    for id in distinct {
        let ty = &graph.node(id).ty;
        let bytes = ty
            .shape
            .numel()
            .and_then(|n| n.checked_mul(ty.dtype.size_bytes()))
            .unwrap_or(usize::MAX);
        outputs = outputs.saturating_add(bytes);
    }
    let needed = info.arena_bytes.saturating_add(outputs);
    if needed > limit {
        return Err(Error::Invalid(format!(
            "the run needs {needed} bytes ({} bytes of arena + {outputs} bytes of outputs), \
             more than the session's memory limit of {limit} bytes",
            info.arena_bytes
        )));
    }
    Ok(())
}
