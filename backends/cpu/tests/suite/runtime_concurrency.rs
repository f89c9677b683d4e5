//! One compiled executable run from several threads at once: each run has its own arena, so
//! results equal single-threaded ones bit for bit.

use kiln_cpu::CpuBackend;
use kiln_ir::backend::{Backend, CompileRequest};
use kiln_ir::reference::ReferenceBackend;
use kiln_ir::{ConvAttrs, Graph, Initializer, Op, Shape, Source, Tensor, TensorType, UnaryOp};

fn graph() -> (Graph, Vec<kiln_ir::NodeId>) {
    let mut g = Graph::new();
    let x = g
        .add(
            "x",
            Op::Input(TensorType::f32(Shape::known(&[2, 12, 12, 3]))),
            &[],
        )
        .unwrap();
    let w = Source {
        ty: TensorType::f32(Shape::known(&[3, 3, 3, 16])),
        init: Initializer::Normal {
            mean: kiln_ir::Float(0.0),
            std: kiln_ir::Float(0.3),
            seed: 4,
        },
    };
    let w = g.add("w", Op::Const(w), &[]).unwrap();
    let c = g.add("c", Op::Conv2d(ConvAttrs::same()), &[x, w]).unwrap();
    let r = g.add("r", Op::Unary(UnaryOp::Tanh), &[c]).unwrap();
    let s = g.add("s", Op::Softmax { axis: -1 }, &[r]).unwrap();
    (g, vec![x, s])
}

#[test]
fn concurrent_runs_do_not_interfere() {
    let (g, ids) = graph();
    let request = CompileRequest {
        graph: &g,
        feeds: vec![ids[0]],
        variables: vec![],
        fetches: vec![ids[1]],
        targets: vec![],
    };
    let cpu = CpuBackend.compile(&request).unwrap();
    let reference = ReferenceBackend.compile(&request).unwrap();
    let inputs: Vec<Tensor> = (0..4)
        .map(|i| Tensor::uniform(&[2, 12, 12, 3], -1.0, 1.0, i))
        .collect();
    let expected: Vec<Tensor> = inputs
        .iter()
        .map(|t| cpu.run(&[t], &mut []).unwrap().remove(0))
        .collect();
    for (t, e) in inputs.iter().zip(&expected) {
        let want = reference.run(&[t], &mut []).unwrap().remove(0);
        let tol = kiln_ir::compare::Tolerance::abs_rel(1e-5);
        kiln_ir::compare::assert_close(e, &want, tol, "cpu against the reference");
    }
    std::thread::scope(|scope| {
        for (t, e) in inputs.iter().zip(&expected) {
            let cpu = &cpu;
            scope.spawn(move || {
                for _ in 0..25 {
                    assert_eq!(&cpu.run(&[t], &mut []).unwrap()[0], e);
                }
            });
        }
    });
}

#[test]
fn concurrent_runs_with_different_variable_weights_each_use_their_own() {
    // Runs of one executable share the packed-weights cache of its variable; threads that
    // hand in different weights must never see each other's packing.
    let mut g = Graph::new();
    let x = g
        .add("x", Op::Input(TensorType::f32(Shape::known(&[1, 64]))), &[])
        .unwrap();
    let w = Source {
        ty: TensorType::f32(Shape::known(&[64, 40])),
        init: Initializer::Zeros,
    };
    let w = g.add("w", Op::Var(w), &[]).unwrap();
    let matmul = Op::MatMul {
        transpose_a: false,
        transpose_b: false,
    };
    let y = g.add("y", matmul, &[x, w]).unwrap();
    let request = CompileRequest {
        graph: &g,
        feeds: vec![x],
        variables: vec![w],
        fetches: vec![y],
        targets: vec![],
    };
    let cpu = CpuBackend.compile(&request).unwrap();
    let reference = ReferenceBackend.compile(&request).unwrap();
    let input = Tensor::uniform(&[1, 64], -1.0, 1.0, 9);
    let weights: Vec<Tensor> = (0..4)
        .map(|i| Tensor::uniform(&[64, 40], -1.0, 1.0, 100 + i))
        .collect();
    let expected: Vec<Tensor> = weights
        .iter()
        .map(|wt| {
            let got = cpu.run(&[&input], &mut [wt.clone()]).unwrap().remove(0);
            let want = reference
                .run(&[&input], &mut [wt.clone()])
                .unwrap()
                .remove(0);
            let tol = kiln_ir::compare::Tolerance::abs_rel(1e-5);
            kiln_ir::compare::assert_close(&got, &want, tol, "cpu against the reference");
            got
        })
        .collect();
    std::thread::scope(|scope| {
        for (wt, e) in weights.iter().zip(&expected) {
            let (cpu, input) = (&cpu, &input);
            scope.spawn(move || {
                let mut vars = [wt.clone()];
                for _ in 0..50 {
                    assert_eq!(&cpu.run(&[input], &mut vars).unwrap()[0], e);
                }
            });
        }
    });
}
