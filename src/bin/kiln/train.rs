//! `kiln train GRAPH --loss NAME --feed NAME=FILE.npy ... --optimizer sgd|momentum|adam`:
//! trains every variable the loss depends on with one optimizer update per batch.
//!
//! Every feed is training data split along axis 0; batches of `--batch` rows (default: all) are
//! taken in file order, or shuffled per epoch with `--shuffle SEED`; a partial last batch is
//! dropped, and with `--steps` the sequence of batches wraps around. On a terminal a progress
//! line shows the loss and samples/s; otherwise one line per epoch. `--save` writes every
//! variable, optimizer slots included, to a safetensors checkpoint keyed by name. Each step
//! increments `global_step`, so a run resumed with `--restore` continues the sequence of batches
//! where the checkpointed run stopped: 10 steps, then 10 more, train exactly like 20.

use crate::grad::lookup;
use crate::safe_write::refuse_symlink;
use kiln::optimizer::{
    AdamOptimizer, GradientDescentOptimizer, MomentumOptimizer, Optimizer, global_step,
};
use kiln::{BackendKind, Dataset, NodeId, Session, SessionOptions, Tensor};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `kiln train` was asked to do.
pub struct TrainArgs<'a> {
    pub graph: &'a Path,
    pub loss: &'a str,
    pub feeds: &'a [String],
    pub optimizer: &'a str,
    pub lr: Option<f32>,
    pub momentum: Option<f32>,
    pub nesterov: bool,
    pub beta1: Option<f32>,
    pub beta2: Option<f32>,
    pub epsilon: Option<f32>,
    pub batch: Option<usize>,
    pub epochs: Option<usize>,
    pub steps: Option<usize>,
    pub shuffle: Option<u64>,
    pub restore: Option<&'a Path>,
    pub save: Option<&'a PathBuf>,
    pub backend: &'a str,
    /// `--threads`: the session's worker threads (default: one per core).
    pub threads: Option<usize>,
}

/// The optimizer the flags name, with TensorFlow 1's defaults for what they leave out.
fn optimizer(a: &TrainArgs<'_>) -> Result<Box<dyn Optimizer>, String> {
    let refuse = |flag: &str, allowed: &str| {
        Err(format!(
            "{flag} applies to --optimizer {allowed}, not {}",
            a.optimizer
        ))
    };
    let adam_only = a.beta1.is_some() || a.beta2.is_some() || a.epsilon.is_some();
    match a.optimizer {
        "sgd" => {
            if a.momentum.is_some() || a.nesterov {
                return refuse("--momentum/--nesterov", "momentum");
            }
            if adam_only {
                return refuse("--beta1/--beta2/--epsilon", "adam");
            }
            Ok(Box::new(GradientDescentOptimizer::new(
                a.lr.unwrap_or(0.01),
            )))
        }
        "momentum" => {
            if adam_only {
                return refuse("--beta1/--beta2/--epsilon", "adam");
            }
            let m = MomentumOptimizer::new(a.lr.unwrap_or(0.01), a.momentum.unwrap_or(0.9))
                .nesterov(a.nesterov);
            Ok(Box::new(m))
        }
        "adam" => {
            if a.momentum.is_some() || a.nesterov {
                return refuse("--momentum/--nesterov", "momentum");
            }
            let mut adam = AdamOptimizer::new(a.lr.unwrap_or(0.001));
            if let Some(b) = a.beta1 {
                adam = adam.beta1(b);
            }
            if let Some(b) = a.beta2 {
                adam = adam.beta2(b);
            }
            if let Some(e) = a.epsilon {
                adam = adam.epsilon(e);
            }
            Ok(Box::new(adam))
        }
        other => Err(format!(
            "--optimizer {other}: expected sgd, momentum or adam"
        )),
    }
}

