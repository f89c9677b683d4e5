//! `kiln view` pages opened in a real browser: headless Chromium loads the written file from
//! disk and, with `#selftest&...` in the URL, the page's script clicks a node, folds a scope
//! and searches as a user would, then writes what it saw (the details panel's text, which
//! nodes were drawn before and after folding, console errors, Content-Security-Policy
//! violations and every resource the page fetched) into `<pre id="kiln-selftest">`, which
//! `--dump-dom` prints. A screenshot is decoded and checked for drawn content.
//!
//! Without Chromium these tests print a visible skip and pass; with `KILN_REQUIRE_CHROMIUM=1`
//! (set by `.ci/run`, which installs Debian's `chromium`) a missing browser is a failure.
//! `KILN_CHROMIUM` names the browser binary when it is not `chromium` on the PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one browser run may take before the test fails (a hung browser must not hang
/// the suite).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-view-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn required() -> bool {
    std::env::var("KILN_REQUIRE_CHROMIUM").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The browser to drive, or `None` (after printing why) when there is none and none is
/// required.
fn chromium(test: &str) -> Option<PathBuf> {
    let candidates: Vec<String> = match std::env::var("KILN_CHROMIUM") {
        Ok(path) if !path.is_empty() => vec![path],
        _ => ["chromium", "chromium-browser", "google-chrome"]
            .map(String::from)
            .to_vec(),
    };
    for candidate in &candidates {
        let works = Command::new(candidate)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            return Some(PathBuf::from(candidate));
        }
    }
    if required() {
        panic!("KILN_REQUIRE_CHROMIUM is set but none of {candidates:?} runs");
    }
    eprintln!(
        "SKIPPED {test}: no Chromium ({candidates:?}); install Debian's `chromium` or set \
         KILN_CHROMIUM to run the browser tests"
    );
    None
}

/// Runs headless Chromium on `page` (with `#hash`) and returns its stdout.
fn browse(browser: &Path, page: &Path, hash: &str, extra: &[&str]) -> String {
    let profile = page.with_extension("chromium-profile");
    let url = format!("file://{}{hash}", page.display());
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the browser starts");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the browser") {
            assert!(
                status.success(),
                "{} {url} exited with {status}",
                browser.display()
            );
            break;
        }
        if start.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {url} ran longer than {BROWSER_TIMEOUT:?}",
                browser.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&profile);
    reader
        .join()
        .expect("reader thread")
        .expect("browser output is UTF-8")
}

