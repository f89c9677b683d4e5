//! Bad .kiln input: every case must give an `Error::Parse` at the offending token's line and
//! column (1-based, counted in characters) with a message naming what was found and expected.

use kiln_ir::Error;
use kiln_ir::text::{parse, parse_file};
use std::path::Path;

/// Lines 1-3 of every statement case; the statement under test is line 4.
const HEAD: &str = "kiln 1\ninput %x : f32[1,8,8,3]\nvar %w : f32[3,3,3,4] = zeros\n";

#[track_caller]
fn check_text(src: &str, line: usize, col: usize, words: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    match parse(src, Some(&dir)) {
        Err(Error::Parse {
            line: l,
            col: c,
            message,
        }) => {
            assert_eq!((l, c), (line, col), "position of {message:?} for {src:?}");
            for w in words {
                assert!(
                    message.contains(w),
                    "message {message:?} lacks {w:?} (input {src:?})"
                );
            }
        }
        other => panic!("expected a parse error for {src:?}, got {other:?}"),
    }
}

/// A statement on line 4 after [`HEAD`].
#[track_caller]
fn check(stmt: &str, col: usize, words: &[&str]) {
    check_text(&format!("{HEAD}{stmt}\n"), 4, col, words);
}

#[test]
fn unknown_op_suggests_similar_names() {
    check("%y = rleu(%x)", 6, &["unknown op `rleu`", "relu"]);
    check("%y = conv(%x, %w)", 6, &["unknown op `conv`", "conv2d"]);
    check("%y = input(%x)", 6, &["declares a source"]);
}

#[test]
fn wrong_arity() {
    check(
        "%y = add(%x)",
        6,
        &["wrong number of operands", "add takes 2", "found 1"],
    );
    check("%y = relu(%x, %w)", 6, &["relu takes 1", "found 2"]);
    check("%y = concat(axis=0)", 6, &["at least 1", "found 0"]);
}

#[test]
fn unknown_duplicate_and_conflicting_attributes() {
    check(
        "%y = relu(%x, alpha=0.1)",
        15,
        &["unknown attribute `alpha` for relu", "no attributes"],
    );
    check(
        "%y = leaky_relu(%x, beta=0.1)",
        21,
        &["unknown attribute `beta`", "alpha"],
    );
    check(
        "%y = softmax(%x, axis=1, axis=2)",
        26,
        &["`axis` given twice"],
    );
    check(
        "%y = reduce_sum(%x, axes=[1], axis=1)",
        36,
        &["`axes` or `axis`, not both"],
    );
}

#[test]
fn mistyped_attributes() {
    check(
        "%y = conv2d(%x, %w, strides=\"x\", padding=\"SAME\")",
        29,
        &["`strides` of conv2d", "expected [h,w]", "string \"x\""],
    );
    check(
        "%y = concat(%x, axis=1.5)",
        22,
        &["`axis` of concat", "integer", "`1.5`"],
    );
    check(
        "%y = concat(%x, axis=99999999999999999999)",
        22,
        &["out of range"],
    );
    check(
        "%y = matmul(%x, %w, transpose_a=1)",
        33,
        &["transpose_a", "true or false"],
    );
    check(
        "%y = conv2d(%x, %w, padding=\"SAME\", data_format=\"NWHC\")",
        49,
        &["bad data_format", "NCHW"],
    );
    check(
        "%y = conv2d(%x, %w, strides=[2,1,1,1], padding=\"SAME\")",
        29,
        &["batch and channel entries must be 1"],
    );
    check(
        "%y = conv2d(%x, %w, strides=[1,2,3], padding=\"SAME\")",
        29,
        &["3 element"],
    );
}

#[test]
fn missing_required_attributes() {
    check(
        "%y = conv2d(%x, %w)",
        6,
        &["conv2d needs the attribute `padding`", "\"SAME\""],
    );
    check(
        "%y = max_pool(%x, padding=\"SAME\")",
        6,
        &["max_pool needs the attribute `ksize`"],
    );
    check("%y = concat(%x)", 6, &["concat needs the attribute `axis`"]);
    check(
        "%y = reshape(%x)",
        6,
        &["reshape needs the attribute `shape`"],
    );
}

#[test]
fn bad_padding() {
    check(
        "%y = conv2d(%x, %w, padding=\"same\")",
        29,
        &["bad padding \"same\"", "\"SAME\", \"VALID\""],
    );
    check(
        "%y = conv2d(%x, %w, padding=[[1,1]])",
        29,
        &["bad padding", "1 pair"],
    );
    check(
        "%y = conv2d(%x, %w, padding=[[1,1],[1]])",
        36,
        &["pair", "1 element"],
    );
}

