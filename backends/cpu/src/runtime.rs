//! Running a [`Plan`]: one arena per run (so one executable serves many threads at once),
//! outputs written straight into the returned tensors, variable updates committed last (copied
//! into the variables' own storage).
//!
//! This file and the micro-kernels are the only places that turn addresses into slices or call
//! generated code; the invariant that makes it sound is stated once, on `Buffers`.

use crate::gemm::{self, Epilogue, PackedB, Residual};
use crate::guard::{GuardedArena, GuardedOutput};
use crate::host::{View, ViewMut};
use crate::jit::CompiledKernel;
use crate::pack_cache::PackedEntry;
use crate::plan::{FusedEpilogue, Plan, Split, Stage, Weights};
use kiln_ir::backend::{CompileTimes, Executable, ExecutableInfo, KernelTime};
use kiln_ir::program::{BufferId, BufferKind, Program};
use kiln_ir::{DType, Error, Result, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A compiled program, ready to run.
pub struct CpuExecutable {
    /// The lowered program (buffer table, fetches, updates).
    pub program: Program,
    /// Its stages.
    pub plan: Plan,
    /// Arenas of finished runs, reused so that a run does not page-fault a fresh one in;
    /// concurrent runs each take their own.
    arenas: Mutex<Vec<GuardedArena>>,
    /// How long compiling it took, by phase (zero where not timed).
    compile_times: CompileTimes,
}

impl CpuExecutable {
    /// `times` with each kernel that runs inside another's stage (a depthwise conv merged
    /// with its 1x1 conv, a batch norm applied as a 1x1 conv's prologue) folded into that
    /// kernel's entry: its ops first, its nodes and flops added, so the entry's GFLOP/s
    /// counts all the work its time covers; a Winograd convolution's op is named with its
    /// tile (`conv2d(winograd 4x4)`).
    fn merge_fused(&self, mut times: Vec<KernelTime>) -> Vec<KernelTime> {
        let mut merged: Vec<usize> = Vec::new();
        for (index, stage) in &self.plan.stages {
            if let Stage::Winograd { filter, .. } = stage
                && let Some(op) = times.get_mut(*index).and_then(|t| t.ops.first_mut())
            {
                // Its GFLOP/s count the direct convolution's FLOPs, so they can pass the
                // machine's peak: the name says why.
                let tile = filter.variant().tile();
                *op = format!("{op}(winograd {tile}x{tile})");
            }
            let fused = match stage {
                Stage::DepthwisePointwise { depthwise, .. } => *depthwise,
                Stage::Conv {
                    prologue: Some(p), ..
                } => p.kernel,
                Stage::Conv {
                    nchw_from: Some(k), ..
                } => *k,
                _ => continue,
            };
            if fused < times.len() && *index < times.len() {
                let mut inner = std::mem::take(&mut times[fused]);
                let outer = &mut times[*index];
                outer.ops.splice(0..0, std::mem::take(&mut inner.ops));
                outer.nodes.splice(0..0, std::mem::take(&mut inner.nodes));
                outer.flops = outer.flops.zip(inner.flops).map(|(a, b)| a + b);
                outer.add(inner);
                merged.push(fused);
            }
        }
        merged.sort_unstable();
        for index in merged.into_iter().rev() {
            times.remove(index);
        }
        times
    }

    /// An executable for `program` compiled as `plan`.
    pub fn new(program: Program, plan: Plan) -> CpuExecutable {
        CpuExecutable {
            program,
            plan,
            arenas: Mutex::new(Vec::new()),
            compile_times: CompileTimes::default(),
        }
    }

    /// The same executable, reporting `times` as its compilation's phases.
    pub fn with_compile_times(self, times: CompileTimes) -> CpuExecutable {
        CpuExecutable {
            compile_times: times,
            ..self
        }
    }
}

/// The address and length (in bytes) of every buffer of one run.
///
/// Invariant: every address points to at least `len` bytes that stay valid and unmoved for
/// the whole run (feeds and variables are borrowed for the run, constants live in the
/// program, temporaries in this run's arena, outputs in this run's tensors), and the memory
/// plan guarantees a kernel's output never overlaps any buffer it reads.
struct Buffers {
    ptrs: Vec<*mut u8>,
    lens: Vec<usize>,
}

impl Buffers {
    fn ptr(&self, id: BufferId) -> *mut u8 {
        self.ptrs[id.index()]
    }

    /// The buffer as f32s.
    fn f32s(&self, id: BufferId) -> &[f32] {
        let (p, len) = (self.ptrs[id.index()], self.lens[id.index()]);
        // SAFETY: see the type's invariant; f32 buffers are 4-byte aligned (tensor storage or
        // 64-byte aligned arena offsets).
        unsafe { std::slice::from_raw_parts(p.cast::<f32>(), len / 4) }
    }

    /// The buffer as a typed view of `dtype` elements (bool as bytes), for host kernels.
    fn view(&self, id: BufferId, dtype: DType) -> Result<View<'_>, String> {
        let (p, len) = self.typed(id, dtype)?;
        // SAFETY: see the type's invariant; `typed` checked the alignment, and the element
        // count covers exactly the buffer's bytes. Every bit pattern is a valid f32, i32, i64
        // or u8 (bools are read as bytes).
        Ok(unsafe {
            match dtype {
                DType::F32 => View::F32(std::slice::from_raw_parts(p.cast(), len)),
                DType::I32 => View::I32(std::slice::from_raw_parts(p.cast(), len)),
                DType::I64 => View::I64(std::slice::from_raw_parts(p.cast(), len)),
                DType::Bool => View::Bool(std::slice::from_raw_parts(p, len)),
            }
        })
    }

    /// The buffer as a writable typed view; like [`Buffers::f32s_mut`], only for the running
    /// stage's output, which aliases nothing it reads.
    fn view_mut(&self, id: BufferId, dtype: DType) -> Result<ViewMut<'_>, String> {
        let (p, len) = self.typed(id, dtype)?;
        // SAFETY: as for `view`, and the output of the running stage is borrowed nowhere else.
        Ok(unsafe {
            match dtype {
                DType::F32 => ViewMut::F32(std::slice::from_raw_parts_mut(p.cast(), len)),
                DType::I32 => ViewMut::I32(std::slice::from_raw_parts_mut(p.cast(), len)),
                DType::I64 => ViewMut::I64(std::slice::from_raw_parts_mut(p.cast(), len)),
                DType::Bool => ViewMut::Bool(std::slice::from_raw_parts_mut(p, len)),
            }
        })
    }

    /// The address and element count of buffer `id` seen as `dtype`, checking alignment.
    fn typed(&self, id: BufferId, dtype: DType) -> Result<(*mut u8, usize), String> {
        let (p, bytes) = (self.ptrs[id.index()], self.lens[id.index()]);
        let size = dtype.size_bytes();
        // Tensor storage is aligned for its dtype and arena offsets are 64-byte aligned, so a
        // misaligned buffer is an internal error, reported rather than risked.
        if !(p as usize).is_multiple_of(size) || !bytes.is_multiple_of(size) {
            return Err(format!(
                "internal error: buffer {id} is not aligned for {dtype} elements"
            ));
        }
        Ok((p, bytes / size))
    }

    /// The buffer as mutable f32s; the caller writes only a kernel's output, which aliases
    /// nothing that kernel reads.
    #[allow(clippy::mut_from_ref)]
    fn f32s_mut(&self, id: BufferId) -> &mut [f32] {
        let (p, len) = (self.ptrs[id.index()], self.lens[id.index()]);
        // SAFETY: as above, and the output of the running stage is not borrowed elsewhere.
        unsafe { std::slice::from_raw_parts_mut(p.cast::<f32>(), len / 4) }
    }
}

