//! Timelines of runs in the Chrome trace event format (the JSON object form), which Perfetto
//! and chrome://tracing open: one complete (`"ph":"X"`) event per kernel run, on the track of
//! the thread that ran it, named after the kernel, with its ops, output type and FLOPs as
//! arguments; times are microseconds from the first kernel's start.

use crate::view::json;
use kiln_ir::backend::KernelTime;

/// The trace of every span recorded in `times` (from `Session::run_profiled`, possibly
/// merged over several runs), in start order.
pub fn chrome_trace(times: &[KernelTime]) -> String {
    let mut spans: Vec<(&KernelTime, &kiln_ir::backend::KernelSpan)> = times
        .iter()
        .flat_map(|t| t.spans.iter().map(move |s| (t, s)))
        .collect();
    spans.sort_by_key(|(_, s)| s.start);
    let Some(first) = spans.first().map(|(_, s)| s.start) else {
        return r#"{"traceEvents":[],"displayTimeUnit":"ms"}"#.to_string();
    };
    let mut threads: Vec<u64> = spans.iter().map(|(_, s)| s.thread).collect();
    threads.sort_unstable();
    threads.dedup();
    let mut events: Vec<String> = vec![json::object([
        ("name", json::string("process_name")),
        ("ph", json::string("M")),
        ("pid", "1".to_string()),
        ("args", json::object([("name", json::string("kiln"))])),
    ])];
    for &t in &threads {
        events.push(json::object([
            ("name", json::string("thread_name")),
            ("ph", json::string("M")),
            ("pid", "1".to_string()),
            ("tid", t.to_string()),
            (
                "args",
                json::object([("name", json::string(&format!("kiln thread {t}")))]),
            ),
        ]));
    }
    for (t, s) in spans {
        let start_us = s.start.duration_since(first).as_nanos() as f64 / 1e3;
        events.push(json::object([
            ("name", json::string(&t.kernel)),
            ("cat", json::string("kernel")),
            ("ph", json::string("X")),
            ("pid", "1".to_string()),
            ("tid", s.thread.to_string()),
            ("ts", format!("{start_us:.3}")),
            ("dur", format!("{:.3}", s.nanos as f64 / 1e3)),
            (
                "args",
                json::object([
                    ("ops", json::string(&t.ops_text())),
                    ("output", json::string(&t.output)),
                    (
                        "flops",
                        t.flops.map_or("null".to_string(), |f| f.to_string()),
                    ),
                ]),
            ),
        ]));
    }
    format!(
        "{{\"traceEvents\":[\n{}\n],\"displayTimeUnit\":\"ms\"}}\n",
        events.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::backend::KernelSpan;
    use std::time::{Duration, Instant};

    #[test]
    fn spans_become_complete_events_on_their_threads() {
        let start = Instant::now();
        let kernel = |name: &str, spans: Vec<KernelSpan>| KernelTime {
            kernel: name.to_string(),
            nodes: vec![name.to_string()],
            ops: vec!["conv2d".into(), "relu".into()],
            flops: Some(10),
            output: "f32[1]".into(),
            nanos: spans.iter().map(|s| s.nanos).sum(),
            spans,
        };
        let times = [
            kernel(
                "b",
                vec![KernelSpan {
                    start: start + Duration::from_micros(5),
                    nanos: 2000,
                    thread: 2,
                }],
            ),
            kernel(
                "a",
                vec![KernelSpan {
                    start,
                    nanos: 1500,
                    thread: 1,
                }],
            ),
        ];
        let trace = chrome_trace(&times);
        assert!(
            trace.contains(
                r#""name":"a","cat":"kernel","ph":"X","pid":1,"tid":1,"ts":0.000,"dur":1.500"#
            ),
            "{trace}"
        );
        assert!(
            trace.contains(
                r#""name":"b","cat":"kernel","ph":"X","pid":1,"tid":2,"ts":5.000,"dur":2.000"#
            ),
            "{trace}"
        );
        assert!(trace.contains(r#""ops":"conv2d+relu""#));
        assert_eq!(trace.matches("thread_name").count(), 2);
        assert!(
            trace.find("\"a\"").unwrap() < trace.find("\"b\"").unwrap(),
            "start order"
        );
        assert_eq!(
            chrome_trace(&[]),
            r#"{"traceEvents":[],"displayTimeUnit":"ms"}"#
        );
    }
}