/// Runs `kiln train`.
pub fn train(a: TrainArgs<'_>) -> Result<(), String> {
    let backend = BackendKind::from_name(a.backend).map_err(|e| e.to_string())?;
    let mut graph = crate::load(a.graph)?;
    let loss = lookup(&graph, a.loss, "--loss")?;
    let opt = optimizer(&a)?;
    if a.feeds.is_empty() {
        return Err("no --feed given: training needs data (NAME=FILE.npy per placeholder)".into());
    }
    let data = Dataset::new(crate::feeds::load(&graph, a.feeds)?).map_err(|e| e.to_string())?;
    let batch = a.batch.unwrap_or(data.rows());
    if batch > data.rows() {
        return Err(format!(
            "--batch {batch}: the data has only {} rows",
            data.rows()
        ));
    }
    let per_epoch = data.rows() / batch;
    let total_steps = match (a.epochs, a.steps) {
        (Some(_), Some(_)) => return Err("give --epochs or --steps, not both".into()),
        (_, Some(s)) => s,
        (e, None) => e.unwrap_or(1) * per_epoch,
    };
    if let Some(save) = a.save {
        refuse_symlink(save)?;
    }
    let vars = graph.trainable_variables(&[loss]);
    if vars.is_empty() {
        return Err(format!(
            "%{} depends on no variable: there is nothing to train",
            graph.node(loss).name
        ));
    }
    let step_var = global_step(&mut graph).map_err(|e| e.to_string())?;
    let train_op = opt
        .minimize_with(&mut graph, loss, Some(&vars), Some(step_var))
        .map_err(|e| e.to_string())?;
    let options = SessionOptions {
        backend,
        threads: a.threads,
        ..SessionOptions::default()
    };
    let session = Session::with_session_options(&graph, options).map_err(|e| e.to_string())?;
    if let Some(ckpt) = a.restore {
        session
            .restore_variables(ckpt)
            .map_err(|e| format!("--restore {}: {e}", ckpt.display()))?;
    }
    // The steps already taken (0 unless restored): where in the data this run starts.
    let start = session
        .variable(step_var)
        .map_err(|e| e.to_string())?
        .to_f64_vec()
        .first()
        .map_or(0, |&s| s.max(0.0) as usize);
    let names: Vec<String> = vars
        .iter()
        .map(|&v| format!("%{}", graph.node(v).name))
        .collect();
    eprintln!(
        "training {} with {} on {} samples, batch {batch}, {total_steps} steps",
        names.join(", "),
        a.optimizer,
        data.rows()
    );
    let ids: Vec<NodeId> = data
        .names()
        .map(|n| graph.find(n).ok_or(format!("no placeholder %{n}")))
        .collect::<Result<_, _>>()?;
    let progress = Progress::new(total_steps);
    let (mut step, mut epoch) = (0usize, (start / per_epoch) as u64);
    let mut skip = start % per_epoch;
    while step < total_steps {
        let order = data.epoch_order(a.shuffle, epoch);
        let (mut sum, mut count, started) = (0.0f64, 0usize, Instant::now());
        for columns in data.batches(&order, batch).skip(std::mem::take(&mut skip)) {
            if step == total_steps {
                break;
            }
            let columns = columns.map_err(|e| e.to_string())?;
            let feeds: Vec<(NodeId, &Tensor)> = ids
                .iter()
                .zip(&columns)
                .map(|(&id, (_, t))| (id, t))
                .collect();
            let out = session
                .run_with_targets(&feeds, &[loss], &[train_op])
                .map_err(|e| format!("step {}: {e}", step + 1))?;
            let value = mean(&out[0]);
            sum += value;
            count += 1;
            step += 1;
            progress.step(step, value, batch * count, started);
        }
        epoch += 1;
        progress.epoch(
            epoch,
            step,
            sum / count.max(1) as f64,
            batch * count,
            started,
        );
    }
    progress.done();
    if let Some(path) = a.save {
        session
            .save_variables(path)
            .map_err(|e| format!("--save {}: {e}", path.display()))?;
        eprintln!(
            "saved {} variables to {}",
            session.graph().variables().len(),
            path.display()
        );
    }
    Ok(())
}

/// The mean of a loss value (a scalar, or per-sample losses).
fn mean(t: &Tensor) -> f64 {
    let v = t.to_f64_vec();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Progress on stderr: a line redrawn per step on a terminal, a line per epoch otherwise.
struct Progress {
    total: usize,
    terminal: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn step(&self, step: usize, loss: f64, samples: usize, since: Instant) {
        if !self.terminal {
            return;
        }
        const WIDTH: usize = 30;
        let done = WIDTH * step / self.total.max(1);
        let rate = samples as f64 / since.elapsed().as_secs_f64().max(1e-9);
        let bar: String = (0..WIDTH)
            .map(|i| if i < done { '#' } else { '.' })
            .collect();
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r[{bar}] step {step}/{} loss {loss:.5} {rate:.0} samples/s ",
            self.total
        );
        let _ = err.flush();
    }

    fn epoch(&self, epoch: u64, step: usize, loss: f64, samples: usize, since: Instant) {
        let rate = samples as f64 / since.elapsed().as_secs_f64().max(1e-9);
        let clear = if self.terminal { "\r\x1b[K" } else { "" };
        eprintln!(
            "{clear}epoch {epoch}: step {step}/{} mean loss {loss:.6} ({rate:.0} samples/s)",
            self.total
        );
    }

    fn done(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}
