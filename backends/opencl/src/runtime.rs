//! Running a rendered program: device buffers made once per executable, feeds in and fetches
//! out per run, variables kept on the device.
//!
//! Every buffer of the program has a fixed home on the device for the executable's life: feeds,
//! variables, constants and direct outputs get a buffer each, temporaries live in one arena
//! buffer at their planned offsets (the kernels address them from the arena argument), and the
//! kernel objects are built with their arguments bound once. A run then only writes the feeds,
//! enqueues the kernels in order on one in-order queue and reads the fetches back.
//!
//! Variables: the [`Executable`] contract hands their values in on every run, so the device copy
//! is kept together with the bytes last uploaded or committed; a variable is uploaded again
//! only when the caller's value differs from those bytes (a memcmp instead of a transfer), and a
//! committed update is copied device-to-device into the variable's buffer.
//!
//! Invariant: runs are serialised by a mutex (buffers are shared by every run of the
//! executable); kernels write only their output (the memory plan guarantees it overlaps nothing
//! they read). A kernel that raises a shape-decided failure is never launched, and the gather
//! index check reports through the error flag, read after the queue drains.

use crate::backend::DeviceCtx;
use crate::device::cl_err;
use crate::render::{Arg, Rendered};
use kiln_ir::backend::{Executable, ExecutableInfo, KernelTime};
use kiln_ir::lower::axis_index;
use kiln_ir::op::Op;
use kiln_ir::program::{BufferId, BufferKind, Program};
use kiln_ir::shape::fmt_dims;
use kiln_ir::tensor::Data;
use kiln_ir::{DType, Error, Result, Tensor};
use ocl::{Buffer, Kernel, Queue};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A compiled program on one OpenCL device.
pub struct OpenClExecutable {
    program: Program,
    rendered: Rendered,
    state: Mutex<State>,
    _ctx: Arc<DeviceCtx>,
}

/// The device side of an executable.
struct State {
    queue: Queue,
    /// Per program kernel: its kernel object (`None` when nothing is launched).
    kernels: Vec<Option<Kernel>>,
    /// Per program buffer: its own device buffer (`None` for temporaries).
    mems: Vec<Option<Buffer<u8>>>,
    arena: Buffer<u8>,
    flag: Buffer<i32>,
    uses_flag: bool,
    /// Per variable: the bytes its device buffer holds (`None` before the first upload).
    resident: Vec<Option<Vec<u8>>>,
}

/// A tensor's elements as bytes.
fn bytes(t: &Tensor) -> &[u8] {
    let n = t.numel() * t.dtype().size_bytes();
    // SAFETY: `as_ptr` points to the tensor's `numel` elements of its dtype, contiguous and
    // initialised (bool elements are single bytes), borrowed for the returned lifetime.
    unsafe { std::slice::from_raw_parts(t.as_ptr(), n) }
}

/// A device buffer of `len` bytes (at least one: OpenCL rejects empty buffers).
fn device_buffer(queue: &Queue, len: usize, what: &str) -> Result<Buffer<u8>> {
    Buffer::<u8>::builder()
        .queue(queue.clone())
        .len(len.max(1))
        .build()
        .map_err(cl_err(&format!("allocating {len} bytes for {what}")))
}

