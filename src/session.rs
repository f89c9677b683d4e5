//! The session: owns the variables, compiles what a run needs and caches the result.
//!
//! A run names its feeds (placeholders and their tensors), fetches (values to return) and
//! targets (side-effect nodes such as assigns). The session checks every feed against its
//! placeholder, prunes the graph to what the fetches and targets need, fixes the placeholders'
//! shapes, compiles with its backend and caches the executable keyed by
//! (fetches, targets, feed shapes); a later run with the same key compiles nothing.
//!
//! Concurrency: every run takes `&self`, so one session serves many threads. Compiled
//! executables are shared (each run of the CPU backend takes an arena from the executable's
//! pool, which grows to the number of concurrent runs; the OpenCL backend serialises runs of
//! one executable with a lock). Variables live behind one read-write lock, taken in the calling
//! thread for the whole run: a run that only reads variables shares it with other readers, a
//! run that updates any (an assign, an optimizer step) holds it exclusively. So a run sees
//! either all of another run's updates or none, and concurrent updates are never lost. The
//! runs execute in the session's own rayon thread pool ([`SessionOptions::threads`]), which
//! concurrent runs share; the lock is never held by a thread that may pick up other work while
//! it waits (a worker of any rayon pool), which could deadlock on it.

use crate::images_apart;
use crate::optimize::{OptimizeOptions, optimize_graph};
use crate::{BackendKind, Graph};
use kiln_ir::backend::{
    Backend, CompileRequest, CompileTimes, Executable, ExecutableInfo, KernelTime,
};
use kiln_ir::eval::source_value;
use kiln_ir::shape::{Dims, fmt_dims};
use kiln_ir::{Error, NodeId, Op, Result, Shape, Tensor};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// How many compiled (fetches, targets, feed shapes) combinations a session keeps.
const DEFAULT_CACHE_CAPACITY: usize = 32;

/// A run's fetches and targets.
type RunRoots = (Vec<NodeId>, Vec<NodeId>);

/// The variables' current values, by id.
type Variables = HashMap<NodeId, Tensor>;

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

/// What a (fetches, targets) pair needs, found once since walking the graph on every run would
/// cost more than a small run.
struct RootsInfo {
    /// The placeholders it depends on, in topological order.
    placeholders: Vec<NodeId>,
    /// Whether it runs an op that writes a variable (then the run holds the variables
    /// exclusively).
    updates_variables: bool,
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

impl CompileStats {
    /// The stats of two compilations that together make one run's code (a batch's head run
    /// image by image and its tail run whole): times, kernels and arenas added.
    fn and(&self, other: &CompileStats) -> CompileStats {
        let (a, b) = (&self.info, &other.info);
        let (ta, tb) = (&a.compile_times, &b.compile_times);
        CompileStats {
            time: self.time + other.time,
            cpu_time: self.cpu_time.zip(other.cpu_time).map(|(x, y)| x + y),
            info: ExecutableInfo {
                kernels: a.kernels + b.kernels,
                arena_bytes: a.arena_bytes + b.arena_bytes,
                sum_temporary_bytes: a.sum_temporary_bytes + b.sum_temporary_bytes,
                fast_algorithm_kernels: a.fast_algorithm_kernels + b.fast_algorithm_kernels,
                compile_times: CompileTimes {
                    passes: ta.passes + tb.passes,
                    lowering: ta.lowering + tb.lowering,
                    packing: ta.packing + tb.packing,
                    codegen: ta.codegen + tb.codegen,
                },
            },
        }
    }
}

/// How a session compiles and runs: `SessionOptions { threads: Some(1), ..Default::default() }`.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionOptions {
    /// The backend to compile for.
    pub backend: BackendKind,
    /// The optimisation pipeline's options.
    pub optimize: OptimizeOptions,
    /// Worker threads of the session's own pool, shared by all its concurrent runs. `None`:
    /// rayon's default, one per logical core (or `RAYON_NUM_THREADS`).
    pub threads: Option<usize>,
    /// How many compiled variants the session keeps (least recently used go first).
    pub cache_capacity: usize,
    /// Whether a batch runs one image at a time (the batch-1 program once per image, the
    /// results stacked) where the fetched graph keeps its images apart (see
    /// `images_apart.rs`): `None` lets the backend decide from the sizes (the CPU backend
    /// does so where the batch's activations overflow its cache and the weights do not),
    /// `Some(true)` whenever the graph allows, `Some(false)` never.
    pub images_apart: Option<bool>,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            backend: BackendKind::default_kind(),
            optimize: OptimizeOptions::default(),
            threads: None,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            images_apart: None,
        }
    }
}