/// The variables of one run: its own when the program commits updates into them, borrowed
/// from the caller (and shared with concurrent runs) when it only reads them.
enum RunVariables<'a> {
    Owned(&'a mut [Tensor]),
    Borrowed(&'a [&'a Tensor]),
}

impl Executable for CpuExecutable {
    fn run(&self, feeds: &[&Tensor], variables: &mut [Tensor]) -> Result<Vec<Tensor>> {
        self.execute(feeds, RunVariables::Owned(variables), None)
    }

    fn run_reading(
        &self,
        feeds: &[&Tensor],
        variables: &[&Tensor],
        profile: bool,
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        let mut times = profile.then(|| self.program.zeroed_kernel_times());
        let outputs = self.execute(feeds, RunVariables::Borrowed(variables), times.as_mut())?;
        Ok((outputs, self.merge_fused(times.unwrap_or_default())))
    }

    fn run_profiled(
        &self,
        feeds: &[&Tensor],
        variables: &mut [Tensor],
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        let mut times = self.program.zeroed_kernel_times();
        let outputs = self.execute(feeds, RunVariables::Owned(variables), Some(&mut times))?;
        Ok((outputs, self.merge_fused(times)))
    }

    fn uses_threads(&self) -> bool {
        self.plan.uses_threads
    }

