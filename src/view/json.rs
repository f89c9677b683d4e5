//! Just enough JSON writing for the page's model and for traces. Strings are escaped so the
//! text is also safe inside an HTML `<script>` element: `<`, `>` and `&` are written as
//! `\u003c`-style escapes, so no name can close the element or start a comment.

use std::fmt::Write;

/// A JSON string literal.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number, or `null` for NaN and infinities (which JSON cannot write).
pub fn number(x: f64) -> String {
    if x.is_finite() {
        // Three decimals are a tenth of a pixel, and a microsecond in milliseconds.
        let text = format!("{x:.3}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        if text.is_empty() || text == "-" || text == "-0" {
            "0".to_string()
        } else {
            text.to_string()
        }
    } else {
        "null".to_string()
    }
}

/// A JSON array of the given already-written values.
pub fn array<I: IntoIterator<Item = String>>(items: I) -> String {
    let items: Vec<String> = items.into_iter().collect();
    format!("[{}]", items.join(","))
}

/// A JSON object of `(key, already-written value)` pairs.
pub fn object<'a, I: IntoIterator<Item = (&'a str, String)>>(fields: I) -> String {
    let fields: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{}:{v}", string(k)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_cannot_close_a_script_element() {
        assert_eq!(
            string("a\"b\\</script><!--\n\u{1}"),
            "\"a\\\"b\\\\\\u003c/script\\u003e\\u003c!--\\n\\u0001\""
        );
    }

    #[test]
    fn numbers_are_short_and_never_nan() {
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(2.0), "2");
        assert_eq!(number(-0.0001), "0");
        assert_eq!(number(f64::NAN), "null");
        assert_eq!(object([("a", array([number(1.0)]))]), "{\"a\":[1]}");
    }
}
