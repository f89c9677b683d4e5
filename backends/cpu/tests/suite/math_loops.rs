//! The JIT harness and loop helpers: counted loops with constant and dynamic bounds, vector main
//! loops with scalar tails (canaries after the buffers stay untouched), carried accumulators,
//! nested loops, imports, errors instead of panics, CLIF dumps and feature selection.

use cranelift_codegen::ir::{AbiParam, InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::Linkage;
use kiln_cpu::jit::loops::{
    Bound, data_flags, elem_addr, for_range, for_range_carry, for_range_tail, vector_end,
};
use kiln_cpu::jit::{ClifDump, CompiledKernel, CpuFeatures, Jit, JitOptions};

const CANARY: u32 = 0x7fc0_dead;

fn jit() -> Jit {
    Jit::with_options(JitOptions::default()).expect("host JIT")
}

/// out[i] = a[i] + b[i] for i in start..end, f32x4 main loop + scalar tail.
fn add_body(
    b: &mut FunctionBuilder,
    bufs: &[Value],
    start: Bound,
    end: Bound,
) -> Result<(), String> {
    let step = |b: &mut FunctionBuilder, iv: Value, ty| {
        let pa = elem_addr(b, bufs[0], iv, 4);
        let pb = elem_addr(b, bufs[1], iv, 4);
        let po = elem_addr(b, bufs[2], iv, 4);
        let x = b.ins().load(ty, data_flags(), pa, 0);
        let y = b.ins().load(ty, data_flags(), pb, 0);
        let s = b.ins().fadd(x, y);
        b.ins().store(data_flags(), s, po, 0);
        Ok(())
    };
    for_range_tail(
        b,
        start,
        end,
        4,
        |b, iv| step(b, iv, types::F32X4),
        |b, iv| step(b, iv, types::F32),
    )
}

fn inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
    (
        (0..n).map(|i| i as f32 * 0.5).collect(),
        (0..n).map(|i| 1000.0 - i as f32).collect(),
    )
}

#[test]
fn add_with_constant_bounds_handles_tails_and_leaves_canaries() {
    for n in [0usize, 1, 3, 4, 5, 7, 8, 17, 1001] {
        let k = Jit::compile_kernel("add", 3, |b, env| {
            let bufs = env.buffers().to_vec();
            add_body(b, &bufs, Bound::Const(0), Bound::Const(n as i64))
        })
        .expect("compile");
        let (a, bb) = inputs(n);
        let mut out = vec![f32::from_bits(CANARY); n + 8];
        // SAFETY: a and bb hold n floats, out n + 8; the kernel touches elements 0..n.
        unsafe {
            k.call(&[
                a.as_ptr() as *mut u8,
                bb.as_ptr() as *mut u8,
                out.as_mut_ptr() as *mut u8,
            ])
        }
        .expect("call");
        for i in 0..n {
            assert_eq!(out[i], a[i] + bb[i], "n={n} i={i}");
        }
        assert!(
            out[n..].iter().all(|v| v.to_bits() == CANARY),
            "n={n}: canary overwritten"
        );
    }
}

#[test]
fn add_with_dynamic_bounds() {
    // Buffer 3 holds [start, end] as i64, read at run time.
    let k = Jit::compile_kernel("add_dyn", 4, |b, env| {
        let bufs = env.buffers().to_vec();
        let start = b.ins().load(types::I64, data_flags(), bufs[3], 0);
        let end = b.ins().load(types::I64, data_flags(), bufs[3], 8);
        add_body(b, &bufs, Bound::Dyn(start), Bound::Dyn(end))
    })
    .expect("compile");
    let n = 40;
    let (a, bb) = inputs(n);
    for (start, end) in [
        (0i64, 0i64),
        (3, 3),
        (5, 2),
        (0, 1),
        (1, 4),
        (2, 7),
        (3, 40),
        (0, 40),
        (7, 39),
    ] {
        let mut out = vec![f32::from_bits(CANARY); n];
        let mut range = [start, end];
        // SAFETY: every index in start..end is below n; range holds two i64.
        unsafe {
            k.call(&[
                a.as_ptr() as *mut u8,
                bb.as_ptr() as *mut u8,
                out.as_mut_ptr() as *mut u8,
                range.as_mut_ptr() as *mut u8,
            ])
        }
        .expect("call");
        for (i, &o) in out.iter().enumerate() {
            if (start..end).contains(&(i as i64)) {
                assert_eq!(o, a[i] + bb[i], "[{start},{end}) i={i}");
            } else {
                assert_eq!(o.to_bits(), CANARY, "[{start},{end}) wrote i={i}");
            }
        }
    }
}