impl OpenClExecutable {
    /// Allocates the program's device buffers, uploads its constants and binds every kernel.
    pub fn new(
        ctx: Arc<DeviceCtx>,
        program: Program,
        rendered: Rendered,
        built: &ocl::Program,
    ) -> Result<OpenClExecutable> {
        let queue =
            Queue::new(&ctx.context, ctx.device, None).map_err(cl_err("creating a queue"))?;
        let mut mems = Vec::with_capacity(program.buffers.len());
        for buf in &program.buffers {
            let mem = match &buf.kind {
                BufferKind::Temporary { .. } | BufferKind::Alias { .. } => None,
                kind => {
                    let m = device_buffer(&queue, buf.size_bytes(), &format!("%{}", buf.name))?;
                    if let BufferKind::Constant(t) = kind
                        && t.numel() > 0
                    {
                        m.write(bytes(t))
                            .enq()
                            .map_err(cl_err(&format!("uploading constant %{}", buf.name)))?;
                    }
                    Some(m)
                }
            };
            mems.push(mem);
        }
        let arena = device_buffer(&queue, program.arena_bytes, "the arena")?;
        let flag = Buffer::<i32>::builder()
            .queue(queue.clone())
            .len(4)
            .build()
            .map_err(cl_err("allocating the error flag"))?;
        let mut kernels = Vec::with_capacity(rendered.kernels.len());
        let mut uses_flag = false;
        for (k, r) in rendered.kernels.iter().enumerate() {
            let Some(launch) = &r.launch else {
                kernels.push(None);
                continue;
            };
            let name = &program.kernels[k].name;
            let mut b = Kernel::builder();
            b.program(built)
                .name(launch.entry.clone())
                .queue(queue.clone())
                .global_work_size(dims(&launch.global))
                .local_work_size(dims(&launch.local));
            for arg in &launch.args {
                match arg {
                    Arg::Arena => b.arg(&arena),
                    Arg::ErrorFlag => {
                        uses_flag = true;
                        b.arg(&flag)
                    }
                    Arg::Buffer(id) => match mems.get(id.index()).and_then(Option::as_ref) {
                        Some(m) => b.arg(m),
                        None => {
                            return Err(Error::Invalid(format!(
                                "opencl: kernel %{name} takes buffer {id} as an argument, \
                                 but it lives in the arena"
                            )));
                        }
                    },
                };
            }
            // SAFETY: the arguments are `__global` pointers of other element types than the
            // byte buffers bound to them; the renderer sized every buffer for its dtype.
            unsafe {
                b.disable_arg_type_check();
            }
            kernels
                .push(Some(b.build().map_err(cl_err(&format!(
                    "creating the kernel of %{name}"
                )))?));
        }
        let resident = vec![None; program.variables.len()];
        Ok(OpenClExecutable {
            state: Mutex::new(State {
                queue,
                kernels,
                mems,
                arena,
                flag,
                uses_flag,
                resident,
            }),
            program,
            rendered,
            _ctx: ctx,
        })
    }

    /// The generated OpenCL C.
    pub fn source(&self) -> &str {
        &self.rendered.source
    }
}

/// Work sizes as `ocl` takes them.
fn dims(v: &[usize]) -> ocl::SpatialDims {
    match *v {
        [a] => ocl::SpatialDims::One(a),
        [a, b] => ocl::SpatialDims::Two(a, b),
        [a, b, c, ..] => ocl::SpatialDims::Three(a, b, c),
        [] => ocl::SpatialDims::One(1),
    }
}

impl Executable for OpenClExecutable {
    /// The device does the work; the host only enqueues it.
    fn uses_threads(&self) -> bool {
        false
    }

    fn run(&self, feeds: &[&Tensor], variables: &mut [Tensor]) -> Result<Vec<Tensor>> {
        self.execute(feeds, variables, None)
    }

    fn run_profiled(
        &self,
        feeds: &[&Tensor],
        variables: &mut [Tensor],
    ) -> Result<(Vec<Tensor>, Vec<KernelTime>)> {
        let mut times = self.program.zeroed_kernel_times();
        let outputs = self.execute(feeds, variables, Some(&mut times))?;
        Ok((outputs, times))
    }

    fn info(&self) -> ExecutableInfo {
        self.program.executable_info()
    }
}

