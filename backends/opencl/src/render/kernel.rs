//! [`KernelSrc`]: the bookkeeping of one generated OpenCL C kernel — which device buffers it
//! takes as arguments, how a temporary is addressed inside the arena, and the index type.
//!
//! Invariants: every temporary is read through the single `arena` argument at its planned byte
//! offset, baked into the source (offsets are multiples of 64, so every element type is aligned);
//! every other buffer is its own argument, listed once, in first-use order, which is the order
//! [`KernelSrc::finish`] reports in [`Arg`]s so the runtime binds exactly what the source
//! declares. The index type is `int` when every buffer the kernel touches has fewer than 2^31
//! elements (32-bit division by constants is much cheaper on GPUs), else `long`.

use super::Arg;
use super::expr::ctype;
use kiln_ir::program::{Buffer, BufferId, Kernel, Program};

/// Largest element count for which `int` indices are used.
const INT_INDEX_LIMIT: usize = i32::MAX as usize;

/// One kernel being rendered.
pub(crate) struct KernelSrc<'p> {
    /// The program.
    pub program: &'p Program,
    /// The kernel.
    pub kernel: &'p Kernel,
    /// The kernel's index in the program.
    pub index: usize,
    /// The C function name (`k<index>`).
    pub entry: String,
    /// The index type (`int` or `long`).
    pub it: &'static str,
    args: Vec<Arg>,
    params: Vec<String>,
    decls: Vec<String>,
    seen: Vec<BufferId>,
}

impl<'p> KernelSrc<'p> {
    /// A kernel for `program.kernels[index]`.
    pub fn new(program: &'p Program, index: usize) -> KernelSrc<'p> {
        let kernel = &program.kernels[index];
        let largest = kernel
            .reads()
            .into_iter()
            .chain([kernel.output])
            .map(|b| program.buffer(b).numel())
            .max()
            .unwrap_or(0);
        KernelSrc {
            program,
            kernel,
            index,
            entry: format!("k{index}"),
            it: if largest < INT_INDEX_LIMIT {
                "int"
            } else {
                "long"
            },
            args: Vec::new(),
            params: Vec::new(),
            decls: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// The output buffer.
    pub fn out(&self) -> &'p Buffer {
        self.program.buffer(self.kernel.output)
    }

    /// The `i`-th main operand's buffer, or an error when the kernel has fewer.
    pub fn input(&self, i: usize) -> Result<&'p Buffer, String> {
        self.kernel
            .inputs
            .get(i)
            .map(|&b| self.program.buffer(b))
            .ok_or_else(|| {
                format!(
                    "{} expects operand {i}, the kernel has {}",
                    self.kernel.op_name(),
                    self.kernel.inputs.len()
                )
            })
    }

    /// The C name of the `i`-th main operand (declaring it on first use).
    pub fn input_name(&mut self, i: usize) -> Result<String, String> {
        self.input(i)?;
        Ok(self.buf(self.kernel.inputs[i]))
    }

    /// The C name of the output buffer.
    pub fn out_name(&mut self) -> String {
        self.buf(self.kernel.output)
    }

    /// The C name (`b<id>`) of buffer `b`, declaring it on first use: a parameter of its own,
    /// or a typed pointer into the arena for a temporary.
    pub fn buf(&mut self, b: BufferId) -> String {
        let name = format!("b{}", b.0);
        if self.seen.contains(&b) {
            return name;
        }
        self.seen.push(b);
        let buf = self.program.buffer(b);
        let ty = ctype(buf.dtype);
        // A temporary, or an alias of one, is a pointer into the arena.
        match self.program.arena_offset(b) {
            Some(offset) => {
                self.arena();
                self.decls.push(format!(
                    "    __global {ty}* {name} = (__global {ty}*)(arena + {offset});"
                ));
            }
            // An alias of a feed, variable or constant binds that buffer's memory.
            _ => {
                self.args.push(Arg::Buffer(self.program.storage(b)));
                self.params.push(format!("__global {ty}* {name}"));
            }
        }
        name
    }

    /// The error-flag argument (`kerr`, four ints: kernel index + 1, the offending value as
    /// two halves, and its position), declared on first use.
    pub fn error_flag(&mut self) -> &'static str {
        if !self.args.contains(&Arg::ErrorFlag) {
            self.args.push(Arg::ErrorFlag);
            self.params.push("__global volatile int* kerr".into());
        }
        "kerr"
    }

    fn arena(&mut self) {
        if !self.args.contains(&Arg::Arena) {
            self.args.push(Arg::Arena);
            self.params.push("__global uchar* arena".into());
        }
    }

    /// The complete C function with `body` (which may use every name handed out), preceded by
    /// `attrs` (e.g. `reqd_work_group_size`) and a comment naming the graph nodes, and the
    /// argument list the runtime binds.
    pub fn finish(self, attrs: &str, body: &str) -> (String, Vec<Arg>) {
        let nodes: Vec<String> = self.kernel.nodes.iter().map(|n| format!("%{n}")).collect();
        let out = self.program.buffer(self.kernel.output);
        let mut s = format!(
            "// {} {} -> {}{:?} [{}]\n__kernel {attrs}void {}({}) {{\n",
            self.kernel.name,
            self.kernel.op_name(),
            out.dtype,
            out.dims.as_slice(),
            nodes.join(" "),
            self.entry,
            self.params.join(", ")
        );
        for d in &self.decls {
            s.push_str(d);
            s.push('\n');
        }
        s.push_str(body);
        s.push_str("}\n\n");
        (s, self.args)
    }
}