/// The compiled executables and what the session learnt about its graph, behind one mutex
/// that no one holds for long (compiling happens outside it).
struct Cache {
    entries: HashMap<CacheKey, Arc<Compiled>>,
    lru: VecDeque<CacheKey>,
    capacity: usize,
    compilations: usize,
    last_compile: Option<CompileStats>,
    roots: HashMap<RunRoots, Arc<RootsInfo>>,
    /// Per fetch list: whether its graph keeps images apart, with its sizes.
    apart: HashMap<Vec<NodeId>, Option<images_apart::Separable>>,
    /// Per fetch list and cut: the session running the graph after the cut on whole batches.
    tails: HashMap<(Vec<NodeId>, NodeId), Arc<Tail>>,
}

/// The part of a fetched graph after a [`images_apart::Cut`], run on whole batches by a
/// session of its own (sharing the pool) once the images before it ran apart.
struct Tail {
    session: Session,
    /// The cut, in this session's graph.
    cut: NodeId,
    /// The placeholder standing for the cut, in the tail's graph.
    input: NodeId,
    /// The fetches, in the tail's graph.
    fetches: Vec<NodeId>,
}

/// Inserts into a map of at most `limit` entries, emptying it first when full: the maps it
/// bounds (per fetch list) see a new key rarely, and each value is rebuilt on demand.
fn insert_bounded<K: Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    limit: usize,
    key: K,
    value: V,
) {
    if map.len() >= limit {
        map.clear();
    }
    map.insert(key, value);
}

impl Cache {
    fn evict(&mut self) {
        while self.lru.len() > self.capacity {
            if let Some(old) = self.lru.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.lru.clear();
    }
}

/// Runs a graph: `Session::new(&graph)?.run(&[(input, &tensor)], &[output])`. `Send + Sync`:
/// share it between threads (`Arc<Session>` or scoped threads) and run from all of them.
pub struct Session {
    graph: kiln_ir::Graph,
    /// One past the largest node index of the graph when the session copied it, to tell a
    /// node added later from one that was never in the graph.
    node_bound: usize,
    optimize: OptimizeOptions,
    backend_kind: BackendKind,
    backend: Box<dyn Backend>,
    /// Shared with the sessions running the tails of batches run apart.
    pool: Arc<rayon::ThreadPool>,
    /// Read by runs that only read variables, written by runs that update them: held by the
    /// calling thread for the whole run (never inside the pool, where a worker waiting for
    /// a parallel loop may pick up another run's job and would block on its own lock).
    variables: RwLock<Variables>,
    cache: Mutex<Cache>,
    /// [`SessionOptions::images_apart`].
    images_apart: Option<bool>,
    /// Held while compiling, so that concurrent runs missing one key compile it once.
    compiling: Mutex<()>,
}

/// A mutex's contents even if a thread panicked holding it: the cache and the compile token
/// stay consistent at every point a panic could leave them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The error for variables left behind by a run that panicked while updating them.
fn poisoned<T>(_: T) -> Error {
    Error::Invalid(
        "the session's variables are unusable: a run panicked while updating them".into(),
    )
}

impl Session {
    /// A session on the default backend.
    pub fn new(graph: &Graph) -> Result<Session> {
        Session::with_session_options(graph, SessionOptions::default())
    }

    /// A session on the given backend, optimising with its default pipeline.
    pub fn with_backend(graph: &Graph, backend: BackendKind) -> Result<Session> {
        Session::with_options(graph, backend, OptimizeOptions::default())
    }

    /// A session on the given backend with the given optimisation options.
    pub fn with_options(
        graph: &Graph,
        backend: BackendKind,
        optimize: OptimizeOptions,
    ) -> Result<Session> {
        Session::with_session_options(
            graph,
            SessionOptions {
                backend,
                optimize,
                ..SessionOptions::default()
            },
        )
    }

