//! A [`Program`] interpreter: runs each kernel with the reference evaluator, on a real byte
//! arena laid out exactly as the plan says.
//!
//! It is the test oracle for lowering and the template a backend's runtime follows: check the
//! feeds and variables against their buffers, allocate one arena of `arena_bytes` and one
//! tensor per direct output, run the kernels in order, copy the fetches that are not written
//! directly, then commit the variable updates.
//!
//! Because temporaries live in one shared byte arena, a wrong plan corrupts results: before a
//! kernel runs, its output's bytes are poisoned (0xFF, a NaN pattern for f32) and only then are
//! its inputs read, so an output that overlaps a live input is caught just as an in-place
//! backend would hit it. [`run_program`] checks the program's structure (so nothing here can
//! index out of bounds) but not its overlaps; [`Program::validate`] checks those. Epilogues are evaluated a whole step at a time: each load gathers a
//! tensor of the output's dims through its strides, and each step is the reference evaluator's
//! unary or binary op on those tensors, so results are bit-identical to evaluating the graph
//! node by node.

use crate::eval::eval_op;
use crate::op::Op;
use crate::program::{BufferId, BufferKind, Kernel, Operand, Program, Step};
use crate::tensor::Data;
use crate::{DType, Error, Result, Tensor};

/// Runs `program` once with `feeds` and `variables` (in the request's orders), returning one
/// tensor per fetch and committing variable updates at the end, like
/// [`crate::backend::Executable::run`].
pub fn run_program(
    program: &Program,
    feeds: &[&Tensor],
    variables: &mut [Tensor],
) -> Result<Vec<Tensor>> {
    // Structure only: overlapping temporaries are deliberately not rejected here, so that a bad
    // plan shows up as corrupted results (which is what this interpreter exists to test).
    program.check_structure()?;
    program.check_inputs(feeds, variables)?;
    let mut state = State {
        program,
        feeds,
        variables,
        arena: vec![0xFF; program.arena_bytes],
        outputs: program
            .fetches
            .iter()
            .map(|&b| {
                let buf = program.buffer(b);
                Tensor::zeros_of(buf.dtype, &buf.dims)
            })
            .collect(),
    };
    for kernel in &program.kernels {
        state.run_kernel(kernel)?;
    }
    // Fetches not written directly are copied before updates commit (start-of-run values).
    let mut results = Vec::with_capacity(program.fetches.len());
    for (j, &b) in program.fetches.iter().enumerate() {
        let direct = program.buffer(b).kind == BufferKind::Output(j);
        results.push(if direct {
            state.outputs[j].clone()
        } else {
            state.read(b)?
        });
    }
    let updates: Vec<(usize, Tensor)> = program
        .updates
        .iter()
        .map(|u| {
            let value = state.read(u.value)?;
            let var = program.buffer(program.variables[u.variable]);
            Ok((u.variable, committed_part(value, u.offset, &var.dims)?))
        })
        .collect::<Result<_>>()?;
    for (slot, value) in updates {
        state.variables[slot] = value;
    }
    Ok(results)
}

struct State<'a> {
    program: &'a Program,
    feeds: &'a [&'a Tensor],
    variables: &'a mut [Tensor],
    arena: Vec<u8>,
    outputs: Vec<Tensor>,
}