    fn info(&self) -> ExecutableInfo {
        let winograd = (self.plan.stages.iter())
            .filter(|(_, stage)| matches!(stage, Stage::Winograd { .. }))
            .count();
        ExecutableInfo {
            compile_times: self.compile_times,
            fast_algorithm_kernels: winograd,
            ..self.program.executable_info()
        }
    }
}

impl CpuExecutable {
    /// Runs every stage; with `times`, adds each stage's wall time to its kernel's entry.
    fn execute(
        &self,
        feeds: &[&Tensor],
        mut variables: RunVariables<'_>,
        mut times: Option<&mut Vec<KernelTime>>,
    ) -> Result<Vec<Tensor>> {
        let p = &self.program;
        match &variables {
            RunVariables::Owned(v) => p.check_inputs(feeds, &v[..])?,
            RunVariables::Borrowed(v) => {
                p.check_inputs(feeds, &v[..])?;
                if !p.updates.is_empty() {
                    return Err(Error::Invalid(
                        "internal error: a program that updates variables was run with its \
                         variables borrowed read-only"
                            .into(),
                    ));
                }
            }
        }
        let reused = self.arenas.lock().ok().and_then(|mut pool| pool.pop());
        let mut arena = match reused {
            Some(arena) => arena,
            None => GuardedArena::new(p.arena_bytes)?,
        };
        let base = arena.base();
        let mut outputs: Vec<GuardedOutput> = p
            .fetches
            .iter()
            .map(|&b| {
                let buf = p.buffer(b);
                GuardedOutput::new(&buf.name, buf.dtype, &buf.dims)
            })
            .collect::<Result<_>>()?;
        let mut ptrs = Vec::with_capacity(p.buffers.len());
        let mut lens = Vec::with_capacity(p.buffers.len());
        for buf in &p.buffers {
            let ptr = match &buf.kind {
                BufferKind::Feed(i) => feeds[*i].as_ptr().cast_mut(),
                // A borrowed variable is only read: a program with updates needs them owned.
                BufferKind::Variable(i) => match &mut variables {
                    RunVariables::Owned(v) => v[*i].as_mut_ptr(),
                    RunVariables::Borrowed(v) => v[*i].as_ptr().cast_mut(),
                },
                BufferKind::Constant(t) => t.as_ptr().cast_mut(),
                // In bounds: the plan keeps offset + size within arena_bytes.
                BufferKind::Temporary { offset } => base.wrapping_add(*offset),
                BufferKind::Output(i) => outputs[*i].as_mut_ptr(),
                // Resolved below, once every viewed buffer has its pointer.
                BufferKind::Alias { .. } | BufferKind::Part { .. } => std::ptr::null_mut(),
            };
            ptrs.push(ptr);
            lens.push(buf.size_bytes());
        }
        // An alias is its source's bytes: `validate` checked that the source exists, is not an
        // alias, and has the alias's size, so the pointer is valid for `lens` bytes. A part
        // starts `offset` elements into its concat output (a temporary or an output) and spans
        // its rows and the gaps between them, which `validate` checked lie inside that output.
        for (id, buf) in p.buffers.iter().enumerate() {
            match buf.kind {
                BufferKind::Alias { of } => ptrs[id] = ptrs[of.index()],
                BufferKind::Part {
                    of,
                    offset,
                    row,
                    stride,
                } => {
                    let e = buf.dtype.size_bytes();
                    let rows = buf.numel().checked_div(row).unwrap_or(0);
                    let span = rows.saturating_sub(1) * stride + row.min(buf.numel());
                    ptrs[id] = ptrs[of.index()].wrapping_add(offset * e);
                    lens[id] = span * e;
                }
                _ => {}
            }
        }
        let buffers = Buffers { ptrs, lens };
        let mut run_stages = || -> Result<()> {
            for (index, stage) in &self.plan.stages {
                let start = times.is_some().then(Instant::now);
                run_stage(stage, &buffers).map_err(|message| {
                    let k = &p.kernels[*index];
                    Error::Eval {
                        node: k.name.clone(),
                        op: k.op_name(),
                        message,
                    }
                })?;
                if let (Some(times), Some(start)) = (times.as_deref_mut(), start) {
                    times[*index].record(start);
                }
            }
            Ok(())
        };
        if self.plan.uses_threads {
            crate::awake::with_workers_awake(run_stages)?;
        } else {
            run_stages()?;
        }
        // Fetches not written in place are copied before updates commit (start-of-run values).
        for (j, (&b, out)) in p.fetches.iter().zip(outputs.iter_mut()).enumerate() {
            if p.buffer(b).kind != BufferKind::Output(j) {
                let len = buffers.lens[b.index()];
                // SAFETY: the output has the buffer's dtype and dims, so `len` bytes, and is
                // freshly allocated, so it does not overlap the source.
                unsafe { std::ptr::copy_nonoverlapping(buffers.ptr(b), out.as_mut_ptr(), len) }
            }
        }
        // Every guard is checked before anything commits, so a failed run changes no variable.
        arena.check()?;
        let results = outputs
            .into_iter()
            .map(GuardedOutput::finish)
            .collect::<Result<Vec<_>>>()?;
        // Updates are copied into the variables' own storage (no new tensor per step): from
        // the arena, which is not reused before it goes back to the pool below, or from the
        // result tensor of a fetched update.
        for u in &p.updates {
            let RunVariables::Owned(variables) = &mut variables else {
                break;
            };
            let var = p.buffer(p.variables[u.variable]);
            let start = u.offset * var.dtype.size_bytes();
            let src = match p.buffer(u.value).kind {
                BufferKind::Output(j) => results[j].as_ptr(),
                _ => buffers.ptr(u.value).cast_const(),
            };
            // SAFETY: `Program::validate` checked that the value buffer (a temporary or an
            // output, never a variable) has the variable's dtype and holds `offset + numel`
            // elements; `check_inputs` checked that `variables[u.variable]` has the variable's
            // dtype and dims, so `size_bytes` bytes; the two are different allocations.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.wrapping_add(start),
                    variables[u.variable].as_mut_ptr(),
                    var.size_bytes(),
                )
            }
        }
        drop(buffers);
        if let Ok(mut pool) = self.arenas.lock() {
            pool.push(arena);
        }
        Ok(results)
    }
}

