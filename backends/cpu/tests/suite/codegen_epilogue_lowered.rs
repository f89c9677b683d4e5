//! Epilogue kernels on programs that `kiln_ir::lower::lower` really produces: elementwise
//! clusters with broadcasts (bias over NHWC channels, rows, columns, scalars, a transpose-free
//! NCHW bias_add) and epilogues fused after matmul, reduce and transpose. Main stages are
//! evaluated with the reference evaluator (`eval_op` on the kernel's main op), epilogues with the
//! generated code, and every fetch must match `kiln_ir::lower::run_program` within 1e-5
//! relative.

use std::collections::HashMap;

use kiln_cpu::codegen::elementwise::{define_epilogue, epilogue_outer_extent};
use kiln_cpu::jit::{Jit, JitOptions};
use kiln_ir::backend::CompileRequest;
use kiln_ir::eval::eval_op;
use kiln_ir::lower::{lower, run_program};
use kiln_ir::program::{BufferId, BufferKind, Program};
use kiln_ir::{
    BinaryOp, DataFormat, Graph, NodeId, Op, ReduceOp, Shape, Tensor, TensorType, UnaryOp,
};

/// Runs `program` kernel by kernel (reference main stages, generated epilogues), with the
/// epilogue split over two ranges, and returns the fetched values.
fn run_with_epilogues(program: &Program, feeds: &[Tensor]) -> Vec<Vec<f32>> {
    let mut values: HashMap<BufferId, Vec<f32>> = HashMap::new();
    for (i, &b) in program.feeds.iter().enumerate() {
        values.insert(b, feeds[i].f32s().expect("f32 feed").to_vec());
    }
    for (i, buf) in program.buffers.iter().enumerate() {
        if let BufferKind::Constant(t) = &buf.kind {
            values.insert(BufferId(i as u32), t.f32s().expect("f32 constant").to_vec());
        }
    }
    let mut ran = 0;
    for kernel in &program.kernels {
        let out_buf = program.buffer(kernel.output);
        let mut out = match &kernel.main {
            Some(op) => {
                let inputs: Vec<Tensor> = kernel
                    .inputs
                    .iter()
                    .map(|b| {
                        let d = &program.buffer(*b).dims;
                        // An alias (a reshape that copies nothing) holds its source's values.
                        let v = values[&program.storage(*b)].clone();
                        Tensor::from_vec(d, v).expect("input tensor")
                    })
                    .collect();
                let refs: Vec<&Tensor> = inputs.iter().collect();
                let t = eval_op(op, &refs).expect("main stage");
                t.into_f32().expect("f32 main result")
            }
            None => vec![f32::NAN; out_buf.numel()],
        };
        let mut jit = Jit::with_options(JitOptions::default()).expect("jit");
        if let Some(id) = define_epilogue(&mut jit, program, kernel).expect("define") {
            let code = jit.finish().expect("finish").kernel(id).expect("kernel");
            let loads: Vec<Vec<f32>> = kernel
                .epilogue
                .loads
                .iter()
                .map(|l| values[&program.storage(l.buffer)].clone())
                .collect();
            let outer = epilogue_outer_extent(program, kernel) as i64;
            for mut range in [[outer / 2, outer], [0, outer / 2]] {
                let mut ptrs = vec![out.as_mut_ptr() as *mut u8];
                ptrs.extend(loads.iter().map(|v| v.as_ptr() as *mut u8));
                ptrs.push(range.as_mut_ptr() as *mut u8);
                // SAFETY: every buffer has its program extent; the output is a separate Vec.
                unsafe { code.call(&ptrs) }.expect("call");
            }
            ran += 1;
        } else {
            assert!(kernel.epilogue.is_identity());
        }
        values.insert(kernel.output, out);
    }
    assert!(ran > 0, "no epilogue ran:\n{program}");
    program.fetches.iter().map(|b| values[b].clone()).collect()
}