impl OpenClExecutable {
    fn execute(
        &self,
        feeds: &[&Tensor],
        variables: &mut [Tensor],
        mut times: Option<&mut Vec<KernelTime>>,
    ) -> Result<Vec<Tensor>> {
        self.program.check_inputs(feeds, variables)?;
        let p = &self.program;
        // A shape-decided failure fails the run before anything is launched: the kernels before
        // it have no visible effect (nothing commits), so the outcome is the same.
        if let Some((k, msg)) = self
            .rendered
            .kernels
            .iter()
            .enumerate()
            .find_map(|(k, r)| r.failure.as_ref().map(|m| (k, m)))
        {
            return Err(kernel_error(p, k, msg.clone()));
        }
        let mut st = self
            .state
            .lock()
            .map_err(|_| Error::Invalid("opencl: an earlier run panicked".into()))?;
        let st = &mut *st;
        for (t, &b) in feeds.iter().zip(&p.feeds) {
            st.upload(b, bytes(t))?;
        }
        for (i, (t, &b)) in variables.iter().zip(&p.variables).enumerate() {
            let now = bytes(t);
            if st.resident[i].as_deref() != Some(now) {
                st.upload(b, now)?;
                st.resident[i] = Some(now.to_vec());
            }
        }
        if st.uses_flag {
            st.flag
                .write(&[0i32; 4][..])
                .enq()
                .map_err(cl_err("clearing the error flag"))?;
        }
        for (k, kernel) in st.kernels.iter().enumerate() {
            let Some(kernel) = kernel else { continue };
            let start = times.is_some().then(Instant::now);
            // SAFETY: the kernel's arguments are this executable's live buffers, sized for
            // every access the renderer emits (indices are bounded by the baked-in dims).
            unsafe { kernel.enq() }
                .map_err(|e| kernel_error(p, k, format!("launch failed: {e}")))?;
            if let (Some(times), Some(start)) = (times.as_deref_mut(), start) {
                st.queue
                    .finish()
                    .map_err(|e| kernel_error(p, k, e.to_string()))?;
                times[k].record(start);
            }
        }
        st.queue.finish().map_err(cl_err("running the program"))?;
        if st.uses_flag {
            let mut flag = [0i32; 4];
            st.flag
                .read(&mut flag[..])
                .enq()
                .map_err(cl_err("reading the error flag"))?;
            if flag[0] != 0 {
                return Err(gather_error(p, flag));
            }
        }
        let mut results = Vec::with_capacity(p.fetches.len());
        for &b in &p.fetches {
            results.push(match &p.buffer(b).kind {
                BufferKind::Feed(i) => feeds[*i].clone(),
                BufferKind::Variable(i) => variables[*i].clone(),
                BufferKind::Constant(t) => (**t).clone(),
                _ => st.download(p, b)?,
            });
        }
        for u in &p.updates {
            let var = p.variables[u.variable];
            let value = st.download_part(p, u.value, u.offset, p.buffer(var))?;
            st.copy_on_device(p, u.value, u.offset, var)?;
            st.resident[u.variable] = Some(bytes(&value).to_vec());
            variables[u.variable] = value;
        }
        if !p.updates.is_empty() {
            st.queue
                .finish()
                .map_err(cl_err("committing variable updates"))?;
        }
        Ok(results)
    }
}

impl State {
    /// Where buffer `b` lives: its own device buffer at offset 0, or the arena at its offset.
    fn home(&self, p: &Program, b: BufferId) -> Result<(&Buffer<u8>, usize)> {
        match (
            &p.buffer(b).kind,
            self.mems.get(b.index()).and_then(Option::as_ref),
        ) {
            (BufferKind::Temporary { offset }, _) => Ok((&self.arena, *offset)),
            // `validate` guarantees the viewed buffer is not an alias itself.
            (BufferKind::Alias { of }, _) if *of != b => self.home(p, *of),
            (_, Some(m)) => Ok((m, 0)),
            _ => Err(Error::Invalid(format!(
                "opencl: buffer {b} has no device memory"
            ))),
        }
    }

    /// Writes `data` to buffer `b`'s own device buffer.
    fn upload(&self, b: BufferId, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mem = self.mems.get(b.index()).and_then(Option::as_ref);
        let mem =
            mem.ok_or_else(|| Error::Invalid(format!("opencl: buffer {b} has no device memory")))?;
        mem.write(data)
            .enq()
            .map_err(cl_err("uploading a feed or variable"))
    }

    /// A fresh host tensor holding buffer `b`'s device contents.
    fn download(&self, p: &Program, b: BufferId) -> Result<Tensor> {
        self.download_part(p, b, 0, p.buffer(b))
    }

