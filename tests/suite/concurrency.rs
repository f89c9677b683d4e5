//! One session shared by many threads: every run's result equals a single-threaded run's bit
//! for bit, runs that update variables are seen whole or not at all, the session's own thread
//! count is what it was asked for, and a node added after the session was created is named
//! as such.

use kiln::{BackendKind, ConvAttrs, Graph, NodeId, Session, SessionOptions, Shape, Tensor};

/// A small CNN with a `?` batch: conv 3x3 (4 -> 16 channels, big enough for the CPU backend to
/// split it across threads at batch 2 and up), relu, dense 2304 -> 10.
fn small_cnn() -> (Graph, NodeId, NodeId) {
    let mut g = Graph::new();
    let x = g
        .input("x", Shape::of(&[None, Some(12), Some(12), Some(4)]))
        .unwrap();
    let k = g
        .var("k", Tensor::normal(&[3, 3, 4, 16], 0.0, 0.5, 1))
        .unwrap();
    let conv = g.conv2d(x, k, ConvAttrs::same()).unwrap();
    let act = g.relu(conv).unwrap();
    let flat = g.reshape(act, &[-1, 12 * 12 * 16]).unwrap();
    let w = g
        .var("w", Tensor::normal(&[12 * 12 * 16, 10], 0.0, 0.05, 2))
        .unwrap();
    let y = g.named("y").matmul(flat, w).unwrap();
    (g, x, y)
}

/// The bits of a run's outputs, for exact comparison (NaN included).
fn bits(outputs: &[Tensor]) -> Vec<Vec<u32>> {
    outputs
        .iter()
        .map(|t| t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect())
        .collect()
}

#[test]
fn sessions_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Session>();
}

/// A session on `backend` with `threads` worker threads (`None`: one per core).
fn session_on(g: &Graph, backend: &BackendKind, threads: Option<usize>) -> Session {
    let options = SessionOptions {
        backend: backend.clone(),
        threads,
        ..SessionOptions::default()
    };
    Session::with_session_options(g, options).unwrap()
}

/// Eight threads run one session 24 times each with twelve feeds of three batch sizes (so they
/// also compile concurrently); every result must be a single-threaded session's, bit for bit,
/// on every backend built in.
#[test]
fn eight_threads_get_the_single_threaded_results_bit_for_bit() {
    let (g, x, y) = small_cnn();
    let feeds: Vec<Tensor> = (0..12)
        .map(|i| Tensor::uniform(&[1 + i % 3, 12, 12, 4], -1.0, 1.0, 100 + i as u64))
        .collect();
    for backend in BackendKind::available() {
        let single = session_on(&g, &backend, Some(1));
        let want: Vec<Vec<Vec<u32>>> = feeds
            .iter()
            .map(|f| bits(&single.run(&[(x, f)], &[y]).unwrap()))
            .collect();
        let shared = session_on(&g, &backend, None);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (shared, feeds, want, backend) = (&shared, &feeds, &want, &backend);
                s.spawn(move || {
                    for i in 0..24 {
                        let k = (t * 5 + i) % feeds.len();
                        let got = shared.run(&[(x, &feeds[k])], &[y]).unwrap();
                        assert!(
                            bits(&got) == want[k],
                            "{backend:?}: thread {t}, run {i}, feed {k} differs"
                        );
                    }
                });
            }
        });
        assert_eq!(
            shared.compilations(),
            3,
            "{backend:?}: one compile per batch size"
        );
    }
}

/// Two writers each add 1 to both `a` and `b` (one run, two assigns) 40 times while six readers
/// fetch `a`, `b` and `a - b`: every read must see both updates of a step or neither (a == b,
/// every element alike, never decreasing), and no update may be lost (80 at the end).
#[test]
fn concurrent_updates_are_seen_whole_or_not_at_all() {
    const N: usize = 4096;
    let mut g = Graph::new();
    let a = g.var("a", Tensor::zeros(&[N])).unwrap();
    let b = g.var("b", Tensor::zeros(&[N])).unwrap();
    let one = g.constant("one", Tensor::ones(&[N])).unwrap();
    let inc_a = g.assign_add(a, one).unwrap();
    let inc_b = g.assign_add(b, one).unwrap();
    let step = g.group(&[inc_a, inc_b]).unwrap();
    let diff = g.sub(a, b).unwrap();
    for backend in BackendKind::available() {
        updates_are_atomic_on(&backend, &g, [a, b, diff, step]);
    }
}

