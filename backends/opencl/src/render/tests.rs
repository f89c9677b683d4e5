//! Renderer unit tests that need no device: which kernel shape each op gets for which sizes
//! and device limits, how buffers are bound, that unsupported kernels are errors naming them,
//! and that render/'s files are named after op families. (Numerical agreement is tested on a
//! device in `tests/`.)

use super::*;
use kiln_ir::backend::CompileRequest;
use kiln_ir::lower::lower;
use kiln_ir::op::UnaryOp;
use kiln_ir::program::{Expr, Operand, Step};

/// The lowered program of a .kiln graph fetching its outputs.
fn program(text: &str) -> Program {
    let g = kiln_ir::text::parse(text, None).expect("test graph");
    let req = CompileRequest {
        graph: &g,
        feeds: g.placeholders(),
        variables: g.variables(),
        fetches: g.outputs().to_vec(),
        targets: Vec::new(),
    };
    lower(&req).expect("lowering")
}

fn launch(r: &Rendered, k: usize) -> &Launch {
    r.kernels[k].launch.as_ref().expect("a launched kernel")
}

#[test]
fn large_matmul_is_tiled_small_one_is_direct() {
    let p = program(
        "kiln 1\ninput %a : f32[100,64]\ninput %b : f32[64,70]\n%y = matmul(%a, %b)\noutput %y",
    );
    let r = render(&p, &Limits::default()).unwrap();
    let l = launch(&r, 0);
    // 64x64 tiles of 16x16 work-items: ceil(70/64) = 2 columns, ceil(100/64) = 2 rows.
    assert_eq!(
        (l.global.clone(), l.local.clone()),
        (vec![32, 32, 1], vec![16, 16, 1])
    );
    assert!(r.source.contains("reqd_work_group_size(16, 16, 1)"));
    assert!(r.source.contains("__local float As[16][65]"));
    // A device allowing 64 work-items gets 8x8 groups of 32x32 tiles.
    let small = Limits {
        max_work_group: 64,
        local_mem_bytes: 16 * 1024,
    };
    let l = launch(&render(&p, &small).unwrap(), 0).clone();
    assert_eq!((l.global, l.local), (vec![24, 32, 1], vec![8, 8, 1]));
    // Too little local memory for any tile: one work-item per output.
    let tiny = Limits {
        max_work_group: 256,
        local_mem_bytes: 1024,
    };
    let l = launch(&render(&p, &tiny).unwrap(), 0).clone();
    assert_eq!((l.global, l.local), (vec![7040], vec![64]));
    let p =
        program("kiln 1\ninput %a : f32[3,4]\ninput %b : f32[4,5]\n%y = matmul(%a, %b)\noutput %y");
    let l = launch(&render(&p, &Limits::default()).unwrap(), 0).clone();
    assert_eq!((l.global, l.local), (vec![64], vec![64]));
}

#[test]
fn grouped_conv_puts_groups_on_the_third_axis() {
    let p = program(
        "kiln 1\ninput %x : f32[1,12,12,32]\ninput %w : f32[3,3,16,32]\n\
         %y = conv2d(%x, %w, padding=\"SAME\")\noutput %y",
    );
    let r = render(&p, &Limits::default()).unwrap();
    let l = launch(&r, 0);
    // M = 144 rows (3 tiles), N = 16 per group (1 tile), 2 groups.
    assert_eq!(l.global, vec![16, 48, 2]);
    // Group z reads input channels z*16.. and filter columns z*16..
    assert!(r.source.contains("z * 16 + c"), "{}", r.source);
    assert!(r.source.contains("ki * 32 + z * 16 + ni"), "{}", r.source);
}

#[test]
fn reductions_pick_groups_for_long_rows() {
    let p = program(
        "kiln 1\ninput %x : f32[2,5000]\n%s = reduce_sum(%x, axes=[1])\n\
         %t = reduce_max(%x, axes=[0])\noutput %s, %t",
    );
    let r = render(&p, &Limits::default()).unwrap();
    let (s, t) = (launch(&r, 0), launch(&r, 1));
    assert_eq!((s.global.clone(), s.local.clone()), (vec![512], vec![256]));
    // 5000 rows of 2: one work-item each.
    assert_eq!((t.global.clone(), t.local.clone()), (vec![5056], vec![64]));
}

#[test]
fn temporaries_live_in_the_arena_and_others_are_arguments() {
    let p = program("kiln 1\ninput %x : f32[8]\n%a = exp(%x)\n%b = neg(%a)\noutput %b");
    let r = render(&p, &Limits::default()).unwrap();
    let (first, second) = (launch(&r, 0), launch(&r, 1));
    assert_eq!(first.args, vec![Arg::Buffer(p.feeds[0]), Arg::Arena]);
    assert_eq!(second.args, vec![Arg::Arena, Arg::Buffer(p.fetches[0])]);
    assert!(r.source.contains("(__global float*)(arena + 0)"));
}

#[test]
fn empty_outputs_launch_nothing() {
    let p = program("kiln 1\ninput %x : f32[0,3]\n%a = exp(%x)\noutput %a");
    let r = render(&p, &Limits::default()).unwrap();
    assert_eq!(r.kernels[0].launch, None);
    assert!(!r.source.contains("__kernel"));
}

#[test]
fn an_epilogue_on_an_integer_result_is_unsupported_by_name() {
    let mut p = program(
        "kiln 2\ninput %x : f32[4]\n%c = cast(%x, to=\"i32\")\n%r = reshape(%c, shape=[2, 2])\noutput %r",
    );
    p.kernels[1].epilogue = Expr {
        loads: Vec::new(),
        steps: vec![Step::Unary(UnaryOp::Neg, Operand::Main)],
        result: Operand::Step(0),
    };
    // Either the program check or the renderer refuses it; both name the kernel.
    let err = render(&p, &Limits::default()).unwrap_err().to_string();
    assert!(err.contains("%r"), "{err}");
}

#[test]
fn an_inconsistent_kernel_is_unsupported_by_name() {
    let mut p = program("kiln 1\ninput %x : f32[2,3]\n%t = transpose(%x, perm=[1, 0])\noutput %t");
    p.kernels[0].main = Some(Op::Transpose { perm: vec![0, 0] });
    let err = render(&p, &Limits::default()).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    let err = err.to_string();
    assert!(
        err.contains("opencl") && err.contains("%t") && err.contains("perm"),
        "{err}"
    );
}

#[test]
fn gather_reports_through_the_error_flag() {
    let p = program(
        "kiln 2\ninput %p : f32[5,3]\ninput %i : i64[4]\n%g = gather(%p, %i, axis=0)\noutput %g",
    );
    match render(&p, &Limits::default()) {
        Ok(r) => {
            assert!(launch(&r, 0).args.contains(&Arg::ErrorFlag));
            assert!(
                r.source.contains("atomic_cmpxchg(&kerr[0], 0, 1)"),
                "{}",
                r.source
            );
        }
        // Until `Program::validate` accepts gather's two operands, rendering must fail cleanly.
        Err(e) => assert!(e.to_string().contains("gather"), "{e}"),
    }
}

#[test]
fn files_are_named_after_op_families() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/render"));
    let others = ["mod", "tests", "expr", "kernel"];
    let stray = kiln_ir::schema::modules_outside_the_taxonomy(dir, &others).unwrap();
    assert!(
        stray.is_empty(),
        "render/ modules outside OpFamily: {stray:?}"
    );
}