    /// A session with every option given. Variables get their initial values here. The session
    /// copies the graph: nodes added to `graph` afterwards are not part of it.
    pub fn with_session_options(graph: &Graph, options: SessionOptions) -> Result<Session> {
        let SessionOptions {
            backend: backend_kind,
            optimize,
            threads,
            cache_capacity,
            images_apart,
        } = options;
        let known = backend_kind.pipeline().passes();
        if let Some(bad) = optimize
            .disabled
            .iter()
            .find(|d| !known.contains(&d.as_str()))
        {
            return Err(Error::Invalid(format!(
                "no pass named {bad:?}; the {} pipeline has: {}",
                backend_kind.name(),
                known.join(", ")
            )));
        }
        if threads == Some(0) {
            return Err(Error::Invalid(
                "a session needs at least 1 thread, got threads = 0".into(),
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.unwrap_or(0))
            .thread_name(|i| format!("kiln-session-{i}"))
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start the session's threads: {e}")))?;
        Session::build(
            graph.ir().clone(),
            backend_kind,
            optimize,
            Arc::new(pool),
            cache_capacity,
            images_apart,
        )
    }

    /// A session on `graph` running in `pool`.
    fn build(
        graph: kiln_ir::Graph,
        backend_kind: BackendKind,
        optimize: OptimizeOptions,
        pool: Arc<rayon::ThreadPool>,
        cache_capacity: usize,
        images_apart: Option<bool>,
    ) -> Result<Session> {
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
            node_bound: graph.node_ids().map(|id| id.index() + 1).max().unwrap_or(0),
            optimize,
            backend: backend_kind.create()?,
            backend_kind,
            graph,
            pool,
            variables: RwLock::new(variables),
            cache: Mutex::new(Cache {
                entries: HashMap::new(),
                lru: VecDeque::new(),
                capacity: cache_capacity.max(1),
                compilations: 0,
                last_compile: None,
                roots: HashMap::new(),
                apart: HashMap::new(),
                tails: HashMap::new(),
            }),
            images_apart,
            compiling: Mutex::new(()),
        })
    }

    /// The backend this session compiles for.
    pub fn backend(&self) -> &BackendKind {
        &self.backend_kind
    }

    /// The session's graph (its copy, made when the session was created).
    pub fn graph(&self) -> &kiln_ir::Graph {
        &self.graph
    }

    /// How many worker threads the session's runs use.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// How many times this session has compiled (for checking that the cache works).
    pub fn compilations(&self) -> usize {
        lock(&self.cache).compilations
    }

    /// Time and facts of the most recent compilation (a cache hit compiles nothing).
    pub fn last_compile(&self) -> Option<CompileStats> {
        lock(&self.cache).last_compile.clone()
    }

    /// Bounds the number of compiled variants kept (least recently used go first).
    pub fn set_cache_capacity(&self, capacity: usize) {
        let mut cache = lock(&self.cache);
        cache.capacity = capacity.max(1);
        cache.evict();
    }

    /// Runs the graph: feeds placeholders, returns the fetched values in order. Safe to call
    /// from many threads at once.
    ///
    /// ```
    /// use kiln::{Graph, Session, Shape, Tensor};
    ///
    /// let mut g = Graph::new();
    /// let x = g.input("x", Shape::of(&[None, Some(2)]))?;
    /// let w = g.var("w", Tensor::from_vec(&[2, 1], vec![1.0, 2.0])?)?;
    /// let y = g.matmul(x, w)?;
    /// let sess = Session::new(&g)?;
    /// // Four threads share the session; each run gets its own arena.
    /// let results: Vec<kiln::Result<Vec<Tensor>>> = std::thread::scope(|s| {
    ///     let runs: Vec<_> = (0..4)
    ///         .map(|i| {
    ///             let sess = &sess;
    ///             s.spawn(move || {
    ///                 let feed = Tensor::from_vec(&[1, 2], vec![i as f32, 1.0])?;
    ///                 sess.run(&[(x, &feed)], &[y])
    ///             })
    ///         })
    ///         .collect();
    ///     runs.into_iter().map(|r| r.join().expect("a run panicked")).collect()
    /// });
    /// for (i, result) in results.into_iter().enumerate() {
    ///     assert_eq!(result?[0].as_f32(), Some(&[i as f32 + 2.0][..]));
    /// }
    /// # Ok::<(), kiln::Error>(())
    /// ```
    pub fn run(&self, feeds: &[(NodeId, &Tensor)], fetches: &[NodeId]) -> Result<Vec<Tensor>> {
        self.run_with_targets(feeds, fetches, &[])
    }

