//! Each check of [`check_close`] bites: a tensor broken in one way fails with the matching
//! [`Mismatch`], and one just inside the tolerance passes.

use super::*;

fn f32s(dims: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(dims, v.to_vec()).unwrap()
}

fn values_mismatch(r: Result<(), Mismatch>) -> (Vec<usize>, usize, f64) {
    match r {
        Err(Mismatch::Values {
            index,
            bad,
            max_abs_error,
            ..
        }) => (index, bad, max_abs_error),
        other => panic!("expected a value mismatch, got {other:?}"),
    }
}

#[test]
fn identical_tensors_pass_under_every_policy() {
    let t = f32s(&[2, 2], &[1.0, f32::NAN, f32::INFINITY, -0.0]);
    for tol in [Tolerance::EXACT, Tolerance::KERNEL, Tolerance::NETWORK] {
        check_close(&t, &t, tol).unwrap();
    }
}

#[test]
fn wrong_dtype_fails_even_with_equal_values() {
    let want = Tensor::new(&[2], Data::I64(vec![1, 2])).unwrap();
    let got = Tensor::new(&[2], Data::I32(vec![1, 2])).unwrap();
    let err = check_close(&got, &want, Tolerance::KERNEL).unwrap_err();
    assert_eq!(
        err,
        Mismatch::Dtype {
            got: DType::I32,
            want: DType::I64
        }
    );
    assert_eq!(err.to_string(), "dtype i32, expected i64");
    // An f32 tensor holding the right integers is still the wrong dtype.
    let got = f32s(&[2], &[1.0, 2.0]);
    assert!(matches!(
        check_close(&got, &want, Tolerance::NETWORK),
        Err(Mismatch::Dtype { .. })
    ));
}

#[test]
fn wrong_dims_fail_even_with_the_same_elements() {
    let want = f32s(&[2, 3], &[1.0; 6]);
    let got = f32s(&[3, 2], &[1.0; 6]);
    let err = check_close(&got, &want, Tolerance::KERNEL).unwrap_err();
    assert_eq!(err.to_string(), "dims [3, 2], expected [2, 3]");
}

#[test]
fn nan_against_a_number_fails_both_ways() {
    let want = f32s(&[3], &[1.0, 2.0, 3.0]);
    let got = f32s(&[3], &[1.0, f32::NAN, 3.0]);
    let (index, bad, max) = values_mismatch(check_close(&got, &want, Tolerance::NETWORK));
    assert_eq!((index, bad), (vec![1], 1));
    assert!(max.is_infinite(), "a misplaced NaN is an infinite error");
    let (index, _, _) = values_mismatch(check_close(&want, &got, Tolerance::NETWORK));
    assert_eq!(index, vec![1]);
}

#[test]
fn infinity_sign_and_placement_matter() {
    let want = f32s(&[2], &[f32::INFINITY, 5.0]);
    let flipped = f32s(&[2], &[f32::NEG_INFINITY, 5.0]);
    let (index, bad, _) = values_mismatch(check_close(&flipped, &want, Tolerance::NETWORK));
    assert_eq!((index, bad), (vec![0], 1));
    let overflowed = f32s(&[2], &[f32::INFINITY, f32::INFINITY]);
    let (index, _, _) = values_mismatch(check_close(&overflowed, &want, Tolerance::NETWORK));
    assert_eq!(index, vec![1]);
}

