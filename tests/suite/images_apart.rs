//! A batch run one image at a time (`SessionOptions::images_apart`): the same values as the
//! whole batch, only where every fetched op keeps the images of the leading axis apart, and
//! never for a run with targets. Which path ran shows in the compile cache: one image at a
//! time compiles only the batch-1 program.

use kiln::{Graph, Session, SessionOptions, Tensor};
use kiln_ir::compare::{Tolerance, assert_close};

/// MobileNet's shape in small: conv, relu6, depthwise, 1x1 projection with the block's input
/// added, global average pool, flatten, dense layer, softmax; a NCHW pool and a transpose too.
const SEPARABLE: &str = "kiln 2
input %x : f32[?,12,10,8]
const %w1 : f32[1,1,8,16] = normal(0.0, 0.3, 1)
const %dw : f32[3,3,16,1] = normal(0.0, 0.3, 2)
const %w2 : f32[1,1,16,8] = normal(0.0, 0.3, 3)
const %fc : f32[8,5] = normal(0.0, 0.3, 4)
const %b : f32[5] = uniform(-0.5, 0.5, 5)
%e = conv2d(%x, %w1, padding=\"SAME\")
%r = relu6(%e)
%d = depthwise_conv2d(%r, %dw, padding=\"SAME\")
%p = conv2d(%d, %w2, padding=\"SAME\")
%s = add(%p, %x)
%t = transpose(%s, perm=[0,3,1,2])
%m = reduce_mean(%t, axes=[2,3], keepdims=true)
%f = reshape(%m, shape=[-1,8])
%l = matmul(%f, %fc)
%lb = add(%l, %b)
%y = softmax(%lb)
output %y
output %s
";

fn session(g: &Graph, apart: Option<bool>) -> Session {
    let options = SessionOptions {
        images_apart: apart,
        ..SessionOptions::default()
    };
    Session::with_session_options(g, options).unwrap()
}

/// Runs `fetches` of `text` at batch 3 whole and with `apart`, compares the values, and says
/// whether the `apart` session ran images apart (it then compiled no batch-3 program: a
/// batch-1 run afterwards compiles nothing new).
fn ran_apart(text: &str, fetches: &[&str], apart: Option<bool>) -> bool {
    let g = Graph::parse(text).unwrap();
    let x = Tensor::uniform(&[3, 12, 10, 8], -1.0, 1.0, 7);
    let whole = session(&g, Some(false))
        .run_named(&[("x", &x)], fetches)
        .unwrap();
    let sess = session(&g, apart);
    let got = sess.run_named(&[("x", &x)], fetches).unwrap();
    for ((g, w), name) in got.iter().zip(&whole).zip(fetches) {
        assert_eq!(g.dims(), w.dims(), "{name}");
        assert_close(g, w, Tolerance::KERNEL, name);
    }
    let compiled = sess.compilations();
    let one = Tensor::uniform(&[1, 12, 10, 8], -1.0, 1.0, 8);
    sess.run_named(&[("x", &one)], fetches).unwrap();
    sess.compilations() == compiled
}

#[test]
fn a_separable_cnn_runs_image_by_image_with_the_whole_batch_values() {
    assert!(ran_apart(SEPARABLE, &["y", "s"], Some(true)));
    assert!(!ran_apart(SEPARABLE, &["y", "s"], Some(false)));
    // This graph is far too small for the backend to choose it.
    assert!(!ran_apart(SEPARABLE, &["y"], None));
}

#[test]
fn ops_that_mix_images_keep_the_batch_whole() {
    let base = SEPARABLE.split("%e = ").next().unwrap();
    for (what, body) in [
        (
            "a reduction over the batch",
            "%y = reduce_sum(%x, axes=[0])",
        ),
        ("a reduction over every axis", "%y = reduce_sum(%x)"),
        ("a softmax over the batch", "%y = softmax(%x, axis=0)"),
        (
            "a reshape that merges the batch",
            "%y = reshape(%x, shape=[1,-1])",
        ),
        (
            "a transpose that moves the batch",
            "%y = transpose(%x, perm=[1,0,2,3])",
        ),
        ("a concat along the batch", "%y = concat(%x, %x, axis=0)"),
        (
            "a slice of the batch",
            "%y = slice(%x, begin=[1,0,0,0], size=[-1,-1,-1,-1])",
        ),
    ] {
        let text = format!("{base}{body}\noutput %y\n");
        assert!(!ran_apart(&text, &["y"], Some(true)), "{what}");
    }
}

#[test]
fn a_run_with_targets_or_an_unbatched_feed_keeps_the_batch_whole() {
    let g = Graph::parse(
        "kiln 2
input %x : f32[?,4]
input %k : f32[3,4]
var %v : f32[4] = zeros
%y = add(%x, %v)
%z = add(%k, %v)
%sum = reduce_sum(%x, axes=[0])
%a = assign_add(%v, %sum)
output %y
",
    )
    .unwrap();
    let sess = session(&g, Some(true));
    let x = Tensor::uniform(&[3, 4], -1.0, 1.0, 1);
    let k = Tensor::uniform(&[3, 4], -1.0, 1.0, 2);
    // Targets (a variable update): whole, and the update sees every image.
    let y = g.ir().find("y").unwrap();
    let a = g.ir().find("a").unwrap();
    let xi = g.ir().find("x").unwrap();
    sess.run_with_targets(&[(xi, &x)], &[y], &[a]).unwrap();
    assert_eq!(sess.compilations(), 1);
    let v = sess.run_named(&[("x", &x)], &["y"]).unwrap();
    let want: Vec<f32> = (0..12)
        .map(|i| {
            x.f32s().unwrap()[i]
                + (0..3)
                    .map(|r| x.f32s().unwrap()[r * 4 + i % 4])
                    .sum::<f32>()
        })
        .collect();
    assert_close(
        &v[0],
        &Tensor::from_vec(&[3, 4], want).unwrap(),
        Tolerance::KERNEL,
        "y after the update",
    );
    // A feed without a `?` batch: whole.
    let before = sess.compilations();
    sess.run_named(&[("k", &k)], &["z"]).unwrap();
    sess.run_named(&[("k", &Tensor::uniform(&[3, 4], 0.0, 1.0, 3))], &["z"])
        .unwrap();
    assert_eq!(sess.compilations(), before + 1);
}

/// A network whose late layers are small: the images run apart up to the single value all of
/// the tail is computed from (`%s`, the block's output), are stacked there, and the tail (a
/// dense layer and a softmax) runs on the whole batch, with the whole batch's values. The
/// profile shows both: the head's kernels at batch 1, the tail's at batch 3.
#[test]
fn a_small_tail_runs_on_the_stacked_batch() {
    let g = Graph::parse(SEPARABLE).unwrap();
    let x = Tensor::uniform(&[3, 12, 10, 8], -1.0, 1.0, 7);
    let whole = session(&g, Some(false))
        .run_named(&[("x", &x)], &["y"])
        .unwrap();
    let sess = session(&g, Some(true));
    let xi = g.ir().find("x").unwrap();
    let y = g.ir().find("y").unwrap();
    for _ in 0..2 {
        let (got, times) = sess.run_profiled(&[(xi, &x)], &[y]).unwrap();
        assert_eq!(got[0].dims(), whole[0].dims());
        assert_close(&got[0], &whole[0], Tolerance::KERNEL, "y");
        let batch_of = |t: &kiln_ir::backend::KernelTime| {
            t.output.split(['[', ',', ']']).nth(1).map(str::to_owned)
        };
        let batches: Vec<Option<String>> = times.iter().map(batch_of).collect();
        let head = batches.iter().position(|b| b.as_deref() == Some("3"));
        assert!(
            head.is_some_and(|h| h > 0 && batches[..h].iter().all(|b| b.as_deref() == Some("1"))),
            "head kernels at batch 1, then the tail's at 3: {batches:?}"
        );
        // Two programs, compiled once: the head's and the tail's, whose stats join.
        assert_eq!(sess.compilations(), 2);
        let stats = sess.last_compile().unwrap();
        assert!(stats.info.kernels >= times.len(), "{stats:?}");
    }
}