#[test]
fn carried_vector_accumulator_sums_with_tail() {
    for n in [0i64, 3, 4, 1003] {
        let k = Jit::compile_kernel("sum", 2, |b, env| {
            let bufs = env.buffers().to_vec();
            let zero = b.ins().f32const(0.0);
            let zero4 = b.ins().splat(types::F32X4, zero);
            let split = vector_end(b, 0, n, 4)?;
            let acc = for_range_carry(b, 0, split, 4, &[zero4], |b, iv, acc| {
                let p = elem_addr(b, bufs[0], iv, 4);
                let x = b.ins().load(types::F32X4, data_flags(), p, 0);
                Ok(vec![b.ins().fadd(acc[0], x)])
            })?;
            let mut total = zero;
            for lane in 0..4 {
                let l = b.ins().extractlane(acc[0], lane);
                total = b.ins().fadd(total, l);
            }
            let total = for_range_carry(b, split, n, 1, &[total], |b, iv, acc| {
                let p = elem_addr(b, bufs[0], iv, 4);
                let x = b.ins().load(types::F32, data_flags(), p, 0);
                Ok(vec![b.ins().fadd(acc[0], x)])
            })?;
            b.ins().store(data_flags(), total[0], bufs[1], 0);
            Ok(())
        })
        .expect("compile");
        // Small integers: every partial sum is exact, so the order of additions does not matter.
        let xs: Vec<f32> = (0..n).map(|i| (i % 13) as f32).collect();
        let mut out = [f32::NAN];
        // SAFETY: the kernel reads n floats and writes one.
        unsafe { k.call(&[xs.as_ptr() as *mut u8, out.as_mut_ptr() as *mut u8]) }.expect("call");
        assert_eq!(out[0], xs.iter().sum::<f32>(), "n={n}");
    }
}

#[test]
fn nested_loops_fill_a_matrix() {
    let (rows, cols) = (5i64, 7i64);
    let k = Jit::compile_kernel("fill", 1, |b, env| {
        let out = env.buffer(0)?;
        for_range(b, 0, rows, 1, |b, i| {
            for_range(b, 0, cols, 1, |b, j| {
                let row = b.ins().imul_imm_s(i, cols);
                let idx = b.ins().iadd(row, j);
                let ten_i = b.ins().imul_imm_s(i, 10);
                let v = b.ins().iadd(ten_i, j);
                let v = b.ins().fcvt_from_sint(types::F32, v);
                let p = elem_addr(b, out, idx, 4);
                b.ins().store(data_flags(), v, p, 0);
                Ok(())
            })
        })
    })
    .expect("compile");
    let mut out = vec![-1.0f32; (rows * cols) as usize];
    // SAFETY: the kernel writes rows * cols floats.
    unsafe { k.call(&[out.as_mut_ptr() as *mut u8]) }.expect("call");
    for i in 0..rows {
        for j in 0..cols {
            assert_eq!(out[(i * cols + j) as usize], (i * 10 + j) as f32);
        }
    }
}

#[test]
fn loop_helpers_reject_bad_parameters() {
    let err = Jit::compile_kernel("bad_step", 0, |b, _| for_range(b, 0, 10, 0, |_, _| Ok(())))
        .unwrap_err();
    assert!(err.contains("bad_step") && err.contains("step"), "{err}");
    let err = Jit::compile_kernel("bad_width", 0, |b, _| vector_end(b, 0, 10, 3).map(|_| ()))
        .unwrap_err();
    assert!(err.contains("power of two"), "{err}");
    let err = Jit::compile_kernel("bad_carry", 0, |b, _| {
        let x = b.ins().f32const(1.0);
        for_range_carry(b, 0, 4, 1, &[x], |b, _, _| {
            Ok(vec![b.ins().iconst(types::I64, 0)])
        })
        .map(|_| ())
    })
    .unwrap_err();
    assert!(err.contains("carried"), "{err}");
    let err = Jit::compile_kernel("bad_buffer", 2, |_, env| env.buffer(2).map(|_| ())).unwrap_err();
    assert!(
        err.contains("buffer 2") && err.contains("2 buffers"),
        "{err}"
    );
}

