//! Feeds from the command line (`--feed NAME=FILE.npy`) and one-line summaries of tensors.

use kiln::{Graph, Op, Tensor};

/// Reads every `NAME=FILE.npy` argument; names may carry a leading `%`. Float data of another
/// width is converted to f32 with a note on stderr; other dtypes are left for the session to
/// reject with both dtypes named.
pub fn load(graph: &Graph, args: &[String]) -> Result<Vec<(String, Tensor)>, String> {
    let mut feeds: Vec<(String, Tensor)> = Vec::new();
    for arg in args {
        let (name, file) = arg
            .split_once('=')
            .ok_or_else(|| format!("--feed {arg:?}: expected NAME=FILE.npy"))?;
        let name = name.trim_start_matches('%').to_string();
        match graph.find(&name).map(|id| &graph.node(id).op) {
            Some(Op::Input(_)) => {}
            Some(op) => {
                return Err(format!(
                    "--feed {name}: %{name} is a {}, not a placeholder",
                    op.name()
                ));
            }
            None => {
                let names: Vec<String> = graph
                    .placeholders()
                    .iter()
                    .map(|&p| format!("%{}", graph.node(p).name))
                    .collect();
                return Err(format!(
                    "--feed {name}: the graph has no placeholder %{name} (placeholders: {})",
                    names.join(", ")
                ));
            }
        }
        if feeds.iter().any(|(n, _)| *n == name) {
            return Err(format!("--feed {name}: given twice"));
        }
        let read = kiln::npy::read(file).map_err(|e| format!("--feed {name}: {e}"))?;
        if let Some(from) = read.converted_from {
            eprintln!("note: feed %{name}: converted {from} data from {file} to f32");
        }
        feeds.push((name, read.tensor));
    }
    Ok(feeds)
}

/// `min=.. max=.. mean=..` over the elements (NaNs counted separately).
pub fn summary(t: &Tensor) -> String {
    let values = t.to_f64_vec();
    let finite: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    let nans = values.len() - finite.len();
    if finite.is_empty() {
        return format!("({} elements, {nans} NaN)", values.len());
    }
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = finite.iter().sum::<f64>() / finite.len() as f64;
    let nan_note = if nans > 0 {
        format!(" nan={nans}")
    } else {
        String::new()
    };
    format!("min={min:.6} max={max:.6} mean={mean:.6}{nan_note}")
}

/// Every element, nested by the shape like a .kiln literal (`[[1, 2], [3, 4]]`; a scalar
/// bare); meant for small tensors.
pub fn values(t: &Tensor) -> String {
    fn nest(values: &[String], dims: &[usize]) -> String {
        match dims.split_first() {
            None => values.first().cloned().unwrap_or_default(),
            Some((&n, rest)) => {
                let step = rest.iter().product::<usize>();
                let parts: Vec<String> = (0..n)
                    .map(|i| nest(&values[i * step..(i + 1) * step], rest))
                    .collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }
    let dims: Vec<usize> = t.shape().dims().iter().map(|d| d.unwrap_or(0)).collect();
    // f32 printed as f32, so 0.1 reads 0.1 and not 0.10000000149011612.
    let texts: Vec<String> = t
        .to_f64_vec()
        .into_iter()
        .map(|v| match t.ty().dtype {
            kiln::DType::F32 => (v as f32).to_string(),
            kiln::DType::Bool => (v != 0.0).to_string(),
            _ => v.to_string(),
        })
        .collect();
    nest(&texts, &dims)
}
