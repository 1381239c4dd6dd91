//! Ad-hoc timing of the convolution passes on ResNet-20 layer shapes (batch 128).
use resnet_kernels::conv::*;
use resnet_kernels::Workspace;
use std::time::Instant;

fn main() {
    let shapes = [(32, 16, 16, 1), (16, 32, 32, 1), (8, 64, 64, 1), (32, 16, 32, 2)];
    for algo in [ConvAlgorithm::Direct, ConvAlgorithm::Im2colGemm] {
        for &(hw, cin, cout, stride) in &shapes {
            let h = hw;
            let s = ConvShape { n: 128, h, w: h, cin, cout, kh: 3, kw: 3, stride, pad: 1 };
            let x: Vec<f32> = (0..s.input_len()).map(|i| (i % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..s.weight_len()).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut y = vec![0.0; s.output_len()];
            let mut dx = vec![0.0; s.input_len()];
            let mut dw = vec![0.0; s.weight_len()];
            let mut ws = Workspace::new();
            let flops = 2.0 * s.macs() as f64;
            let reps = 10;
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                t.elapsed().as_secs_f64() / reps as f64
            };
            let tf = time(&mut || conv2d_forward_with(algo, &s, &x, None, &w, &mut y, None, &mut ws));
            let td = time(&mut || conv2d_backward_data_with(algo, &s, &y, &w, &mut dx, false, &mut ws));
            let tw = time(&mut || conv2d_backward_weight_with(algo, &s, &x, None, &y, &mut dw, false, &mut ws));
            println!("{algo:?} {hw}x{hw} {cin}->{cout} s{stride}: fwd {:.2} ms ({:.0} GF/s)  bwd-data {:.2} ms ({:.0})  bwd-w {:.2} ms ({:.0})",
                tf * 1e3, flops / tf / 1e9, td * 1e3, flops / td / 1e9, tw * 1e3, flops / tw / 1e9);
        }
    }
}