#[test]
fn negative_and_zero_strides() {
    check(
        "%y = conv2d(%x, %w, strides=[-1,1], padding=\"SAME\")",
        30,
        &["non-negative", "`-1`"],
    );
    check(
        "%y = max_pool(%x, ksize=-2, padding=\"SAME\")",
        25,
        &["non-negative"],
    );
    // Zero passes the parser; shape inference rejects it, reported at the statement.
    check(
        "%y = conv2d(%x, %w, strides=[0,1], padding=\"SAME\")",
        1,
        &["%y", "conv2d", "stride"],
    );
}

#[test]
fn names_undefined_duplicate_or_misused() {
    check("%y = relu(%z)", 11, &["undefined name %z"]);
    check("%x = relu(%x)", 1, &["duplicate name %x", "line 2"]);
    check(
        "const %w : f32[1] = [1]",
        7,
        &["duplicate name %w", "line 3"],
    );
    check(
        "%y = assign(%x, %x)",
        13,
        &["operand 0 must be a var", "%x is input"],
    );
    check(
        "%y = conv2d(padding=\"SAME\", %x, %w)",
        29,
        &["operands come before attributes"],
    );
    check("output %x, %nope", 12, &["%nope", "not defined"]);
}

#[test]
fn unclosed_brackets_parens_and_strings() {
    check(
        "%y = conv2d(%x, %w, padding=\"SAME\", strides=[1,1",
        45,
        &["unclosed `[`"],
    );
    check("%y = relu(%x", 10, &["unclosed `(`"]);
    check("%y = relu(%x,", 10, &["unclosed `(`"]);
    check(
        "%y = conv2d(%x, %w, padding=\"SAME)",
        29,
        &["unclosed string"],
    );
    check("input %q : f32[2,3", 15, &["unclosed `[`"]);
    check("var %q : f32[2] = normal(0, 1", 25, &["unclosed `(`"]);
}

#[test]
fn literals_must_fit_the_declared_type() {
    check(
        "const %c : f32[2,2] = [1, 2, 3]",
        23,
        &["3 element", "f32[2,2]", "needs 4"],
    );
    check(
        "const %c : f32[2,2] = [[1, 2], [3]]",
        32,
        &["nested literal", "1 element", "needs 2"],
    );
    check("const %c : f32[2] = 5", 21, &["bare value", "scalar"]);
    check(
        "const %c : i32[1] = [3000000000]",
        22,
        &["does not fit in i32"],
    );
    check("const %c : i32[1] = [1.5]", 22, &["integer"]);
    check("const %c : bool[1] = [1]", 23, &["true or false"]);
    check("const %c : f32[1] = [x]", 22, &["number", "`x`"]);
    check(
        "const %c : f32[100000000000] = zeros",
        12,
        &["100000000000 elements", "limit"],
    );
    check(
        "var %q : f32[?,2] = zeros",
        14,
        &["every dim must be known", "`?`"],
    );
    check("var %q : i32[2] = normal(0, 1, 1)", 19, &["normal", "f32"]);
    check(
        "var %q : f32[2] = normal(0, 1)",
        19,
        &["normal(mean, std, seed)", "2 argument"],
    );
    check(
        "var %q : f32[2] = uniform(0, 1, -1)",
        33,
        &["argument 3", "non-negative"],
    );
    check("var %q : f32[2]", 16, &["expected `=` and an initialiser"]);
    check(
        "var %q : f32[2] = bogus",
        19,
        &["expected an initialiser", "`bogus`"],
    );
    check(
        "input %q : f32[2] = zeros",
        19,
        &["input takes no initialiser"],
    );
    check("input %q : f16[2]", 12, &["unknown dtype `f16`"]);
    check("input %q : f32[-2]", 16, &["non-negative integer or `?`"]);
}

#[test]
fn missing_or_mismatched_npy_file() {
    check(
        "const %c : f32[2] = npy(\"nope.npy\")",
        21,
        &["npy(\"nope.npy\")", "nope.npy", "No such file"],
    );
    check(
        "const %c : f32[3] = npy(\"w22.npy\")",
        21,
        &["holds f32[2,2]", "declared f32[3]"],
    );
}

