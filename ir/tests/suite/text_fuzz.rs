//! Fuzzing the .kiln parser with proptest: mutated valid files, token soup and random bytes.
//! Whatever the input, `parse` must return (never panic), quickly, with either a graph that
//! prints and re-parses to the same text, or an `Error::Parse` at a position inside the input.

use kiln_ir::Error;
use kiln_ir::text::{parse, parse_file, print};
use proptest::prelude::*;
use proptest::sample::Index;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SEED: &str = include_str!("../data/all_ops.kiln");

/// Fragments worth inserting: delimiters, edge-case numbers, keywords, huge shapes.
const TOKENS: &[&str] = &[
    "[",
    "]",
    "(",
    ")",
    ",",
    "=",
    ":",
    "%",
    "%x",
    "%m",
    "\"",
    "#",
    "\n",
    "?",
    "-",
    ".",
    "-1",
    "0",
    "2147483648",
    "99999999999999999999",
    "18446744073709551616",
    "1e999",
    "-1e-999",
    "nan",
    "-inf",
    "true",
    "é",
    "\u{0}",
    "\t",
    "\r",
    "kiln 1",
    "kiln 2",
    "input",
    "var",
    "const",
    "output %m",
    "conv2d",
    "depthwise_conv2d",
    "max_pool",
    "matmul",
    "reshape",
    "concat",
    "assign",
    "padding=\"SAME\"",
    "padding=[[1,1],[1,1]]",
    "strides=[0,0]",
    "strides=[1,9,9,1]",
    "ksize=[0,0]",
    "axes=[5]",
    "axis=-9",
    "shape=[-1,-1]",
    "shape=[0,-1]",
    "perm=[0,0]",
    "begin=[18446744073709551615]",
    "size=[-5]",
    "paddings=[[9999999999,0]]",
    "[[",
    "f32[2147483648]",
    "f32[65536,65536]",
    "f32[0]",
    "f32[]",
    "i32[2]",
    "bool[1]",
    "zeros",
    "ones",
    "fill(nan)",
    "normal(0,1,1)",
    "uniform(1,0,3)",
    "npy(\"w22.npy\")",
    "npy(\"/\")",
    "data_format=\"NCHW\"",
    "epsilon=-1",
    "constant_value=inf",
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Parses `text`; checks the outcome as the module doc says.
fn check(text: &str) -> Result<(), TestCaseError> {
    let dir = data_dir();
    let start = Instant::now();
    let result = parse(text, Some(&dir));
    prop_assert!(
        start.elapsed() < Duration::from_secs(2),
        "parse took {:?}",
        start.elapsed()
    );
    match result {
        Ok(g) => {
            let printed = print(&g);
            let again = parse(&printed, Some(&dir));
            prop_assert!(
                again.is_ok(),
                "printed graph does not parse: {again:?}\n{printed}"
            );
            if let Ok(g2) = again {
                prop_assert_eq!(print(&g2), printed);
            }
        }
        Err(Error::Parse { line, col, message }) => {
            let lines = text.split('\n').count();
            prop_assert!(
                line >= 1 && line <= lines,
                "line {line} of {lines}: {message}"
            );
            let width = text
                .split('\n')
                .nth(line - 1)
                .map_or(0, |l| l.chars().count());
            prop_assert!(
                col >= 1 && col <= width + 1,
                "col {col} of {width}: {message}"
            );
            prop_assert!(!message.is_empty());
        }
        Err(other) => prop_assert!(false, "not a parse error: {other:?}"),
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index, usize),
    InsertByte(Index, u8),
    InsertToken(Index, Index),
    Replace(Index, u8),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1usize..12).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::InsertByte(i, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, t)| Mutation::InsertToken(i, t)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
    match m {
        Mutation::Delete(i, n) => {
            let p = at(i, bytes.len()).min(bytes.len());
            let end = (p + n).min(bytes.len());
            bytes.drain(p..end);
        }
        Mutation::InsertByte(i, b) => {
            let p = at(i, bytes.len());
            bytes.insert(p, *b);
        }
        Mutation::InsertToken(i, t) => {
            let p = at(i, bytes.len());
            let tok = TOKENS[t.index(TOKENS.len())].as_bytes();
            bytes.splice(p..p, tok.iter().copied());
        }
        Mutation::Replace(i, b) => {
            if !bytes.is_empty() {
                let p = i.index(bytes.len());
                bytes[p] = *b;
            }
        }
        Mutation::Truncate(i) => {
            let p = at(i, bytes.len());
            bytes.truncate(p);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_valid_files_never_panic(muts in proptest::collection::vec(mutation(), 1..8)) {
        let mut bytes = SEED.as_bytes().to_vec();
        for m in &muts {
            apply(&mut bytes, m);
        }
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn token_soup_never_panics(
        lines in proptest::collection::vec(proptest::collection::vec(any::<Index>(), 1..10), 1..12)
    ) {
        let mut text = String::from("kiln 1\ninput %x : f32[?,8,8,3]\ninput %m : f32[4,6]\n");
        for line in &lines {
            let toks: Vec<&str> = line.iter().map(|i| TOKENS[i.index(TOKENS.len())]).collect();
            text.push_str(&toks.join(" "));
            text.push('\n');
        }
        check(&text)?;
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), header in any::<bool>()) {
        let mut text = if header { String::from("kiln 1\n") } else { String::new() };
        text.push_str(&String::from_utf8_lossy(&bytes));
        check(&text)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Raw (often non-UTF-8) bytes through `parse_file`: a parse error, never a panic.
    #[test]
    fn parse_file_handles_raw_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dir = std::env::temp_dir().join(format!("kiln-text-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let file = dir.join("f.kiln");
        let mut content = b"kiln 1\n".to_vec();
        content.extend_from_slice(&bytes);
        std::fs::write(&file, &content).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let result = parse_file(&file);
        prop_assert!(matches!(result, Ok(_) | Err(Error::Parse { .. })), "{result:?}");
        if let Err(Error::Parse { line, .. }) = result {
            prop_assert!(line >= 1 && line <= content.split(|&b| b == b'\n').count());
        }
    }
}