impl State<'_> {
    fn run_kernel(&mut self, kernel: &Kernel) -> Result<()> {
        let out = self.program.buffer(kernel.output);
        // A concat whose operands were written in place into its output reads them before
        // its output is poisoned (they are part of it).
        let reads_own_parts = kernel.inputs.iter().any(|&b| {
            matches!(self.program.buffer(b).kind, BufferKind::Part { of, .. } if of == kernel.output)
        });
        let early_args = match reads_own_parts {
            true => Some(self.read_all(&kernel.inputs)?),
            false => None,
        };
        if let BufferKind::Temporary { offset } = out.kind {
            self.arena[offset..offset + out.size_bytes()].fill(0xFF);
        }
        let fail = |message: String| Error::Eval {
            node: kernel.name.clone(),
            op: kernel.op_name(),
            message,
        };
        let main = match &kernel.main {
            Some(op) => {
                let args = match early_args {
                    Some(args) => args,
                    None => self.read_all(&kernel.inputs)?,
                };
                let args: Vec<&Tensor> = args.iter().collect();
                Some(eval_op(op, &args).map_err(fail)?)
            }
            None => None,
        };
        let e = &kernel.epilogue;
        let value = if e.is_identity() {
            main.ok_or_else(|| fail("an elementwise kernel with no steps".into()))?
        } else {
            let loads = e
                .loads
                .iter()
                .map(|l| gather(&self.read(l.buffer)?, &l.strides, &out.dims).map_err(fail))
                .collect::<Result<Vec<_>>>()?;
            let mut steps: Vec<Tensor> = Vec::with_capacity(e.steps.len());
            let get = |o: Operand, steps: &[Tensor]| -> Result<Tensor> {
                match o {
                    Operand::Main => main.clone().ok_or_else(|| fail("no main result".into())),
                    Operand::Load(i) => loads
                        .get(i)
                        .cloned()
                        .ok_or_else(|| fail(format!("no load l{i}"))),
                    Operand::Step(i) => steps
                        .get(i)
                        .cloned()
                        .ok_or_else(|| fail(format!("no step s{i}"))),
                }
            };
            for s in &e.steps {
                let v = match *s {
                    Step::Unary(u, x) => eval_op(&Op::Unary(u), &[&get(x, &steps)?]),
                    Step::Binary(b, x, y) => {
                        eval_op(&Op::Binary(b), &[&get(x, &steps)?, &get(y, &steps)?])
                    }
                };
                steps.push(v.map_err(fail)?);
            }
            get(e.result, &steps)?
        };
        self.write(kernel.output, value)
            .map_err(|e| fail(e.to_string()))
    }

    fn read_all(&self, buffers: &[BufferId]) -> Result<Vec<Tensor>> {
        buffers.iter().map(|&b| self.read(b)).collect()
    }

    /// The current value of buffer `b`.
    fn read(&self, b: BufferId) -> Result<Tensor> {
        let buf = self.program.buffer(b);
        Ok(match &buf.kind {
            BufferKind::Feed(i) => self.feeds[*i].clone(),
            BufferKind::Variable(i) => self.variables[*i].clone(),
            BufferKind::Constant(t) => (**t).clone(),
            BufferKind::Output(j) => self.outputs[*j].clone(),
            BufferKind::Temporary { offset } => {
                let bytes = &self.arena[*offset..*offset + buf.size_bytes()];
                Tensor::new(&buf.dims, decode(buf.dtype, bytes))?
            }
            // `check_structure` guarantees the source is not an alias, so this recurses once.
            BufferKind::Alias { of } if *of != b => self.read(*of)?.reshaped(&buf.dims)?,
            BufferKind::Alias { .. } => {
                return Err(Error::Invalid(format!("alias {b} views itself")));
            }
            // `check_structure` guarantees the concat output is a temporary or an output and
            // holds every row.
            BufferKind::Part {
                of,
                offset,
                row,
                stride,
            } => {
                let whole = self.read(*of)?;
                let from = |r: usize, x: usize| offset + r * stride + x;
                let picked = part_indices(buf.numel(), *row).map(|(r, x)| from(r, x));
                let values = match whole.data() {
                    Data::F32(v) => Data::F32(picked.map(|i| v[i]).collect()),
                    Data::I32(v) => Data::I32(picked.map(|i| v[i]).collect()),
                    Data::I64(v) => Data::I64(picked.map(|i| v[i]).collect()),
                    Data::Bool(v) => Data::Bool(picked.map(|i| v[i]).collect()),
                };
                Tensor::new(&buf.dims, values)?
            }
        })
    }

    /// Stores `value` into buffer `b` (a temporary or an output), checking its type.
    fn write(&mut self, b: BufferId, value: Tensor) -> Result<()> {
        let buf = self.program.buffer(b);
        if value.dtype() != buf.dtype || value.dims() != buf.dims.as_slice() {
            return Err(Error::Invalid(format!(
                "result {} does not fit buffer {b} ({}{:?})",
                value.ty(),
                buf.dtype,
                buf.dims.as_slice()
            )));
        }
        match buf.kind {
            BufferKind::Temporary { offset } => {
                let bytes = encode(value.data());
                self.arena[offset..offset + bytes.len()].copy_from_slice(&bytes);
            }
            BufferKind::Output(j) => self.outputs[j] = value,
            // Scattered into the concat output's rows (a temporary or an output, checked by
            // `check_structure`), whose other elements are kept.
            BufferKind::Part {
                of,
                offset,
                row,
                stride,
            } => {
                let whole = self.read(of)?;
                let dst = |(r, x): (usize, usize)| offset + r * stride + x;
                let at: Vec<usize> = part_indices(buf.numel(), row).map(dst).collect();
                let data = match (whole.data(), value.data()) {
                    (Data::F32(w), Data::F32(v)) => Data::F32(scatter(w, &at, v)),
                    (Data::I32(w), Data::I32(v)) => Data::I32(scatter(w, &at, v)),
                    (Data::I64(w), Data::I64(v)) => Data::I64(scatter(w, &at, v)),
                    (Data::Bool(w), Data::Bool(v)) => Data::Bool(scatter(w, &at, v)),
                    _ => return Err(Error::Invalid(format!("part {b} has another dtype"))),
                };
                let dims = self.program.buffer(of).dims.clone();
                self.write(of, Tensor::new(&dims, data)?)?;
            }
            _ => return Err(Error::Invalid(format!("buffer {b} is read-only"))),
        }
        Ok(())
    }
}

