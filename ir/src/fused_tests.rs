//! Unit tests of fused expressions: canonical form, text round trip, validation.

use super::*;
use crate::op::ConvAttrs;

fn parse(text: &str) -> FusedExpr {
    FusedExpr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn chain_prints_inline_and_parses_back() {
    let e = parse("relu(add(main, $2))");
    assert_eq!(
        e.nodes(),
        &[
            ExprNode::Main,
            ExprNode::Operand(2),
            ExprNode::Binary(BinaryOp::Add, 0, 1),
            ExprNode::Unary(UnaryOp::Relu, 2),
        ]
    );
    assert_eq!(e.to_string(), "relu(add(main, $2))");
}

#[test]
fn shared_nodes_are_bound_once() {
    // t = tanh($0); t * t: the shared node is printed once as a binding.
    let nodes = vec![
        ExprNode::Operand(0),
        ExprNode::Unary(UnaryOp::Tanh, 0),
        ExprNode::Binary(BinaryOp::Mul, 1, 1),
    ];
    let e = FusedExpr::new(nodes).unwrap();
    let text = e.to_string();
    assert_eq!(text, "t1 = tanh($0); mul(t1, t1)");
    assert_eq!(parse(&text), e);
}

#[test]
fn structurally_equal_nodes_merge() {
    // Two separate tanh($0) nodes are one after canonicalisation.
    let nodes = vec![
        ExprNode::Operand(0),
        ExprNode::Unary(UnaryOp::Tanh, 0),
        ExprNode::Operand(0),
        ExprNode::Unary(UnaryOp::Tanh, 2),
        ExprNode::Binary(BinaryOp::Add, 1, 3),
    ];
    let e = FusedExpr::new(nodes).unwrap();
    assert_eq!(e.nodes().len(), 3);
    assert_eq!(e, parse("add(tanh($0), tanh($0))"));
}

#[test]
fn unreachable_nodes_are_dropped_and_order_is_canonical() {
    let a = FusedExpr::new(vec![
        ExprNode::Operand(1),
        ExprNode::Operand(0),
        ExprNode::Unary(UnaryOp::Exp, 1), // unused
        ExprNode::Binary(BinaryOp::Sub, 1, 0),
    ])
    .unwrap();
    let b = FusedExpr::new(vec![
        ExprNode::Operand(0),
        ExprNode::Operand(1),
        ExprNode::Binary(BinaryOp::Sub, 0, 1),
    ])
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_string(), "sub($0, $1)");
}

#[test]
fn leaky_relu_alpha_round_trips_exactly() {
    for alpha in [0.1f32, 1e-7, -0.25, 0.3333333] {
        let e = FusedExpr::new(vec![
            ExprNode::Main,
            ExprNode::Unary(
                UnaryOp::LeakyRelu {
                    alpha: Float(alpha),
                },
                0,
            ),
        ])
        .unwrap();
        let back = parse(&e.to_string());
        assert_eq!(back, e, "{e}");
    }
}

#[test]
fn long_chains_are_bound_not_nested_and_round_trip() {
    let mut nodes = vec![ExprNode::Operand(0)];
    for i in 0..500 {
        nodes.push(ExprNode::Unary(UnaryOp::Neg, i));
    }
    let e = FusedExpr::new(nodes).unwrap();
    let text = e.to_string();
    assert!(text.contains("; "), "deep chains must use bindings");
    assert_eq!(parse(&text), e);
}

#[test]
fn terms_nest_exactly_max_inline_depth_levels() {
    let nested = |n: usize| format!("{}$0{}", "tanh(".repeat(n), ")".repeat(n));
    let e = parse(&nested(MAX_INLINE_DEPTH));
    assert_eq!(
        e.to_string(),
        nested(MAX_INLINE_DEPTH),
        "printed inline, unbound"
    );
    let err = FusedExpr::parse(&nested(MAX_INLINE_DEPTH + 1)).unwrap_err();
    assert!(err.contains("deeper than 32 levels"), "{err}");
    // The documented number is the one enforced.
    let doc = include_str!("../../docs/FORMAT.md");
    assert!(doc.contains(&format!(
        "A term nests at most {MAX_INLINE_DEPTH} levels of ops"
    )));
}

#[test]
fn bad_text_is_an_error_not_a_panic() {
    for (text, fragment) in [
        ("", "ends early"),
        ("relu(", "ends early"),
        ("relu($0", "expected `)`"),
        ("frobnicate($0)", "not an elementwise op"),
        ("add($0)", "expected `,`"),
        ("t1", "not bound"),
        ("$x", "operand number"),
        ("relu($0) extra", "after the expression"),
        ("t = $0; t = $1; t", "bound twice"),
        ("leaky_relu($0, $1)", "alpha"),
        ("relu($0) ^", "unexpected character"),
        ("main = $0; main", "reserved"),
        ("relu = $0; relu", "reserved"),
    ] {
        let err = FusedExpr::parse(text).unwrap_err();
        assert!(err.contains(fragment), "{text:?}: {err}");
    }
    let deep = format!("{}$0{}", "neg(".repeat(200), ")".repeat(200));
    assert!(FusedExpr::parse(&deep).unwrap_err().contains("deeper"));
}

#[test]
fn validation_checks_operands_and_main() {
    let e = parse("add(main, $3)");
    assert!(e.validate(4, true).is_ok());
    assert!(e.validate(3, true).unwrap_err().contains("$3"));
    assert!(e.validate(4, false).unwrap_err().contains("main"));
}

#[test]
fn fused_op_checks_its_main() {
    let conv = Op::Conv2d(ConvAttrs::same());
    let f = FusedOp::new(Some(conv.clone()), parse("relu(main)")).unwrap();
    assert_eq!(f.name(), "fused_conv2d");
    assert_eq!(f.main_arity(), 2);
    assert!(FusedOp::new(Some(conv), parse("relu($2)")).is_err());
    assert!(FusedOp::new(None, parse("relu(main)")).is_err());
    let concat = Op::Concat { axis: 0 };
    assert!(
        FusedOp::new(Some(concat), parse("relu(main)"))
            .unwrap_err()
            .contains("concat")
    );
    let sum = Op::Reduce {
        op: crate::op::ReduceOp::Sum,
        axes: None,
        keepdims: false,
    };
    let f = FusedOp::new(Some(sum), parse("sqrt(main)")).unwrap();
    assert_eq!((f.name(), f.main_arity()), ("fused_reduce_sum", 1));
    assert_eq!(
        FusedOp::new(None, parse("relu($0)")).unwrap().name(),
        "elementwise"
    );
}
