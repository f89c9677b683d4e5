//! Gradients in the builder API: `tf.gradients` on the graph being built, and the outputs
//! `kiln grad` adds (`grad/<name>` for each variable or node differentiated).

use crate::Graph;
use kiln_ir::grad::GradientOptions;
use kiln_ir::{Error, NodeId, Op, Result};

impl Graph {
    /// The gradients of the sum of all elements of `ys` with respect to each of `xs`
    /// (`tf.gradients(ys, xs)`), added to this graph as ordinary nodes: running them in a
    /// session runs the forward and backward computation together, optimised as one graph.
    ///
    /// ```
    /// use kiln::{Graph, Session, Shape, Tensor};
    ///
    /// let mut g = Graph::new();
    /// let x = g.input("x", Shape::known(&[3]))?;
    /// let y = g.square(x)?;
    /// let dx = g.gradients(&[y], &[x])?[0]; // 2x
    /// let at = Tensor::from_vec(&[3], vec![1.0, 2.0, 3.0])?;
    /// let out = Session::new(&g)?.run(&[(x, &at)], &[dx])?;
    /// assert_eq!(out[0].as_f32(), Some(&[2.0, 4.0, 6.0][..]));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    ///
    /// An x that no y depends on, a y that is not f32, or a path through an op with no
    /// gradient (argmax, a cast to an integer, gather's indices) is an error naming the node.
    pub fn gradients(&mut self, ys: &[NodeId], xs: &[NodeId]) -> Result<Vec<NodeId>> {
        self.ir.gradients(ys, xs)
    }

    /// [`Graph::gradients`] with the gradient flowing into each y (`grad_ys`, default ones)
    /// and [`GradientOptions`] (e.g. zeros for an x the ys do not depend on).
    pub fn gradients_with(
        &mut self,
        ys: &[NodeId],
        xs: &[NodeId],
        grad_ys: Option<&[NodeId]>,
        options: GradientOptions,
    ) -> Result<Vec<NodeId>> {
        self.ir.gradients_with(ys, xs, grad_ys, options)
    }

    /// Adds d`loss`/dx for each x of `wrt` (default: [`kiln_ir::Graph::trainable_variables`]
    /// of the loss) as outputs named `grad/<x's name>`, returning them in `wrt`'s order. This
    /// is what `kiln grad` does; `kiln run` writes each as `grad_<name>.npy`.
    pub fn add_gradient_outputs(
        &mut self,
        loss: NodeId,
        wrt: Option<&[NodeId]>,
    ) -> Result<Vec<NodeId>> {
        let wrt = match wrt {
            Some(w) => w.to_vec(),
            None => self.ir.trainable_variables(&[loss]),
        };
        if wrt.is_empty() {
            return Err(Error::Invalid(format!(
                "%{} depends on no variable; name the nodes to differentiate with respect to",
                self.ir.node(loss).name
            )));
        }
        // The output names are checked before any node is added, so an error leaves the graph
        // as it was.
        for (i, &x) in wrt.iter().enumerate() {
            let x_name = &self.ir.node(x).name;
            if wrt[..i].contains(&x) {
                return Err(Error::Invalid(format!(
                    "%{x_name} is listed twice among the nodes to differentiate with respect to"
                )));
            }
            if self.ir.find(&format!("grad/{x_name}")).is_some() {
                return Err(Error::Invalid(format!(
                    "the graph already has a node %grad/{x_name}, the name of the gradient \
                     output for %{x_name} (were its gradients already added?)"
                )));
            }
        }
        let grads = self.ir.gradients(&[loss], &wrt)?;
        let mut outputs = Vec::with_capacity(wrt.len());
        for (&x, &g) in wrt.iter().zip(&grads) {
            let name = format!("grad/{}", self.ir.node(x).name);
            // A gradient node made for this x alone takes the output's name; one that is
            // shared (an input, a node of the forward graph, another x's gradient) gets a
            // reshape to itself, which costs no copy.
            let fresh =
                self.ir.node(g).name.starts_with("gradients/") && !self.ir.outputs().contains(&g);
            let out = if fresh {
                self.ir.rename(g, &name)?;
                g
            } else {
                let shape = self
                    .ir
                    .node(g)
                    .ty
                    .shape
                    .dims()
                    .iter()
                    .map(|d| d.map_or(-1, |d| d as i64))
                    .collect();
                self.ir.add(name, Op::Reshape { shape }, &[g])?
            };
            self.ir.add_output(out);
            outputs.push(out);
        }
        Ok(outputs)
    }
}
