//! Runtime behaviour on the OpenCL device: variables stay resident yet follow the caller's
//! values, errors name their node, empty tensors work, and one executable serves many threads.
//! Skipped, visibly, without an OpenCL platform; a failure then when `KILN_REQUIRE_OPENCL=1` (CI).

#![cfg(feature = "runtime")]

use crate::common;

use common::{backend, compile, run};
use kiln_ir::Tensor;

#[test]
fn variables_update_and_follow_host_changes() {
    let Some(b) = backend() else { return };
    let (_, exe) = compile(
        &b,
        "kiln 1
input %x : f32[4]
var %v : f32[4] = fill(1)
%a = assign_add(%v, %x)
%y = mul(%v, %x)
output %a, %y, %v",
    );
    let x = Tensor::from_vec(&[4], vec![1.0, -2.0, 0.5, 3.0]).unwrap();
    let mut vars = vec![Tensor::fill(&[4], 1.0)];
    let out = exe.run(&[&x], &mut vars).unwrap();
    assert_eq!(out[0].as_f32().unwrap(), &[2.0, -1.0, 1.5, 4.0]);
    assert_eq!(out[1].as_f32().unwrap(), &[1.0, -2.0, 0.5, 3.0]);
    // A fetched variable shows its start-of-run value.
    assert_eq!(out[2].as_f32().unwrap(), &[1.0; 4]);
    assert_eq!(vars[0].as_f32().unwrap(), &[2.0, -1.0, 1.5, 4.0]);
    // Second run starts from the committed value (kept on the device).
    let out = exe.run(&[&x], &mut vars).unwrap();
    assert_eq!(out[0].as_f32().unwrap(), &[3.0, -3.0, 2.0, 7.0]);
    assert_eq!(out[1].as_f32().unwrap(), &[2.0, 2.0, 0.75, 12.0]);
    // The caller changes the variable: the device copy follows.
    vars[0] = Tensor::zeros(&[4]);
    let out = exe.run(&[&x], &mut vars).unwrap();
    assert_eq!(out[0].as_f32().unwrap(), &[1.0, -2.0, 0.5, 3.0]);
    assert_eq!(out[1].as_f32().unwrap(), &[0.0; 4]);
}

#[test]
fn wrong_feeds_are_errors() {
    let Some(b) = backend() else { return };
    let (_, exe) = compile(&b, "kiln 1\ninput %x : f32[2,3]\n%y = neg(%x)\noutput %y");
    let bad = Tensor::zeros(&[3, 2]);
    let err = exe.run(&[&bad], &mut []).unwrap_err().to_string();
    assert!(err.contains("%x") && err.contains("f32[2,3]"), "{err}");
    assert!(exe.run(&[], &mut []).is_err());
}

#[test]
fn gather_out_of_range_is_an_error_naming_the_node() {
    let Some(b) = backend() else { return };
    let text = "kiln 2
input %p : f32[5,3]
input %i : i32[4]
%g = gather(%p, %i, axis=0)
output %g";
    let p = Tensor::uniform(&[5, 3], -1.0, 1.0, 3);
    let ok = Tensor::new(&[4], kiln_ir::Data::I32(vec![0, 4, -5, -1])).unwrap();
    let got = run(&b, text, &[p.clone(), ok]).unwrap();
    let ps = p.as_f32().unwrap();
    let want: Vec<f32> = [0usize, 4, 0, 4]
        .iter()
        .flat_map(|&r| ps[r * 3..r * 3 + 3].to_vec())
        .collect();
    assert_eq!(got[0].as_f32().unwrap(), want.as_slice());
    for bad in [5, -6, i32::MAX] {
        let idx = Tensor::new(&[4], kiln_ir::Data::I32(vec![0, 1, bad, 2])).unwrap();
        let err = run(&b, text, &[p.clone(), idx]).unwrap_err();
        assert!(
            err.contains("%g") && err.contains(&format!("index {bad}")),
            "{err}"
        );
    }
}

#[test]
fn empty_tensors() {
    let Some(b) = backend() else { return };
    let text = "kiln 1
input %x : f32[0,3]
input %y : f32[2,3]
%a = exp(%x)
%s = reduce_sum(%x, axes=[0])
%m = reduce_mean(%x, axes=[0])
%c = concat(%x, %y, axis=0)
output %a, %s, %m, %c";
    let y = Tensor::uniform(&[2, 3], -1.0, 1.0, 1);
    let got = run(&b, text, &[Tensor::zeros(&[0, 3]), y.clone()]).unwrap();
    assert_eq!(got[0].dims(), &[0, 3]);
    assert_eq!(got[1].as_f32().unwrap(), &[0.0; 3]);
    assert!(got[2].as_f32().unwrap().iter().all(|v| v.is_nan()));
    assert_eq!(got[3], y);
}

#[test]
fn one_executable_many_threads() {
    let Some(b) = backend() else { return };
    let (_, exe) = compile(
        &b,
        "kiln 1\ninput %x : f32[64,32]\ninput %w : f32[32,48]\n%y = matmul(%x, %w)\noutput %y",
    );
    let w = Tensor::uniform(&[32, 48], -1.0, 1.0, 9);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (exe, w) = (&exe, &w);
            s.spawn(move || {
                let x = Tensor::uniform(&[64, 32], -1.0, 1.0, t);
                let first = exe.run(&[&x, w], &mut []).unwrap();
                for _ in 0..5 {
                    assert_eq!(exe.run(&[&x, w], &mut []).unwrap(), first);
                }
            });
        }
    });
}

#[test]
fn device_discovery_from_many_threads() {
    // PoCL crashed when several threads enumerated platforms at once; discovery is now once
    // per process, so this must neither crash nor disagree.
    let first = kiln_opencl::device::list();
    if common::opencl_required() {
        let devices = first.as_ref().map(Vec::len);
        assert!(
            devices.is_ok_and(|n| n > 0),
            "KILN_REQUIRE_OPENCL is set: {first:?}"
        );
    }
    std::thread::scope(|s| {
        for _ in 0..8 {
            let first = &first;
            s.spawn(move || {
                for _ in 0..10 {
                    assert_eq!(&kiln_opencl::device::list(), first);
                }
            });
        }
    });
}
