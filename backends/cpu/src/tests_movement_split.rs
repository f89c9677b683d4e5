//! Movement kernels split across threads: a channel shuffle (a blocked transpose under a
//! pixel loop), an NCHW -> NHWC transpose of two images, one image's transposes both ways (a
//! plane split along its own tiles), a channel concat of two placeholders
//! and a slice run as ranged kernels (parts of their copies' outer loops on each thread), and
//! give the reference evaluator's bits on pools of 1, 2, 3 and 7 threads (1, 8, 12 and 28
//! ranges, cutting the loops at different places); a pad, whose fill must come before its copies, is
//! not split and still right.

use crate::CpuBackend;
use crate::plan::Stage;
use crate::test_reference::{lower_and_plan, parse_graph, request};
use kiln_ir::Tensor;
use kiln_ir::backend::Backend;
use kiln_ir::compare::{Tolerance, assert_close};
use kiln_ir::reference::ReferenceBackend;

/// Whether the plan for `body` (output `%y`) runs its movement kernel as a split one.
fn split_movement(header: &str, body: &str) -> bool {
    let g = parse_graph(header, body);
    let (program, plan) = lower_and_plan(&g, &["y"]);
    plan.stages.iter().any(|(k, s)| {
        let op = program.kernels[*k].op_name();
        let moves = ["transpose", "concat", "slice", "pad", "reshape"].contains(&op);
        moves && matches!(s, Stage::Jit { split: Some(_), .. })
    })
}

/// Runs `body` on `feeds` in pools of several sizes; every result has the reference's bits.
fn same_bits_on_every_pool(header: &str, body: &str, feeds: &[Tensor]) {
    let g = parse_graph(header, body);
    let req = request(&g, &["y"]);
    let feeds: Vec<&Tensor> = feeds.iter().collect();
    let want = ReferenceBackend
        .compile(&req)
        .unwrap()
        .run(&feeds, &mut [])
        .unwrap();
    let compiled = CpuBackend.compile(&req).unwrap();
    for threads in [1, 2, 3, 7] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let got = pool.install(|| compiled.run(&feeds, &mut []).unwrap());
        assert_close(
            &got[0],
            &want[0],
            Tolerance::EXACT,
            &format!("{body} on {threads} threads"),
        );
    }
}

#[test]
fn movement_kernels_split_across_threads_keep_the_reference_bits() {
    let cases: [(&str, &str, Vec<Tensor>); 6] = [
        (
            "kiln 2\ninput %x : f32[1,28,28,116]\n",
            "%r = reshape(%x, shape=[1, 28, 28, 2, 58])\n\
             %t = transpose(%r, perm=[0, 1, 2, 4, 3])\n\
             %y = reshape(%t, shape=[1, 28, 28, 116])\noutput %y\n",
            vec![Tensor::uniform(&[1, 28, 28, 116], -1.0, 1.0, 1)],
        ),
        (
            "kiln 2\ninput %x : f32[2,64,30,30]\n",
            "%y = transpose(%x, perm=[0, 2, 3, 1])\noutput %y\n",
            vec![Tensor::uniform(&[2, 64, 30, 30], -1.0, 1.0, 2)],
        ),
        // One image each way: a plane with no outer loop, split along B's tiles (37 x 31
        // pixels: 71 tiles and 11 left) or A's, with leftover strips along both; over 32 K
        // values, so that they split at run time (`PARALLEL_MIN_WORK`).
        (
            "kiln 2\ninput %x : f32[1,37,31,40]\n",
            "%y = transpose(%x, perm=[0, 3, 1, 2])\noutput %y\n",
            vec![Tensor::uniform(&[1, 37, 31, 40], -1.0, 1.0, 7)],
        ),
        (
            "kiln 2\ninput %x : f32[1,40,37,31]\n",
            "%y = transpose(%x, perm=[0, 2, 3, 1])\noutput %y\n",
            vec![Tensor::uniform(&[1, 40, 37, 31], -1.0, 1.0, 8)],
        ),
        (
            "kiln 2\ninput %a : f32[1,28,28,40]\ninput %b : f32[1,28,28,88]\n",
            "%y = concat(%a, %b, axis=3)\noutput %y\n",
            vec![
                Tensor::uniform(&[1, 28, 28, 40], -1.0, 1.0, 3),
                Tensor::uniform(&[1, 28, 28, 88], -1.0, 1.0, 4),
            ],
        ),
        (
            "kiln 2\ninput %x : f32[4,40,40,32]\n",
            "%y = slice(%x, begin=[0, 3, 5, 4], size=[4, 33, 30, 20])\noutput %y\n",
            vec![Tensor::uniform(&[4, 40, 40, 32], -1.0, 1.0, 5)],
        ),
    ];
    for (header, body, feeds) in &cases {
        assert!(split_movement(header, body), "not split: {body}");
        same_bits_on_every_pool(header, body, feeds);
    }
    // A pad fills before it copies: one thread does both.
    let (header, body) = (
        "kiln 2\ninput %x : f32[2,40,40,32]\n",
        "%y = pad(%x, paddings=[[0, 0], [1, 2], [3, 0], [0, 0]])\noutput %y\n",
    );
    assert!(!split_movement(header, body));
    same_bits_on_every_pool(
        header,
        body,
        &[Tensor::uniform(&[2, 40, 40, 32], -1.0, 1.0, 6)],
    );
}