#[test]
fn kernel_handles_are_checked_shared_and_outlive_the_jit_code() {
    let k: CompiledKernel = {
        let mut jit = jit();
        let id = jit
            .define_kernel("add", 3, |b, env| {
                let bufs = env.buffers().to_vec();
                add_body(b, &bufs, Bound::Const(0), Bound::Const(9))
            })
            .expect("define");
        let code = jit.finish().expect("finish");
        assert!(code.kernel_by_name("nope").is_err());
        code.kernel(id).expect("kernel")
    };
    assert_eq!((k.name(), k.n_buffers()), ("add", 3));
    // SAFETY: a wrong buffer count is rejected before anything runs.
    let err = unsafe { k.call(&[]) }.unwrap_err();
    assert!(err.contains("takes 3 buffers, got 0"), "{err}");

    fn send_sync<T: Send + Sync>() {}
    send_sync::<CompiledKernel>();
    let (a, bb) = inputs(9);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (k, a, bb) = (k.clone(), &a, &bb);
            s.spawn(move || {
                let mut out = vec![0.0f32; 9];
                // SAFETY: 9-element buffers, each thread writes its own output.
                unsafe {
                    k.call(&[
                        a.as_ptr() as *mut u8,
                        bb.as_ptr() as *mut u8,
                        out.as_mut_ptr() as *mut u8,
                    ])
                }
                .expect("call");
                assert!((0..9).all(|i| out[i] == a[i] + bb[i]));
            });
        }
    });
}

#[test]
fn compile_failures_are_errors() {
    let mut jit = jit();
    // A body error names the kernel and leaves the Jit usable.
    let err = jit
        .define_kernel("body_fails", 0, |_, _| Err("no luck".into()))
        .unwrap_err();
    assert!(
        err.contains("body_fails") && err.contains("no luck"),
        "{err}"
    );
    assert!(jit.define_kernel("fine", 0, |_, _| Ok(())).is_ok());
    assert!(
        jit.define_kernel("fine", 0, |_, _| Ok(()))
            .unwrap_err()
            .contains("twice")
    );
    // Invalid CLIF (an integer add on floats) is rejected by the verifier, which runs in debug
    // builds; a release build skips it (compile time), where cranelift may lower the dead add
    // without complaint, so there it only must not crash.
    let result = jit.define_kernel("ill_typed", 0, |b, _| {
        let x = b.ins().f32const(1.0);
        let _ = b.ins().iadd(x, x);
        Ok(())
    });
    if cfg!(debug_assertions) {
        let err = result.unwrap_err();
        assert!(err.contains("ill_typed"), "{err}");
        assert!(err.contains("verifier") && err.contains("iadd"), "{err}");
    }
    // A panic inside the body poisons the Jit.
    let mut jit = self::jit();
    let err = jit
        .define_kernel("panics", 0, |_, _| panic!("boom"))
        .unwrap_err();
    assert!(err.contains("panic") && err.contains("boom"), "{err}");
    assert!(
        jit.define_kernel("after", 0, |_, _| Ok(()))
            .unwrap_err()
            .contains("unusable")
    );
    assert!(jit.finish().is_err());
}

extern "C" fn host_triple(x: f32) -> f32 {
    3.0 * x
}