#[test]
fn the_bound_is_abs_plus_rel_plus_scale() {
    // want = [1000, 1]: KERNEL allows 1e-4 + 1e-4 * |w| + 1e-5 * 1000 at each element.
    let want = f32s(&[2], &[1000.0, 1.0]);
    let slack_small = 1e-4 + 1e-4 * 1.0 + 1e-5 * 1000.0; // 0.0102
    let inside = f32s(&[2], &[1000.0, 1.0 + 0.9 * slack_small as f32]);
    check_close(&inside, &want, Tolerance::KERNEL).unwrap();
    let outside = f32s(&[2], &[1000.0, 1.0 + 1.1 * slack_small as f32]);
    let (index, bad, _) = values_mismatch(check_close(&outside, &want, Tolerance::KERNEL));
    assert_eq!((index, bad), (vec![1], 1));
    // Without the scale term the same error is far outside.
    let no_scale = Tolerance::new(1e-4, 1e-4, 0.0);
    assert!(check_close(&inside, &want, no_scale).is_err());
    // The relative term: 1000 * 1e-3 at NETWORK.
    let slack_big = 1e-3 + 1e-3 * 1000.0;
    let inside = f32s(&[2], &[1000.0 + 0.9 * slack_big as f32, 1.0]);
    check_close(&inside, &want, Tolerance::NETWORK).unwrap();
    let outside = f32s(&[2], &[1000.0 - 1.1 * slack_big as f32, 1.0]);
    let (index, _, _) = values_mismatch(check_close(&outside, &want, Tolerance::NETWORK));
    assert_eq!(index, vec![0]);
}

#[test]
fn exact_means_the_same_bits() {
    let want = f32s(&[2], &[0.0, 1.0]);
    let neg_zero = f32s(&[2], &[-0.0, 1.0]);
    assert!(check_close(&neg_zero, &want, Tolerance::EXACT).is_err());
    let one_ulp = f32s(&[2], &[0.0, f32::from_bits(1.0f32.to_bits() + 1)]);
    let (index, _, _) = values_mismatch(check_close(&one_ulp, &want, Tolerance::EXACT));
    assert_eq!(index, vec![1]);
    // Any NaN matches any NaN.
    let a = f32s(&[1], &[f32::NAN]);
    let b = f32s(&[1], &[f32::from_bits(0x7fc0_0001)]);
    check_close(&a, &b, Tolerance::EXACT).unwrap();
}

#[test]
fn integers_and_bools_compare_exactly_whatever_the_tolerance() {
    let huge = Tolerance::new(10.0, 10.0, 10.0);
    let want = Tensor::new(&[2], Data::I32(vec![4, 7])).unwrap();
    let got = Tensor::new(&[2], Data::I32(vec![4, 8])).unwrap();
    let err = check_close(&got, &want, huge).unwrap_err();
    assert!(matches!(
        &err,
        Mismatch::Values { tolerance, .. } if tolerance.is_exact()
    ));
    // i64 values beyond f64's 53-bit mantissa still differ, and print exactly.
    let big = 1i64 << 60;
    let want = Tensor::new(&[1], Data::I64(vec![big])).unwrap();
    let got = Tensor::new(&[1], Data::I64(vec![big + 1])).unwrap();
    let err = check_close(&got, &want, huge).unwrap_err().to_string();
    assert!(err.contains(&(big + 1).to_string()), "{err}");
    let want = Tensor::new(&[2], Data::Bool(vec![true, false])).unwrap();
    let got = Tensor::new(&[2], Data::Bool(vec![true, true])).unwrap();
    assert!(check_close(&got, &want, huge).is_err());
    check_close(&want, &want, Tolerance::EXACT).unwrap();
}

#[test]
fn the_message_names_the_first_bad_index_the_values_and_the_counts() {
    let want = f32s(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let got = f32s(&[2, 3], &[0.0, 1.0, 2.0, 3.5, 4.0, 9.0]);
    let err = check_close(&got, &want, Tolerance::KERNEL)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("2 of 6 elements differ (max abs error 4e0"),
        "{err}"
    );
    assert!(
        err.ends_with("first at [1, 0]: got 3.5, expected 3"),
        "{err}"
    );
}

#[test]
#[should_panic(expected = "output y: dims [1], expected [2]")]
fn assert_close_panics_with_the_mismatch() {
    assert_close(
        &f32s(&[1], &[1.0]),
        &f32s(&[2], &[1.0, 2.0]),
        Tolerance::KERNEL,
        "output y",
    );
}