/// The `dims`-shaped new value of a variable starting at element `offset` of an update's value:
/// the whole value for an assign, one of the `k` values of an optimizer update (f32).
pub fn committed_part(value: Tensor, offset: usize, dims: &[usize]) -> Result<Tensor> {
    if offset == 0 && value.dims() == dims {
        return Ok(value);
    }
    let n: usize = dims.iter().product();
    let part = value
        .f32s()?
        .get(offset..offset.saturating_add(n))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "update value {} has no {dims:?} part at element {offset}",
                value.ty()
            ))
        })?;
    Tensor::from_vec(dims, part.to_vec())
}

/// (row, position in the row) of each of a part's `numel` elements, in order.
fn part_indices(numel: usize, row: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..numel).map(move |i| (i / row.max(1), i % row.max(1)))
}

/// `whole` with `values[j]` stored at `at[j]`.
fn scatter<T: Copy>(whole: &[T], at: &[usize], values: &[T]) -> Vec<T> {
    let mut out = whole.to_vec();
    for (&i, &v) in at.iter().zip(values) {
        out[i] = v;
    }
    out
}

/// The tensor of `out` dims whose element at coordinates `i` is `src[sum(i_k * strides_k)]`.
fn gather(src: &Tensor, strides: &[usize], out: &[usize]) -> Result<Tensor, String> {
    let xs = src.f32s().map_err(|e| e.to_string())?;
    let n: usize = out.iter().product();
    let mut values = Vec::with_capacity(n);
    for flat in 0..n {
        let (mut rest, mut at) = (flat, 0usize);
        for (&d, &s) in out.iter().zip(strides).rev() {
            at += (rest % d) * s;
            rest /= d;
        }
        values.push(
            *xs.get(at)
                .ok_or_else(|| format!("load index {at} is outside {:?}", src.dims()))?,
        );
    }
    Tensor::from_vec(out, values).map_err(|e| e.to_string())
}

/// Native-endian bytes of the elements (bool as one byte, 0 or 1).
fn encode(data: &Data) -> Vec<u8> {
    match data {
        Data::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        Data::I32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        Data::I64(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        Data::Bool(v) => v.iter().map(|&x| x as u8).collect(),
    }
}

/// The inverse of [`encode`] (any non-zero byte is `true`).
fn decode(dtype: DType, bytes: &[u8]) -> Data {
    fn chunks<const N: usize, T>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        // chunks_exact(N) yields slices of exactly N bytes, so the conversion cannot fail.
        bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N bytes")))
            .collect()
    }
    match dtype {
        DType::F32 => Data::F32(chunks(bytes, f32::from_ne_bytes)),
        DType::I32 => Data::I32(chunks(bytes, i32::from_ne_bytes)),
        DType::I64 => Data::I64(chunks(bytes, i64::from_ne_bytes)),
        DType::Bool => Data::Bool(bytes.iter().map(|&b| b != 0).collect()),
    }
}