#[test]
fn lexical_garbage() {
    check("%y = relu(%x) extra", 15, &["unexpected `extra`"]);
    check("%y = relu(%x) @", 15, &["unexpected character '@'"]);
    check("const %c : f32[1] = [1.2.3]", 22, &["malformed number"]);
    check("%y = reshape(%x, shape=[1e])", 25, &["exponent"]);
    check("foo %x", 1, &["expected a statement", "`foo`"]);
    check("kiln 1", 1, &["only once"]);
    check_text(
        "kiln 1\n\u{0}\u{7f}xyz\n",
        2,
        1,
        &["unexpected character '\\0'"],
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    // "ÉÉ" is 4 bytes but 2 columns; strides are checked before padding.
    check(
        "%y = conv2d(%x, %w, padding=\"ÉÉ\", strides=[-1,1])",
        44,
        &["non-negative"],
    );
}

#[test]
fn deep_nesting_is_bounded() {
    let deep = format!("%y = reshape(%x, shape={})", "[".repeat(100_000));
    check(&deep, 88, &["deeper than 64"]);
    let deep_lit = format!(
        "const %c : f32[1] = {}1{}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    check(&deep_lit, 21 + 64, &["deeper than 64"]);
}

#[test]
fn header_errors() {
    check_text("", 1, 1, &["empty file", "kiln 1"]);
    check_text("# only a comment\n\n", 1, 1, &["empty file"]);
    check_text(
        "kiln 4\ninput %x : f32[1]\n",
        1,
        6,
        &["unsupported format version 4", "kiln 1", "kiln 2", "kiln 3"],
    );
    check_text("kiln 0\n", 1, 6, &["unsupported format version 0"]);
    check_text("kiln\n", 1, 5, &["format version"]);
    check_text("kiln 1 2\n", 1, 8, &["unexpected `2`"]);
    check_text(
        "\ninput %x : f32[2]\n",
        2,
        1,
        &["missing header", "kiln 1", "`input`"],
    );
}

#[test]
fn shape_inference_errors_carry_the_statement_position() {
    let src = format!("{HEAD}input %v : f32[5]\n  %y = add(%x, %v)\n");
    let words = ["%y", "add", "f32[1,8,8,3]", "f32[5]"];
    check_text(&src, 5, 3, &words);
    check("%y = bias_add(%x, %w)", 1, &["%y", "bias_add"]);
    let src = format!("{HEAD}var %s : f32[2] = zeros\n%y = assign(%s, %x)\n");
    check_text(&src, 5, 1, &["%y", "assign", "f32[2]"]);
}

#[test]
fn parse_file_reports_invalid_utf8_at_its_line() {
    let dir = std::env::temp_dir().join(format!("kiln-text-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("bad.kiln");
    std::fs::write(
        &file,
        b"kiln 1\ninput %x : f32[2]\n%y = r\xc3\xa9\xfflu(%x)\n",
    )
    .expect("write");
    let err = parse_file(&file);
    let missing = parse_file(&dir.join("missing.kiln"));
    let _ = std::fs::remove_dir_all(&dir);
    match err {
        Err(Error::Parse {
            line: 3,
            col: 8,
            message,
        }) => {
            assert!(
                message.contains("UTF-8") && message.contains("0xff"),
                "{message}"
            );
        }
        other => panic!("expected a parse error at 3:8, got {other:?}"),
    }
    assert!(
        matches!(missing, Err(Error::Io { ref path, .. }) if path.ends_with("missing.kiln")),
        "{missing:?}"
    );
}

/// A nested call or an operand without its `%` used to read "expected `=` after the attribute
/// name": the message now says that operands are %names.
#[test]
fn operands_must_be_percent_names() {
    check(
        "%y = relu(add(%x, %x))",
        11,
        &[
            "`add(...)` inside `relu(...)`",
            "operands must be %names",
            "%t = add(...)",
        ],
    );
    check(
        "%y = relu(x)",
        11,
        &[
            "operand `x` lacks its `%`",
            "operands must be %names",
            "write %x",
        ],
    );
    check("%y = add(%x, w)", 14, &["operand `w` lacks its `%`"]);
    // An attribute still reads as one.
    check(
        "%y = relu(%x, alpha 2)",
        21,
        &["`=` after the attribute name `alpha`"],
    );
}

/// Undefined node names get a did-you-mean, as ops and attributes do.
#[test]
fn undefined_names_suggest_similar_ones() {
    check(
        "%y = relu(%xx)",
        11,
        &["undefined name %xx", "did you mean %x?"],
    );
    check("%y = add(%x, %ww)", 14, &["did you mean %w?"]);
    check("%y = relu(%quux)", 11, &["undefined name %quux"]);
    check_text(
        &format!("{HEAD}%relu1 = relu(%x)\noutput %relu2\n"),
        5,
        8,
        &["output %relu2 is not defined", "did you mean %relu1?"],
    );
}