    /// Like [`Session::run`], with feeds and fetches named (`"x"` or `"%x"`).
    pub fn run_named(&self, feeds: &[(&str, &Tensor)], fetches: &[&str]) -> Result<Vec<Tensor>> {
        let feeds = self.named_feeds(feeds)?;
        let fetches = fetches
            .iter()
            .map(|n| self.graph.lookup(bare_name(n)))
            .collect::<Result<Vec<_>>>()?;
        self.run(&feeds, &fetches)
    }

    /// Runs the graph's declared outputs; returns (name, value) pairs in output order.
    pub fn run_outputs(&self, feeds: &[(&str, &Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let outputs = self.graph.outputs().to_vec();
        if outputs.is_empty() {
            return Err(Error::Invalid("the graph declares no outputs".into()));
        }
        let feeds = self.named_feeds(feeds)?;
        let values = self.run(&feeds, &outputs)?;
        let names = outputs.iter().map(|&o| self.graph.node(o).name.clone());
        Ok(names.zip(values).collect())
    }

    /// Runs `targets` (e.g. assigns) for their effect and returns the `fetches`. A run that
    /// updates variables holds them exclusively: concurrent runs see all its updates or none.
    pub fn run_with_targets(
        &self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
        targets: &[NodeId],
    ) -> Result<Vec<Tensor>> {
        Ok(self.execute(feeds, fetches, targets, false)?.0)
    }

    /// Like [`Session::run`], and also the time each kernel took (empty when the backend
    /// cannot time kernels).
    pub fn run_profiled(
        &self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        self.execute(feeds, fetches, &[], true)
    }

    /// Like [`Session::run_with_targets`], and also the time each kernel took (a train step's
    /// profile).
    pub fn run_profiled_with_targets(
        &self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
        targets: &[NodeId],
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        self.execute(feeds, fetches, targets, true)
    }

    /// The error for an id this session's graph does not have, saying why that happens.
    fn unknown_node(&self, what: &str, id: NodeId) -> Error {
        if id.index() >= self.node_bound {
            Error::Invalid(format!(
                "{what} {id} was added to the graph after the session was created: a session \
                 copies the graph when it is created (its nodes end at #{}), so create a new \
                 session to run nodes added since",
                self.node_bound.saturating_sub(1)
            ))
        } else {
            Error::Invalid(format!(
                "{what} {id} is not in this session's graph (it was removed, or is a node of \
                 another graph)"
            ))
        }
    }

    fn execute(
        &self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
        targets: &[NodeId],
        profile: bool,
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        if let Some((batch, cut)) = self.runs_images_apart(feeds, fetches, targets) {
            let tail = cut.map(|cut| self.tail(fetches, cut)).transpose()?;
            return self.execute_images_apart(feeds, fetches, batch, tail.as_deref(), profile);
        }
        self.execute_whole(feeds, fetches, targets, profile)
    }

    /// The batch, when this run goes one image at a time (see [`SessionOptions::images_apart`]):
    /// no targets, every feed batched alike, and a fetched graph that keeps images apart; with
    /// the cut after which the batch runs whole again, if the backend chose one.
    fn runs_images_apart(
        &self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
        targets: &[NodeId],
    ) -> Option<(usize, Option<NodeId>)> {
        if self.images_apart == Some(false) || !targets.is_empty() || fetches.is_empty() {
            return None;
        }
        if fetches
            .iter()
            .chain(feeds.iter().map(|(id, _)| id))
            .any(|&id| self.graph.get(id).is_none())
        {
            return None; // execute_whole reports it
        }
        let batch = images_apart::batch_of(&self.graph, feeds)?;
        let known = lock(&self.cache).apart.get(fetches).cloned();
        let separable = match known {
            Some(s) => s,
            None => {
                let s = images_apart::separable(&self.graph, fetches);
                lock(&self.cache).apart.insert(fetches.to_vec(), s.clone());
                s
            }
        }?;
        // Every placeholder the fetches read must be fed (else execute_whole reports it).
        let roots = self.roots_info(fetches, &[]);
        if roots.updates_variables
            || roots
                .placeholders
                .iter()
                .any(|p| !feeds.iter().any(|(id, _)| id == p))
        {
            return None;
        }
        let chosen = self.images_apart == Some(true)
            || images_apart::chosen(&self.backend_kind, &separable, batch);
        chosen.then(|| {
            (
                batch,
                images_apart::tail_cut(&self.backend_kind, &separable, batch),
            )
        })
    }

    /// Runs the batch-1 program once per image of `feeds` and stacks each fetch's results, or,
    /// with a `tail`, stacks the cut's values and runs the tail on them; a profile sums each
    /// kernel's time over the images (the tail's kernels follow).
    fn execute_images_apart(
        &self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
        batch: usize,
        tail: Option<&Tail>,
        profile: bool,
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        let head: Vec<NodeId> = match tail {
            Some(t) => vec![t.cut],
            None => fetches.to_vec(),
        };
        let compiled = self.compilations();
        let mut parts: Vec<Vec<Tensor>> = vec![Vec::with_capacity(batch); head.len()];
        let mut times: Vec<KernelTime> = Vec::new();
        for i in 0..batch {
            let images = feeds
                .iter()
                .map(|(id, t)| Ok((*id, images_apart::image(t, i)?)))
                .collect::<Result<Vec<(NodeId, Tensor)>>>()?;
            let image_feeds: Vec<(NodeId, &Tensor)> =
                images.iter().map(|(id, t)| (*id, t)).collect();
            let (outputs, image_times) = self.execute_whole(&image_feeds, &head, &[], profile)?;
            for (part, output) in parts.iter_mut().zip(outputs) {
                part.push(output);
            }
            KernelTime::accumulate(&mut times, image_times);
        }
        let outputs = parts
            .iter()
            .map(|p| images_apart::stack(p))
            .collect::<Result<Vec<_>>>()?;
        let Some(tail) = tail else {
            return Ok((outputs, times));
        };
        let stacked = [(tail.input, &outputs[0])];
        let tail_compiled = tail.session.compilations();
        let (outputs, tail_times) =
            tail.session
                .execute_whole(&stacked, &tail.fetches, &[], profile)?;
        times.extend(tail_times);
        // The tail's compilation is this session's too: its stats join the head's when both
        // compiled in this run (what `kiln bench` reports as the compile time).
        if tail.session.compilations() > tail_compiled
            && let Some(tail_stats) = tail.session.last_compile()
        {
            let mut cache = lock(&self.cache);
            let head_compiled = cache.compilations > compiled;
            cache.compilations += 1;
            cache.last_compile = match cache.last_compile.take() {
                Some(head) if head_compiled => Some(head.and(&tail_stats)),
                _ => Some(tail_stats),
            };
        }
        Ok((outputs, times))
    }

    /// The session running the graph of `fetches` after `cut` (made on first use).
    fn tail(&self, fetches: &[NodeId], cut: NodeId) -> Result<Arc<Tail>> {
        let key = (fetches.to_vec(), cut);
        if let Some(tail) = lock(&self.cache).tails.get(&key) {
            return Ok(tail.clone());
        }
        let (graph, input, tail_fetches) = images_apart::tail_graph(&self.graph, fetches, cut)?;
        let session = Session::build(
            graph,
            self.backend_kind.clone(),
            self.optimize.clone(),
            self.pool.clone(),
            lock(&self.cache).capacity,
            Some(false),
        )?;
        let tail = Arc::new(Tail {
            session,
            cut,
            input,
            fetches: tail_fetches,
        });
        let mut cache = lock(&self.cache);
        // Each tail holds a session with compiled programs of its own.
        let limit = cache.capacity;
        insert_bounded(&mut cache.tails, limit, key, tail.clone());
        Ok(tail)
    }

    fn execute_whole(
        &self,
        feeds: &[(NodeId, &Tensor)],
        fetches: &[NodeId],
        targets: &[NodeId],
        profile: bool,
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        for &id in fetches.iter().chain(targets) {
            if self.graph.get(id).is_none() {
                return Err(self.unknown_node("fetch or target", id));
            }
        }
        let fed = self.check_feeds(feeds)?;
        let roots = self.roots_info(fetches, targets);
        let mut key_feeds = Vec::with_capacity(roots.placeholders.len());
        for &id in &roots.placeholders {
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
        if roots.updates_variables {
            let mut variables = self.variables.write().map_err(poisoned)?;
            let compiled = self.compiled(key, &variables)?;
            let feed_tensors: Vec<&Tensor> = compiled.feeds.iter().map(|id| fed[id]).collect();
            let mut vars: Vec<Tensor> = compiled
                .variables
                .iter()
                .map(|id| {
                    let slot = variables.get_mut(id).expect("every var has a value");
                    std::mem::replace(slot, Tensor::scalar(0.0))
                })
                .collect();
            let result = self.in_pool(compiled.executable.uses_threads(), || {
                if profile {
                    compiled.executable.run_profiled(&feed_tensors, &mut vars)
                } else {
                    let outputs = compiled.executable.run(&feed_tensors, &mut vars)?;
                    Ok((outputs, Vec::new()))
                }
            });
            // Put the (possibly updated) values back even when the run failed.
            for (id, value) in compiled.variables.iter().zip(vars) {
                variables.insert(*id, value);
            }
            result
        } else {
            let variables = self.variables.read().map_err(poisoned)?;
            let compiled = self.compiled(key, &variables)?;
            let feed_tensors: Vec<&Tensor> = compiled.feeds.iter().map(|id| fed[id]).collect();
            let vars: Vec<&Tensor> = compiled.variables.iter().map(|id| &variables[id]).collect();
            self.in_pool(compiled.executable.uses_threads(), || {
                compiled
                    .executable
                    .run_reading(&feed_tensors, &vars, profile)
            })
        }
    }

    /// Runs `work` in the session's pool and waits for it. A caller that is itself a worker of
    /// a rayon pool would run other jobs of its pool while it waits, such as another run that
    /// then blocks on the variables this caller holds locked, below it on the same stack: such
    /// a caller waits from a plain thread instead. A program that splits no work across
    /// threads (`threaded` false) runs on the calling thread: handing it over costs more than
    /// a small graph's whole run.
    fn in_pool<R: Send>(&self, threaded: bool, work: impl FnOnce() -> R + Send) -> R {
        if rayon::current_thread_index().is_some() {
            return std::thread::scope(|s| s.spawn(|| self.pool.install(work)).join())
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
        if threaded {
            self.pool.install(work)
        } else {
            work()
        }
    }

    /// The placeholders `fetches` and `targets` depend on and whether they update a variable.
    fn roots_info(&self, fetches: &[NodeId], targets: &[NodeId]) -> Arc<RootsInfo> {
        let key = (fetches.to_vec(), targets.to_vec());
        if let Some(found) = lock(&self.cache).roots.get(&key) {
            return found.clone();
        }
        let graph = &self.graph;
        let order = graph.topo_order_of(fetches.iter().chain(targets).copied());
        let info = Arc::new(RootsInfo {
            placeholders: order
                .iter()
                .copied()
                .filter(|&id| matches!(graph.node(id).op, Op::Input(_)))
                .collect(),
            updates_variables: order
                .iter()
                .any(|&id| graph.node(id).op.updated_variables() > 0),
        });
        let mut cache = lock(&self.cache);
        let limit = 4 * cache.capacity;
        insert_bounded(&mut cache.roots, limit, key, info.clone());
        info
    }

    /// The compiled executable for `key`, compiling on a miss with the `variables` the caller
    /// holds locked (frozen variables are compiled in with these values).
    fn compiled(&self, key: CacheKey, variables: &Variables) -> Result<Arc<Compiled>> {
        if let Some(c) = self.cached(&key) {
            return Ok(c);
        }
        let _compiling = lock(&self.compiling);
        // Another run may have compiled it while this one waited.
        if let Some(c) = self.cached(&key) {
            return Ok(c);
        }
        let (compiled, stats) = self.compile(&key, variables)?;
        let mut cache = lock(&self.cache);
        cache.compilations += 1;
        cache.last_compile = Some(stats);
        cache.entries.insert(key.clone(), compiled.clone());
        cache.lru.push_back(key);
        cache.evict();
        Ok(compiled)
    }

    /// The cached executable for `key`, marked most recently used.
    fn cached(&self, key: &CacheKey) -> Option<Arc<Compiled>> {
        let mut cache = lock(&self.cache);
        let found = cache.entries.get(key).cloned()?;
        if cache.lru.back() != Some(key) {
            cache.lru.retain(|k| k != key);
            cache.lru.push_back(key.clone());
        }
        Some(found)
    }

    /// Prunes, optimises and compiles the run `key` describes.
    fn compile(
        &self,
        key: &CacheKey,
        variables: &Variables,
    ) -> Result<(Arc<Compiled>, CompileStats)> {
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
            .filter_map(|(old, new)| variables.get(old).map(|t| (*new, t)))
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
        // In the session's pool, so that parallel packing uses its threads.
        let executable = self.in_pool(true, || self.backend.compile(&request))?;
        if let Some(limit) = self.optimize.memory_limit_bytes {
            check_memory_limit(&sub, &request.fetches, &executable.info(), limit)?;
        }
        let mut info = executable.info();
        info.compile_times.passes = passes;
        let cpu_now = kiln_cpu::cpu_time::process_cpu_time();
        let stats = CompileStats {
            time: started.elapsed(),
            cpu_time: cpu_started.zip(cpu_now).map(|(a, b)| b.saturating_sub(a)),
            info,
        };
        let compiled = Arc::new(Compiled {
            executable,
            feeds,
            variables,
        });
        Ok((compiled, stats))
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
                .ok_or_else(|| self.unknown_node("feed", id))?;
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
                let name = bare_name(name);
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

    /// The error for `id` when it is not a variable.
    fn not_a_variable(&self, id: NodeId) -> Error {
        match self.graph.get(id) {
            Some(n) => Error::Invalid(format!("%{} is a {}, not a variable", n.name, n.op.name())),
            None => self.unknown_node("node", id),
        }
    }

    /// The current value of a variable (by id), copied out (a run may update it meanwhile).
    pub fn variable(&self, id: NodeId) -> Result<Tensor> {
        let variables = self.variables.read().map_err(poisoned)?;
        variables
            .get(&id)
            .cloned()
            .ok_or_else(|| self.not_a_variable(id))
    }

    /// The current value of a variable (by name).
    pub fn variable_named(&self, name: &str) -> Result<Tensor> {
        self.variable(self.graph.lookup(name)?)
    }

    /// Sets a variable; the value must have the variable's dtype and shape. Waits for runs
    /// in progress; runs that start later see the new value.
    pub fn set_variable(&self, id: NodeId, value: Tensor) -> Result<()> {
        self.set_variables(vec![(id, value)])
    }

    /// Sets several variables at once: all or none (each value must have its variable's dtype
    /// and shape), and no run sees some set and others not.
    pub fn set_variables(&self, values: Vec<(NodeId, Tensor)>) -> Result<()> {
        let mut variables = self.variables.write().map_err(poisoned)?;
        for (id, value) in &values {
            let current = variables.get(id).ok_or_else(|| self.not_a_variable(*id))?;
            if current.ty() != value.ty() {
                let name = &self.graph.node(*id).name;
                return Err(Error::Invalid(format!(
                    "variable %{name} is {}, cannot set it to a {} value",
                    current.ty(),
                    value.ty()
                )));
            }
        }
        variables.extend(values);
        if self.optimize.freeze_variables {
            // Frozen variables are compiled in as constants; compiling holds the variables
            // locked, so no stale executable is cached after this.
            lock(&self.cache).clear();
        }
        Ok(())
    }

    /// Variables as (name, value) pairs in graph order: one consistent snapshot, copied out.
    pub fn variables(&self) -> Result<Vec<(String, Tensor)>> {
        let variables = self.variables.read().map_err(poisoned)?;
        Ok(self
            .graph
            .variables()
            .into_iter()
            .map(|id| (self.graph.node(id).name.clone(), variables[&id].clone()))
            .collect())
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

/// A node name as people write it, with or without the `%` of the .kiln text.
fn bare_name(name: &str) -> &str {
    name.strip_prefix('%').unwrap_or(name)
}
