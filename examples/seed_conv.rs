//! The seed case: a 2-D convolution as TensorFlow's graph mode runs it.
//!
//! A placeholder image of unknown batch, a 5x5 variable kernel, SAME padding, stride 1; run
//! through a session with a feed dict for a batch of 1 and then a batch of 4. The second batch
//! size compiles once more; repeating a batch size compiles nothing.

use kiln::{ConvAttrs, Graph, Session, Shape, Tensor};

fn main() -> Result<(), kiln::Error> {
    let mut g = Graph::new();
    let image = g.input("image", Shape::of(&[None, Some(100), Some(100), Some(1)]))?;
    let kernel = g.var("kernel", Tensor::normal(&[5, 5, 1, 1], 0.0, 1.0, 42))?;
    let conv = g.named("conv").conv2d(image, kernel, ConvAttrs::same())?;

    let sess = Session::new(&g)?;
    println!("backend: {}", sess.backend());
    for batch in [1, 4, 1] {
        let img = Tensor::uniform(&[batch, 100, 100, 1], 0.0, 1.0, batch as u64);
        let out = sess.run(&[(image, &img)], &[conv])?;
        let values = out[0].f32s()?;
        let checksum: f64 = values.iter().map(|&v| v as f64).sum();
        println!(
            "batch {batch}: output {:?}, checksum {checksum:.6}, compilations so far {}",
            out[0].dims(),
            sess.compilations()
        );
    }
    Ok(())
}