#[test]
fn imports_and_plain_functions() {
    let mut jit = Jit::with_options(JitOptions {
        symbols: vec![("host_triple".into(), host_triple as *const () as usize)],
        ..JitOptions::default()
    })
    .expect("jit");
    let mut sig = jit.signature();
    sig.params.push(AbiParam::new(types::F32));
    sig.returns.push(AbiParam::new(types::F32));
    let triple = jit
        .declare_function("host_triple", &sig, Linkage::Import)
        .expect("import");
    let mut add_sig = jit.signature();
    add_sig
        .params
        .extend([AbiParam::new(types::I64), AbiParam::new(types::I64)]);
    add_sig.returns.push(AbiParam::new(types::I64));
    let add = jit
        .declare_function("add_i64", &add_sig, Linkage::Local)
        .expect("declare");
    jit.define_function(add, |b, env| {
        let p = env.params().to_vec();
        let s = b.ins().iadd(p[0], p[1]);
        b.ins().return_(&[s]);
        Ok(())
    })
    .expect("define add");
    let kid = jit
        .define_kernel("call_host", 1, |b, env| {
            let buf = env.buffer(0)?;
            let f = env.func_ref(b, triple)?;
            let x = b.ins().load(types::F32, data_flags(), buf, 0);
            let call = b.ins().call(f, &[x]);
            let y = b.inst_results(call)[0];
            b.ins().store(data_flags(), y, buf, 0);
            Ok(())
        })
        .expect("define kernel");
    let code = jit.finish().expect("finish");
    assert!(
        code.function_address(triple).is_err(),
        "imports have no JIT address"
    );
    let addr = code.function_address(add).expect("address");
    // SAFETY: add_i64 was defined with signature (i64, i64) -> i64 in the C convention and
    // `code` is alive for the call.
    let add_fn = unsafe { std::mem::transmute::<*const u8, extern "C" fn(i64, i64) -> i64>(addr) };
    assert_eq!(add_fn(40, 2), 42);
    let k = code.kernel(kid).expect("kernel");
    let mut v = [1.5f32];
    // SAFETY: the kernel reads and writes one float.
    unsafe { k.call(&[v.as_mut_ptr() as *mut u8]) }.expect("call");
    assert_eq!(v[0], 4.5);
}

#[test]
fn clif_dump_writes_one_file_per_function() {
    let dir = std::env::temp_dir().join(format!("kiln-clif-{}", std::process::id()));
    let mut jit = Jit::with_options(JitOptions {
        dump: ClifDump::Dir(dir.clone()),
        ..JitOptions::default()
    })
    .expect("jit");
    jit.define_kernel("dump/me", 0, |_, _| Ok(()))
        .expect("define");
    let text = std::fs::read_to_string(dir.join("dump_me.clif")).expect("dump file");
    assert!(
        text.contains("kiln function 'dump/me'")
            && text.contains("function")
            && text.contains("return"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn feature_selection() {
    assert_eq!(CpuFeatures::parse("none"), Ok(CpuFeatures::Baseline));
    assert_eq!(CpuFeatures::parse(" native "), Ok(CpuFeatures::Native));
    assert_eq!(
        CpuFeatures::parse("sse41, fma"),
        Ok(CpuFeatures::Only(vec!["sse41".into(), "fma".into()]))
    );
    // The GEMM family names `kiln bench` prints are accepted too, in any case.
    assert_eq!(CpuFeatures::parse("avx512"), Ok(CpuFeatures::Native));
    assert_eq!(CpuFeatures::parse("AVX2"), Ok(CpuFeatures::UpToAvx2));
    assert_eq!(CpuFeatures::parse("portable"), Ok(CpuFeatures::Baseline));
    assert_eq!(CpuFeatures::UpToAvx2.check(), Ok(()));
    let err = CpuFeatures::parse("avx512x").unwrap().check().unwrap_err();
    assert!(
        err.starts_with("KILN_CPU_FEATURES: unknown value 'avx512x': expected native, avx512, avx2, none (or portable)"),
        "{err}"
    );
    let with = |features| {
        Jit::with_options(JitOptions {
            features,
            ..JitOptions::default()
        })
    };
    let baseline = with(CpuFeatures::Baseline).expect("baseline");
    assert!(!baseline.has_fma() && !baseline.math_config().fma);
    let native = with(CpuFeatures::Native).expect("native");
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(native.has_fma(), std::is_x86_feature_detected!("fma"));
        if std::is_x86_feature_detected!("fma") {
            let only = with(CpuFeatures::Only(vec!["avx".into(), "has_fma".into()]))
                .expect("avx+fma only");
            assert!(only.has_fma());
            assert_ne!(native.target_key(), baseline.target_key());
        }
    }
    let err = with(CpuFeatures::Only(vec!["warp_drive".into()]))
        .err()
        .expect("unknown feature");
    assert!(err.contains("warp_drive") && err.contains("fma"), "{err}");
}
