//! Property test: random graphs of elementwise, broadcasting, matmul, reduction, softmax and
//! bias_add ops (chains, diamonds, values fetched midway, an optional assign) lower to programs
//! that validate, never overlap live temporaries, and compute bit-identical results to the
//! reference backend.

use crate::lower_common;

use kiln_ir::backend::CompileRequest;
use kiln_ir::{
    BinaryOp, DataFormat, Graph, Initializer, NodeId, Op, ReduceOp, Shape, Source, Tensor,
    TensorType, UnaryOp,
};
use lower_common::check_against_reference;
use proptest::prelude::*;
use std::sync::Arc;

/// One generated op: a kind selector, an op selector and two operand picks.
type Choice = (u8, u8, usize, usize);

fn constant(g: &mut Graph, name: &str, dims: &[usize], seed: u64) -> NodeId {
    let value = Tensor::uniform(dims, -1.5, 1.5, seed);
    let src = Source {
        ty: TensorType::f32(Shape::known(dims)),
        init: Initializer::Literal(Arc::new(value)),
    };
    g.add(name, Op::Const(src), &[]).expect("constant")
}

/// Builds the graph: values have dims [2,3], [3], [2,1] or [], which all broadcast together.
fn build(
    choices: &[Choice],
    fetch_picks: &[usize],
    assign: bool,
) -> (Graph, Vec<NodeId>, Vec<NodeId>) {
    let mut g = Graph::new();
    let f32_input = |dims: &[usize]| Op::Input(TensorType::f32(Shape::known(dims)));
    let x = g.add("x", f32_input(&[2, 3]), &[]).unwrap();
    let r = g.add("r", f32_input(&[3]), &[]).unwrap();
    let var_src = Source {
        ty: TensorType::f32(Shape::known(&[2, 3])),
        init: Initializer::Zeros,
    };
    let v = g.add("v", Op::Var(var_src), &[]).unwrap();
    let c = constant(&mut g, "c", &[2, 1], 1);
    let s = constant(&mut g, "s", &[], 2);
    let w = constant(&mut g, "w", &[3, 3], 3);
    let bias = constant(&mut g, "bias", &[3], 4);
    let mut values = vec![x, r, v, c, s];
    for (i, &(kind, sel, a, b)) in choices.iter().enumerate() {
        // The first operand is one of the last few values (so chains form), the second any
        // value (so diamonds, shared values and broadcasts form).
        let pa = values[values.len() - 1 - a % values.len().min(3)];
        let pb = values[b % values.len()];
        let dims = g.node(pa).ty.shape.to_dims().unwrap().to_vec();
        let unary = Op::Unary(UnaryOp::ALL[sel as usize % UnaryOp::ALL.len()]);
        let (op, inputs) = match kind % 6 {
            0 | 1 => (unary, vec![pa]),
            2 => (
                Op::Binary(BinaryOp::ALL[sel as usize % BinaryOp::ALL.len()]),
                vec![pa, pb],
            ),
            3 if dims == [2, 3] => {
                let transpose_b = sel % 2 == 1;
                (
                    Op::MatMul {
                        transpose_a: false,
                        transpose_b,
                    },
                    vec![pa, w],
                )
            }
            4 if dims == [2, 3] => {
                let op = ReduceOp::ALL[sel as usize % ReduceOp::ALL.len()];
                (
                    Op::Reduce {
                        op,
                        axes: Some(vec![-1]),
                        keepdims: true,
                    },
                    vec![pa],
                )
            }
            4 if !dims.is_empty() => (Op::Softmax { axis: -1 }, vec![pa]),
            5 if dims == [2, 3] => (
                Op::BiasAdd {
                    data_format: DataFormat::Nhwc,
                },
                vec![pa, bias],
            ),
            _ => (unary, vec![pa]),
        };
        let id = g
            .add(format!("n{i}"), op, &inputs)
            .expect("generated op type-checks");
        values.push(id);
    }
    let last = *values.last().unwrap();
    let mut fetches = vec![last];
    fetches.extend(fetch_picks.iter().map(|&p| values[p % values.len()]));
    let mut targets = Vec::new();
    if assign {
        // The last [2,3] value is assigned to %v; reads of %v still see the start value.
        let value = values
            .iter()
            .rev()
            .find(|&&n| g.node(n).ty.shape == Shape::known(&[2, 3]));
        let value = *value.unwrap_or(&x);
        targets.push(
            g.add("upd", Op::Assign(kiln_ir::AssignOp::AssignAdd), &[v, value])
                .unwrap(),
        );
    }
    (g, fetches, targets)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lowered_programs_match_the_reference(
        choices in prop::collection::vec((any::<u8>(), any::<u8>(), 0usize..64, 0usize..64), 1..24),
        fetch_picks in prop::collection::vec(0usize..64, 0..3),
        assign in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let (g, fetches, targets) = build(&choices, &fetch_picks, assign);
        let req = CompileRequest {
            graph: &g,
            feeds: g.placeholders(),
            variables: g.variables(),
            fetches,
            targets,
        };
        let p = check_against_reference(&req, seed);
        prop_assert!(p.arena_bytes <= p.sum_temporary_bytes);
    }
}