fn run_stage(stage: &Stage, b: &Buffers) -> std::result::Result<(), String> {
    match stage {
        Stage::Jit {
            code,
            buffers,
            split,
        } => {
            let ptrs: Vec<*mut u8> = buffers.iter().map(|&id| b.ptr(id)).collect();
            match split {
                None => {
                    // SAFETY: the codegen modules generate code that touches exactly these
                    // buffers within their planned sizes (tested with guard regions).
                    unsafe { code.call(&ptrs) }
                }
                Some(split) => run_split(code, &ptrs, *split),
            }
        }
        Stage::MatMul {
            a,
            transpose_a,
            b: w,
            b_batch,
            out,
            batch,
            m,
            n,
            k,
            epilogue,
        } => {
            let (m, n, k) = (*m, *n, *k);
            let a_all = b.f32s(*a);
            let out_all = b.f32s_mut(*out);
            let bias = epilogue.bias.map(|id| b.f32s(id));
            let ep = gemm_epilogue(epilogue, bias);
            let mut packed_shared = None;
            for i in 0..*batch {
                let a_i = &a_all[i * m * k..(i + 1) * m * k];
                let transposed_a;
                let (a_mat, lda) = if *transpose_a {
                    transposed_a = transpose(a_i, k, m);
                    (&transposed_a[..], k)
                } else {
                    (a_i, k)
                };
                let packed_now;
                let packed: &PackedB = match w {
                    Weights::Packed(p) => p,
                    Weights::PackedGroups(_) => {
                        return Err("internal error: a matmul got grouped weights".into());
                    }
                    Weights::Runtime {
                        buffer,
                        transposed,
                        cache,
                    } => {
                        if *b_batch == 1 {
                            if packed_shared.is_none() {
                                let pack =
                                    |src: &[f32]| Ok(vec![gemm::pack_b(k, n, src, *transposed)?]);
                                packed_shared = Some(match cache {
                                    Some(cache) => cache.get_or_pack(b.f32s(*buffer), pack)?,
                                    None => Arc::new(PackedEntry::uncached(pack(b.f32s(*buffer))?)),
                                });
                            }
                            &packed_shared.as_ref().expect("just packed").packed()[0]
                        } else {
                            let all = b.f32s(*buffer);
                            packed_now =
                                gemm::pack_b(k, n, &all[i * k * n..(i + 1) * k * n], *transposed)?;
                            &packed_now
                        }
                    }
                };
                gemm::sgemm(
                    m,
                    n,
                    k,
                    a_mat,
                    lda,
                    packed,
                    &mut out_all[i * m * n..(i + 1) * m * n],
                    n,
                    &ep,
                )?;
            }
            Ok(())
        }
        Stage::Conv {
            input,
            in_dims,
            filter,
            depth,
            cout,
            groups,
            geometry,
            out,
            ldc,
            epilogue,
            prologue,
            nchw_from,
        } => {
            let packed_now;
            let filters: &[PackedB] = match filter {
                Weights::Packed(p) => std::slice::from_ref(p),
                Weights::PackedGroups(p) => p,
                Weights::Runtime { buffer, cache, .. } => {
                    let pack = |src: &[f32]| gemm::pack_conv_groups(src, *depth, *cout, *groups);
                    packed_now = match cache {
                        Some(cache) => cache.get_or_pack(b.f32s(*buffer), pack)?,
                        None => Arc::new(PackedEntry::uncached(pack(b.f32s(*buffer))?)),
                    };
                    packed_now.packed()
                }
            };
            // A folded residual has the output's shape: rows of `cout` values.
            let ep = conv_epilogue(epilogue, b, *cout);
            if let Some(p) = prologue {
                // Planned for a plain 1x1 conv only: a GEMM over the pixels.
                let [n, h, w, cin] = *in_dims;
                let a = gemm::MatrixA {
                    a: b.f32s(*input),
                    lda: cin,
                    prologue: Some(gemm::Prologue {
                        scale: &p.scale,
                        shift: &p.shift,
                        activation: p.activation,
                    }),
                };
                let m = n * h * w;
                return gemm::sgemm_prologue(
                    m,
                    *cout,
                    cin,
                    a,
                    &filters[0],
                    b.f32s_mut(*out),
                    *ldc,
                    &ep,
                );
            }
            if nchw_from.is_some() {
                // Planned for one group only (`plan/nchw_input.rs`).
                return gemm::conv2d_nchw_input_strided(
                    b.f32s(*input),
                    *in_dims,
                    &filters[0],
                    geometry,
                    b.f32s_mut(*out),
                    *ldc,
                    &ep,
                );
            }
            gemm::conv2d_nhwc_grouped_strided(
                b.f32s(*input),
                *in_dims,
                filters,
                geometry,
                b.f32s_mut(*out),
                *ldc,
                &ep,
            )
        }
        Stage::Winograd {
            input,
            in_dims,
            filter,
            geometry,
            out,
            ldc,
            epilogue,
        } => gemm::conv2d_winograd_strided(
            b.f32s(*input),
            *in_dims,
            filter,
            geometry,
            b.f32s_mut(*out),
            *ldc,
            // The residual has the output's shape: one row of `cout` values per pixel.
            &conv_epilogue(epilogue, b, filter.cout()),
        ),
        Stage::DepthwisePointwise {
            depthwise: _,
            window,
            input,
            filter,
            window_epilogue,
            pointwise,
            out,
            epilogue,
        } => {
            let cout = pointwise.n();
            crate::host::depthwise_pointwise(
                window,
                b.f32s(*input),
                b.f32s(*filter),
                window_epilogue.bias.map(|id| b.f32s(id)),
                window_epilogue.activation,
                pointwise,
                b.f32s_mut(*out),
                &conv_epilogue(epilogue, b, cout),
            )
        }
        Stage::Window {
            window,
            input,
            filter,
            out,
            epilogue,
        } => window.run(
            b.f32s(*input),
            filter.map(|f| b.f32s(f)),
            epilogue.bias.map(|id| b.f32s(id)),
            epilogue.activation,
            b.f32s_mut(*out),
        ),
        Stage::Host(kernel) => {
            let inputs = kernel
                .inputs
                .iter()
                .map(|h| b.view(h.id, h.dtype))
                .collect::<Result<Vec<_>, _>>()?;
            let out = b.view_mut(kernel.output.id, kernel.output.dtype)?;
            kernel.run(&inputs, out)
        }
    }
}