/// Fuses `g` (as the CPU pipeline would) keeping `fetches`, lowers it and checks the kernels'
/// main ops and results.
fn check(g: &Graph, feeds: Vec<NodeId>, fetches: Vec<NodeId>, expect_kernels: &[&str]) {
    let mut fused = g.clone();
    kiln_ir::passes::fuse(&mut fused, &fetches).expect("fusion");
    let again = |ids: &[NodeId]| -> Vec<NodeId> {
        ids.iter()
            .map(|&i| fused.find(&g.node(i).name).expect("fusion keeps names"))
            .collect()
    };
    let (feeds, fetches) = (again(&feeds), again(&fetches));
    let g = &fused;
    let request = CompileRequest {
        graph: g,
        feeds: feeds.clone(),
        variables: Vec::new(),
        fetches,
        targets: Vec::new(),
    };
    let program = lower(&request).expect("lower");
    let names: Vec<&str> = program.kernels.iter().map(|k| k.op_name()).collect();
    assert_eq!(names, expect_kernels, "{program}");
    let tensors: Vec<Tensor> = feeds
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let dims = g.node(f).ty.shape.to_dims().expect("known dims").to_vec();
            Tensor::uniform(&dims, 0.25, 2.0, 40 + i as u64)
        })
        .collect();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let want = run_program(&program, &refs, &mut []).expect("interpreter");
    let got = run_with_epilogues(&program, &tensors);
    let tol = kiln_ir::compare::Tolerance::new(1e-6, 1e-5, 0.0);
    for (j, (w, g)) in want.iter().zip(&got).enumerate() {
        let g = Tensor::from_vec(w.dims(), g.clone()).expect("fetch size");
        kiln_ir::compare::assert_close(&g, w, tol, &format!("fetch {j} of\n{program}"));
    }
}

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
    g.add(name, Op::Input(TensorType::f32(Shape::known(dims))), &[])
        .expect("input")
}

fn bin(g: &mut Graph, name: &str, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
    g.add(name, Op::Binary(op), &[a, b]).expect("binary")
}

fn un(g: &mut Graph, name: &str, op: UnaryOp, a: NodeId) -> NodeId {
    g.add(name, Op::Unary(op), &[a]).expect("unary")
}

#[test]
fn elementwise_cluster_with_every_kind_of_broadcast() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[2, 5, 7, 3]);
    let bias = input(&mut g, "bias", &[3]);
    let col = input(&mut g, "col", &[5, 1, 1]);
    let row = input(&mut g, "row", &[7, 3]);
    let s = input(&mut g, "s", &[]);
    let a = g
        .add(
            "a",
            Op::BiasAdd {
                data_format: DataFormat::Nhwc,
            },
            &[x, bias],
        )
        .expect("bias_add");
    let b = un(&mut g, "b", UnaryOp::Relu, a);
    let c = bin(&mut g, "c", BinaryOp::Mul, b, col);
    let d = bin(&mut g, "d", BinaryOp::Sub, c, row);
    let e = un(&mut g, "e", UnaryOp::Tanh, d);
    let f = bin(&mut g, "f", BinaryOp::Pow, s, e);
    check(&g, vec![x, bias, col, row, s], vec![f], &["elementwise"]);
}

#[test]
fn nchw_bias_add_and_sigmoid() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[3, 5, 4, 7]);
    let bias = input(&mut g, "bias", &[5]);
    let a = g
        .add(
            "a",
            Op::BiasAdd {
                data_format: DataFormat::Nchw,
            },
            &[x, bias],
        )
        .expect("bias_add");
    let b = un(&mut g, "b", UnaryOp::Sigmoid, a);
    // The fused NCHW bias is read through a reshape to [5,1,1]: a view of the fed bias, no
    // kernel.
    check(&g, vec![x, bias], vec![b], &["elementwise"]);
}

#[test]
fn epilogues_after_matmul_and_reduce() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[9, 13]);
    let w = input(&mut g, "w", &[13, 7]);
    let bias = input(&mut g, "bias", &[7]);
    let m = g
        .add(
            "m",
            Op::MatMul {
                transpose_a: false,
                transpose_b: false,
            },
            &[x, w],
        )
        .expect("matmul");
    let a = bin(&mut g, "a", BinaryOp::Add, m, bias);
    let r = un(&mut g, "r", UnaryOp::Relu6, a);
    let red = g
        .add(
            "red",
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: Some(vec![1]),
                keepdims: true,
            },
            &[r],
        )
        .expect("reduce");
    let l = un(&mut g, "l", UnaryOp::Log, red);
    let out = bin(&mut g, "out", BinaryOp::Div, r, l);
    check(
        &g,
        vec![x, w, bias],
        vec![out],
        &["matmul", "reduce_sum", "elementwise"],
    );
}