/// The self-test's JSON report from a dumped DOM, with the HTML escapes of text undone.
fn self_test_report(dom: &str) -> String {
    let open = "<pre id=\"kiln-selftest\">";
    // The last one: the script's own source mentions the element too.
    let start = dom.rfind(open).unwrap_or_else(|| {
        panic!(
            "no self-test report in the page: {}",
            &dom[..dom.len().min(2000)]
        )
    }) + open.len();
    let end = start + dom[start..].find("</pre>").expect("the report's end");
    dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// Every `data-node="..."` value drawn in a dumped DOM (the drawing comes before the
/// scripts, whose source mentions the attribute too).
fn drawn_nodes(dom: &str) -> Vec<String> {
    let drawing = &dom[..dom.find("<script").unwrap_or(dom.len())];
    drawing
        .split("data-node=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|name| name.replace("&amp;", "&"))
        .collect()
}

const GRAPH: &str = "kiln 1
input %x : f32[?,8,8,3]
const %stem/w : f32[3,3,3,4] = normal(0, 0.1, 1)
const %stem/b : f32[4] = zeros
%stem/conv = conv2d(%x, %stem/w, padding=\"SAME\")
%stem/bias = bias_add(%stem/conv, %stem/b)
%stem/relu = relu(%stem/bias)
const %block/w : f32[3,3,4,4] = normal(0, 0.1, 2)
%block/conv = conv2d(%stem/relu, %block/w, padding=\"SAME\")
%block/relu = relu(%block/conv)
%sum = add(%block/relu, %stem/relu)
%y = reduce_mean(%sum, axes=[1,2])
output %y
";

const NAMES: [&str; 11] = [
    "x",
    "stem/w",
    "stem/b",
    "stem/conv",
    "stem/bias",
    "stem/relu",
    "block/w",
    "block/conv",
    "block/relu",
    "sum",
    "y",
];

fn write_page(dir: &Path, extra: &[&str]) -> PathBuf {
    let graph = dir.join("g.kiln");
    std::fs::write(&graph, GRAPH).unwrap();
    let page = dir.join("g.html");
    let mut args = vec![
        "view",
        graph.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = kiln(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    page
}

/// Every node is drawn; clicking one shows its attributes, type, FLOPs, operands and
/// consumers; folding a scope hides exactly its nodes and shows its box; search jumps to the
/// first match; and nothing is logged as an error or fetched from anywhere.
#[test]
fn the_page_draws_every_node_and_answers_clicks_folds_and_search() {
    let Some(browser) = chromium("view::the_page_draws_every_node...") else {
        return;
    };
    let dir = scratch("interact");
    let page = write_page(&dir, &[]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("src=") && !html.contains("href=") && !html.contains("@import"),
        "the page references nothing outside itself"
    );
    let dom = browse(
        &browser,
        &page,
        "#selftest&click=block/conv&fold=block&search=relu",
        &["--dump-dom"],
    );
    let report = self_test_report(&dom);

    let drawn = drawn_nodes(&dom);
    for name in NAMES {
        assert!(
            drawn.iter().any(|d| d == name),
            "%{name} is not drawn: {drawn:?}"
        );
    }
    assert!(report.contains("\"errors\":[]"), "{report}");
    assert!(report.contains("\"violations\":[]"), "{report}");
    assert!(report.contains("\"resources\":[]"), "{report}");

    let click = &report[report.find("\"click\":").expect("a click report")..];
    assert!(
        click.starts_with("\"click\":{\"found\":true,\"selected\":true"),
        "{report}"
    );
    for shown in [
        "%block/conv",
        "conv2d → f32[?,8,8,4]",
        "padding=\\\"SAME\\\"",
        "FLOPs: ",
        "%stem/relu f32[?,8,8,4]",
        "%block/w f32[3,3,4,4]",
        "%block/relu f32[?,8,8,4]",
    ] {
        assert!(click.contains(shown), "details lack {shown:?}: {report}");
    }

    assert!(
        report.contains(
            "\"fold\":{\"found\":true,\"before\":[\"block/w\",\"block/conv\",\"block/relu\"],\
             \"after\":[],\"box\":true,\"unfolded\":[\"block/w\",\"block/conv\",\"block/relu\"]}"
        ),
        "{report}"
    );
    assert!(
        report.contains("\"search\":{\"count\":2,\"selected\":\"stem/relu\""),
        "{report}"
    );
}

/// `--optimize` draws the fused graph: a fused node shows its epilogue with its operands
/// spelled out, and links to the rewrite that made it and to the nodes it replaced.
#[test]
fn the_optimised_view_shows_epilogues_and_rewrites() {
    let Some(browser) = chromium("view::the_optimised_view...") else {
        return;
    };
    let dir = scratch("optimized");
    let page = write_page(&dir, &["--optimize"]);
    let html = std::fs::read_to_string(&page).unwrap();
    // What the fused nodes came from is described as it was before optimisation.
    assert!(html.contains("\"stem/conv\":{\"op\":\"conv2d\""), "{html}");
    let dom = browse(
        &browser,
        &page,
        "#selftest&click=stem/relu",
        &["--dump-dom"],
    );
    let report = self_test_report(&dom);
    assert!(
        report.contains("\"errors\":[],\"violations\":[],\"resources\":[]"),
        "{report}"
    );
    for shown in [
        "fused_conv2d → f32[?,8,8,4]",
        "expr=relu(add(main, $2))",
        "relu(add(conv2d(%x, %stem/w), %stem/b))",
        "[fuse-epilogues] fused %stem/conv + %stem/bias + %stem/relu -> %stem/relu = fused_conv2d",
    ] {
        assert!(report.contains(shown), "details lack {shown:?}: {report}");
    }
    let drawn = drawn_nodes(&dom);
    assert!(
        !drawn.iter().any(|d| d == "stem/conv"),
        "fused away: {drawn:?}"
    );
}

/// The detectors the test above relies on do detect: a page that tries to load an image
/// from the network and logs an error has both reported.
#[test]
fn the_self_test_reports_network_requests_and_console_errors() {
    let Some(browser) = chromium("view::the_self_test_reports_network_requests...") else {
        return;
    };
    let dir = scratch("probe");
    let page = write_page(&dir, &[]);
    let dom = browse(&browser, &page, "#selftest&probe=1", &["--dump-dom"]);
    let report = self_test_report(&dom);
    assert!(
        report.contains("\"errors\":[\"probe: console errors are captured\"]"),
        "{report}"
    );
    assert!(
        report.contains("\"violations\":[\"img-src https://example.invalid/probe.png\"]"),
        "{report}"
    );
    assert!(!report.contains("\"resources\":[]"), "{report}");
}

/// Imported ResNet-50 and DenseNet-121 (.onnx files straight to `kiln view`) draw every node
/// they have: their computed values are named without a scope (`r14`), so they are top-level
/// by name and the scopes they were grouped into open; the optimised and profiled views load
/// without errors and show the rewrites and the kernel times.
#[test]
fn real_models_optimised_and_profiled_views_load_cleanly() {
    let Some(browser) = chromium("view::real_models...") else {
        return;
    };
    let dir = scratch("real");
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/tests/real");
    for name in ["resnet50", "densenet121"] {
        let model = real.join(format!("{name}.onnx"));
        let page = dir.join(format!("{name}.html"));
        let out = kiln(&[
            "view",
            model.to_str().unwrap(),
            "-o",
            page.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dom = browse(&browser, &page, "#selftest&search=conv", &["--dump-dom"]);
        let report = self_test_report(&dom);
        assert!(
            report.contains("\"errors\":[],\"violations\":[],\"resources\":[]"),
            "{name}: {report}"
        );
        assert!(
            !report.contains("\"search\":{\"count\":0"),
            "{name}: {report}"
        );
        let graph = kiln::Graph::from_onnx(&model).unwrap();
        let drawn = drawn_nodes(&dom);
        assert_eq!(drawn.len(), graph.len(), "{name}: every node drawn once");
        for id in graph.node_ids() {
            let node = &graph.node(id).name;
            assert!(drawn.contains(node), "{name}: %{node} is not drawn");
        }
    }

    let model = real.join("resnet50.onnx");
    let optimized = dir.join("optimized.html");
    let out = kiln(&[
        "view",
        model.to_str().unwrap(),
        "--optimize",
        "--profile",
        "--runs",
        "2",
        "-o",
        optimized.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&optimized).unwrap();
    assert!(html.contains("[fold-batch-norm]") || html.contains("\"pass\":\"fold-batch-norm\""));
    assert!(
        html.contains("\"kernel\":\"conv2d+add+relu\""),
        "a fused kernel's ops"
    );
    let dom = browse(
        &browser,
        &optimized,
        "#selftest&search=fused_conv2d",
        &["--dump-dom"],
    );
    let report = self_test_report(&dom);
    assert!(
        report.contains("\"errors\":[],\"violations\":[],\"resources\":[]"),
        "{report}"
    );
    assert!(!report.contains("\"search\":{\"count\":0"), "{report}");
}

/// A screenshot of a model's view has drawn content: many colours, most pixels not the
/// background.
#[test]
fn a_screenshot_shows_the_drawing() {
    let Some(browser) = chromium("view::a_screenshot_shows_the_drawing") else {
        return;
    };
    let dir = scratch("shot");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/tests/real/inception_v1.onnx");
    let page = dir.join("inception.html");
    let out = kiln(&[
        "view",
        model.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shot = dir.join("shot.png");
    browse(
        &browser,
        &page,
        "",
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,800",
        ],
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1200, 800));
    let channels = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> =
        pixels[..info.buffer_size()].chunks(channels).collect();
    // Background, boxes of four kinds, text, edges and their anti-aliasing.
    assert!(colours.len() > 50, "{} colours", colours.len());
    // The canvas background (#f7f8fa) may not be everything left of the side panel.
    let background = [0xf7u8, 0xf8, 0xfa];
    let canvas_width = 800;
    let mut drawn = 0;
    let mut total = 0;
    for (i, px) in pixels[..info.buffer_size()].chunks(channels).enumerate() {
        let x = i % info.width as usize;
        let y = i / info.width as usize;
        if x < canvas_width && y > 40 {
            total += 1;
            if px[..3] != background {
                drawn += 1;
            }
        }
    }
    assert!(drawn * 50 > total, "{drawn} of {total} canvas pixels drawn");
}

/// `--batch` and `--shape` draw the graph at those input shapes (shared with `dump`; the
/// view once declared its own `--batch` too, which made clap refuse every `kiln view`).
#[test]
fn view_draws_the_graph_at_the_given_shapes() {
    let dir = scratch("shapes");
    let graph = dir.join("g.kiln");
    std::fs::write(&graph, GRAPH).unwrap();
    let page = dir.join("g.html");
    let g = graph.to_str().unwrap();
    let p = page.to_str().unwrap();
    let plain = kiln(&["view", g, "-o", p]);
    assert!(plain.status.success(), "{plain:?}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("f32[?,8,8,4]") && !html.contains("f32[3,8,8,4]"));
    let batched = kiln(&["view", g, "-o", p, "--batch", "3"]);
    assert!(batched.status.success(), "{batched:?}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("f32[3,8,8,4]") && !html.contains("f32[?,8,8,4]"));
    let shaped = kiln(&["view", g, "-o", p, "--shape", "x=5,8,8,3"]);
    assert!(shaped.status.success(), "{shaped:?}");
    assert!(
        std::fs::read_to_string(&page)
            .unwrap()
            .contains("f32[5,8,8,4]")
    );
    let wrong = kiln(&["view", g, "-o", p, "--shape", "x=5,9,8,3"]);
    assert!(!wrong.status.success());
    // `-o -` is standard output, as for the other verbs: no file named `-`.
    let piped = kiln(&["view", g, "-o", "-"]);
    assert!(piped.status.success(), "{piped:?}");
    assert!(String::from_utf8_lossy(&piped.stdout).starts_with("<!DOCTYPE html>"));
    assert!(!std::path::Path::new("-").exists() && !dir.join("-").exists());
}

/// A view refuses to overwrite its own graph, and bad input is an error naming the file.
#[test]
fn view_errors_name_the_file() {
    let dir = scratch("errors");
    let graph = dir.join("g.kiln");
    std::fs::write(&graph, GRAPH).unwrap();
    let out = kiln(&[
        "view",
        graph.to_str().unwrap(),
        "-o",
        graph.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&graph).unwrap(), GRAPH);

    let bad = dir.join("bad.kiln");
    std::fs::write(&bad, "kiln 1\n%y = relu(%nope)\n").unwrap();
    let out = kiln(&["view", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.kiln:"), "{stderr}");
    assert!(!dir.join("bad.html").exists());

    let onnx = dir.join("junk.onnx");
    std::fs::write(&onnx, b"\x08\x07garbage").unwrap();
    let out = kiln(&["view", onnx.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.onnx"));
}

/// `kiln bench --trace` and `kiln run --trace` write Chrome trace events: one complete event
/// per kernel and run, on a named thread track.
#[test]
fn bench_and_run_write_chrome_traces() {
    let dir = scratch("trace");
    let graph = dir.join("g.kiln");
    std::fs::write(&graph, GRAPH).unwrap();
    let trace = dir.join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .args([
            "bench",
            graph.to_str().unwrap(),
            "--backend",
            "cpu",
            "--runs",
            "3",
        ])
        .args(["--warmup", "0", "--threads", "1", "--batch", "2", "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.starts_with("{\"traceEvents\":["), "{text}");
    let complete = text.matches("\"ph\":\"X\"").count();
    let kernels = text.matches("\"name\":\"y\",\"cat\":\"kernel\"").count();
    assert_eq!(kernels, 3, "the last kernel once per run: {text}");
    assert!(complete >= 3 * 3, "{complete} events: {text}");
    assert!(text.contains("\"name\":\"thread_name\""), "{text}");
    assert!(text.contains("\"ops\":\"conv2d+add+relu\""), "{text}");

    let run_trace = dir.join("run.json");
    let x = dir.join("x.npy");
    kiln::npy::write(&x, &kiln::Tensor::ones(&[1, 8, 8, 3])).unwrap();
    let out = kiln(&[
        "run",
        graph.to_str().unwrap(),
        "--feed",
        &format!("x={}", x.display()),
        "--trace",
        run_trace.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&run_trace).unwrap();
    assert_eq!(
        text.matches("\"name\":\"y\",\"cat\":\"kernel\"").count(),
        1,
        "{text}"
    );

    // The reference backend times no kernels: asking it for a trace is an error.
    let out = kiln(&[
        "run",
        graph.to_str().unwrap(),
        "--feed",
        &format!("x={}", x.display()),
        "--backend",
        "reference",
        "--trace",
        dir.join("none.json").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not time kernels"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