/// Below this many FLOPs a kernel runs on the calling thread: waking a second worker costs
/// several microseconds (W1, the 500 kFLOP seed conv: 18.7 us on one thread, 32 us split
/// over two on a loaded 2-core machine; `kiln bench --threads 1|2`). Within a run the
/// workers spin (`awake.rs`), so kernels from half a MFLOP split: SqueezeNet's 13x13x256
/// max_pool (0.78 M) 0.031 -> 0.025 ms on two threads of a noisy Zen 5 host.
pub(crate) const PARALLEL_MIN_WORK: u64 = 1 << 19;

/// Runs a range-taking kernel over `0..extent`, split into disjoint ranges across rayon's
/// threads when the work is large enough. Disjoint ranges write disjoint outputs, so results
/// are the same bits for any split.
fn run_split(
    code: &CompiledKernel,
    ptrs: &[*mut u8],
    split: Split,
) -> std::result::Result<(), String> {
    let threads = rayon::current_num_threads();
    let chunks = if split.work >= PARALLEL_MIN_WORK && threads > 1 {
        split.extent.min(threads * 4).max(1)
    } else {
        1
    };
    // Raw pointers are not Send; the addresses are, and the buffers outlive this call.
    let addrs: Vec<usize> = ptrs.iter().map(|&p| p as usize).collect();
    let call_range = |c: usize| -> std::result::Result<(), String> {
        let start = split.extent * c / chunks;
        let end = split.extent * (c + 1) / chunks;
        let mut range = [start as i64, end as i64];
        let mut args: Vec<*mut u8> = addrs.iter().map(|&a| a as *mut u8).collect();
        args.push(range.as_mut_ptr().cast());
        // SAFETY: as for an unsplit call; `range` lives until the call returns, and threads
        // given disjoint ranges write disjoint output elements.
        unsafe { code.call(&args) }
    };
    if chunks == 1 {
        call_range(0)
    } else {
        (0..chunks).into_par_iter().try_for_each(call_range)
    }
}

fn gemm_epilogue<'a>(e: &FusedEpilogue, bias: Option<&'a [f32]>) -> Epilogue<'a> {
    Epilogue {
        bias,
        add: None,
        activation: e.activation,
    }
}

/// [`gemm_epilogue`] with the folded residual, whose rows are `ld` values apart.
fn conv_epilogue<'a>(e: &FusedEpilogue, b: &'a Buffers, ld: usize) -> Epilogue<'a> {
    Epilogue {
        add: e.residual.map(|id| Residual {
            data: b.f32s(id),
            ld,
        }),
        ..gemm_epilogue(e, e.bias.map(|id| b.f32s(id)))
    }
}

fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}