fn updates_are_atomic_on(backend: &BackendKind, g: &Graph, [a, b, diff, step]: [NodeId; 4]) {
    let sess = session_on(g, backend, None);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..40 {
                    sess.run_with_targets(&[], &[], &[step]).unwrap();
                }
            });
        }
        for r in 0..6 {
            let sess = &sess;
            s.spawn(move || {
                let mut last = 0.0f32;
                for i in 0..40 {
                    let out = sess.run(&[], &[a, b, diff]).unwrap();
                    let (va, vb, vd) = (
                        out[0].as_f32().unwrap(),
                        out[1].as_f32().unwrap(),
                        out[2].as_f32().unwrap(),
                    );
                    let seen = va[0];
                    assert!(
                        va.iter().chain(vb).all(|&v| v == seen) && vd.iter().all(|&v| v == 0.0),
                        "{backend:?} reader {r}, run {i}: a and b are not one snapshot \
                         (a[0] = {seen})"
                    );
                    assert!(
                        seen >= last,
                        "{backend:?} reader {r}: a went back from {last} to {seen}"
                    );
                    last = seen;
                }
            });
        }
    });
    let a_now = sess.variable(a).unwrap();
    assert!(
        a_now.as_f32().unwrap().iter().all(|&v| v == 80.0),
        "{backend:?}: updates were lost"
    );
    assert_eq!(sess.variable(b).unwrap(), a_now, "{backend:?}");
}

/// Runs from inside rayon's global pool, a quarter of them updating variables: a worker that
/// waited for its run while holding the variables locked could pick up another run of the
/// pool and block on that lock forever; all 64 must finish with every update counted.
#[test]
fn runs_from_inside_another_rayon_pool_do_not_deadlock() {
    use rayon::prelude::*;
    let mut g = Graph::new();
    let a = g.var("a", Tensor::zeros(&[1024])).unwrap();
    let one = g.constant("one", Tensor::ones(&[1024])).unwrap();
    let inc = g.assign_add(a, one).unwrap();
    let doubled = g.add(a, a).unwrap();
    let sess = std::sync::Arc::new(Session::new(&g).unwrap());
    // On a thread of its own, so that a deadlock fails the test instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    let runner = sess.clone();
    std::thread::spawn(move || {
        (0..64).into_par_iter().for_each(|i| {
            if i % 4 == 0 {
                runner.run_with_targets(&[], &[], &[inc]).unwrap();
            } else {
                runner.run(&[], &[doubled]).unwrap();
            }
        });
        let _ = done.send(());
    });
    match finished.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("64 runs from rayon's pool did not finish in 2 minutes: deadlocked")
        }
        Err(e) => panic!("a run failed (its panic is above): {e}"),
    }
    let a_now = sess.variable(a).unwrap();
    assert!(a_now.as_f32().unwrap().iter().all(|&v| v == 16.0));
}

/// A session asked for one thread has one (and gives the same bits as one with three); zero
/// threads is refused.
#[test]
fn session_threads_are_respected() {
    let (g, x, y) = small_cnn();
    let feed = Tensor::uniform(&[3, 12, 12, 4], -1.0, 1.0, 7);
    let with_threads = |n| {
        let options = SessionOptions {
            threads: Some(n),
            ..SessionOptions::default()
        };
        Session::with_session_options(&g, options)
    };
    let one = with_threads(1).unwrap();
    let three = with_threads(3).unwrap();
    assert_eq!((one.threads(), three.threads()), (1, 3));
    assert!(
        bits(&one.run(&[(x, &feed)], &[y]).unwrap())
            == bits(&three.run(&[(x, &feed)], &[y]).unwrap())
    );
    let default = Session::new(&g).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        assert_eq!(default.threads(), cores, "default: one thread per core");
    }
    let zero = with_threads(0).err().expect("0 threads is refused");
    assert_eq!(
        zero.to_string(),
        "a session needs at least 1 thread, got threads = 0"
    );
}

/// The session copies the graph when it is created: a node added later used to fail with
/// "fetch or target #3 is not in this graph"; the error now says why.
#[test]
fn a_node_added_after_the_session_was_created_is_named_as_such() {
    let mut g = Graph::new();
    let x = g.input("x", Shape::of(&[Some(2)])).unwrap();
    let y = g.relu(x).unwrap();
    let sess = Session::new(&g).unwrap();
    let later = g.neg(y).unwrap();
    let feed = Tensor::ones(&[2]);
    let err = sess.run(&[(x, &feed)], &[later]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "fetch or target #2 was added to the graph after the session was created: a session \
         copies the graph when it is created (its nodes end at #1), so create a new session to \
         run nodes added since"
    );
    let later_input = g.input("z", Shape::of(&[Some(2)])).unwrap();
    let err = sess.run(&[(later_input, &feed)], &[y]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("feed #3 was added to the graph after the session was created"),
        "{err}"
    );
    // A new session sees it.
    let out = Session::new(&g)
        .unwrap()
        .run(&[(x, &feed)], &[later])
        .unwrap();
    assert_eq!(out[0].as_f32(), Some(&[-1.0, -1.0][..]));
}