    /// A tensor of `like`'s type read from buffer `b` starting at element `start` (a variable
    /// update's new value: all of an assign's buffer, one part of an optimizer update's).
    fn download_part(
        &self,
        p: &Program,
        b: BufferId,
        start: usize,
        like: &kiln_ir::program::Buffer,
    ) -> Result<Tensor> {
        let buf = like;
        let mut t = Tensor::zeros_of(buf.dtype, &buf.dims);
        let n = buf.size_bytes();
        if n == 0 {
            return Ok(t);
        }
        let (mem, offset) = self.home(p, b)?;
        let offset = offset + start * buf.dtype.size_bytes();
        let read = cl_err("reading a result back");
        if buf.dtype == DType::Bool {
            // Read as bytes and normalise: a `bool` must never hold anything but 0 or 1.
            let mut raw = vec![0u8; n];
            mem.read(&mut raw[..]).offset(offset).enq().map_err(read)?;
            return Tensor::new(&buf.dims, Data::Bool(raw.iter().map(|&x| x != 0).collect()));
        }
        // SAFETY: `t` owns `numel` elements of an f32/i32/i64 dtype, so `n` initialised bytes
        // for which every bit pattern is a valid value; the slice is dropped before `t` is used.
        let dst = unsafe { std::slice::from_raw_parts_mut(t.as_mut_ptr(), n) };
        mem.read(dst).offset(offset).enq().map_err(read)?;
        Ok(t)
    }

    /// Enqueues a device-side copy into buffer `to` of its size in bytes from buffer `from`,
    /// starting at element `offset` (a variable update's new value).
    fn copy_on_device(
        &self,
        p: &Program,
        from: BufferId,
        offset: usize,
        to: BufferId,
    ) -> Result<()> {
        let n = p.buffer(to).size_bytes();
        if n == 0 {
            return Ok(());
        }
        let (src, src_off) = self.home(p, from)?;
        let src_off = src_off + offset * p.buffer(from).dtype.size_bytes();
        let (dst, dst_off) = self.home(p, to)?;
        src.copy(dst, Some(dst_off), Some(n))
            .offset(src_off)
            .enq()
            .map_err(cl_err("committing a variable update"))
    }
}

/// An error of kernel `k`, naming its node and op.
fn kernel_error(p: &Program, k: usize, message: String) -> Error {
    let kernel = &p.kernels[k];
    Error::Eval {
        node: kernel.name.clone(),
        op: kernel.op_name(),
        message,
    }
}

/// The error a gather or gather_grad kernel reported through the flag: `[kernel + 1, low, high, position]`
/// (worded like the reference evaluator's).
fn gather_error(p: &Program, flag: [i32; 4]) -> Error {
    let k = (flag[0] as usize).wrapping_sub(1);
    let value = (flag[1] as u32 as i64) | ((flag[2] as i64) << 32);
    match p.kernels.get(k) {
        Some(kernel) => {
            let (axis, params, indices) = match (&kernel.main, kernel.inputs.as_slice()) {
                (Some(Op::Gather { axis }), [pb, ib]) => (
                    axis_index(*axis),
                    p.buffer(*pb).dims.to_vec(),
                    p.buffer(*ib).dims.to_vec(),
                ),
                // gather_grad's output has the shape of the params it scatters into.
                (Some(Op::GatherGrad { axis, .. }), [_, ib]) => (
                    axis_index(*axis),
                    p.buffer(kernel.output).dims.to_vec(),
                    p.buffer(*ib).dims.to_vec(),
                ),
                _ => (0, Vec::new(), Vec::new()),
            };
            let n = params.get(axis).copied().unwrap_or(0);
            kernel_error(
                p,
                k,
                format!(
                    "index {value} (at flat position {} of indices {}) is out of range for axis \
                     {axis} of size {n} of params {} (valid: -{n}..{n})",
                    flag[3],
                    fmt_dims(&indices),
                    fmt_dims(&params)
                ),
            )
        }
        None => Error::Invalid(format!("opencl: unknown kernel {k} raised the error flag")),
    }
}
