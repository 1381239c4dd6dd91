"""Runs an exported ONNX model in onnxruntime and compares its logits with ours.

Called by crates/interop/tests/interop/onnx.rs (needs only onnxruntime and numpy; uses the onnx
package's checker too when it is installed):

    python tools/interop/check_onnx.py MODEL.onnx INPUT.f32 N,C,H,W EXPECTED.f32 [TOLERANCE [TOP1]]

INPUT.f32 holds the NCHW input and EXPECTED.f32 our [N, classes] logits, little-endian float32.
Checks the graph's interface (input `input` with a symbolic batch dimension, output `logits`),
runs the whole batch and then its first sample alone (the batch dimension really is dynamic),
and passes when max |ours - onnxruntime| / max |onnxruntime| <= TOLERANCE (default 1e-4) for
the graph run without onnxruntime's optimisations (the ONNX semantics of every operator), the
optimised run's first sample alone matches its batch, and the optimised run's top-1 classes
agree with ours on at least the fraction TOP1 of the samples (default 1: all; int8 graphs round
differently in places). Exit status 0 on success, 1 on a mismatch.
"""
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, input_path, shape, expected_path = sys.argv[1:5]
    tolerance = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-4
    top1_needed = float(sys.argv[6]) if len(sys.argv) > 6 else 1.0
    shape = [int(d) for d in shape.split(",")]
    x = np.fromfile(input_path, dtype="<f4").reshape(shape)
    want = np.fromfile(expected_path, dtype="<f4").reshape(shape[0], -1)

    try:
        import onnx

        onnx.checker.check_model(model, full_check=True)
        print("onnx.checker: ok")
    except ImportError:
        pass

    options = ort.SessionOptions()
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != ["input"] or [o.name for o in outputs] != ["logits"]:
        print(f"interface: inputs {[i.name for i in inputs]}, outputs {[o.name for o in outputs]}")
        return 1
    if not isinstance(inputs[0].shape[0], str):
        print(f"the batch dimension is fixed: {inputs[0].shape}")
        return 1

    got = session.run(["logits"], {"input": x})[0]
    single = session.run(["logits"], {"input": x[:1]})[0]
    # The graph's own meaning, without onnxruntime's fused kernels: QDQ graphs then run as float
    # operators between QuantizeLinear and DequantizeLinear, exactly as the ONNX spec defines them.
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(model, plain, providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})[0]
    scale = float(np.abs(reference).max())
    err = float(np.abs(reference - want).max())
    fused_err = float(np.abs(got - want).max())
    single_err = float(np.abs(single[0] - got[0]).max())
    agreement = float((got.argmax(1) == want.argmax(1)).mean())
    top1_same = agreement >= top1_needed
    print(
        f"{model}: onnxruntime {ort.__version__}, batch {shape[0]}: max |ours - ort| {err:.3e} (unoptimised graph), "
        f"{fused_err:.3e} (optimised), max |logit| {scale:.3e}, relative {err / scale:.3e} and {fused_err / scale:.3e}; "
        f"batch-1 run differs by {single_err:.3e}; top-1 agreement {agreement:.3f} (needed {top1_needed}) "
        f"{got.argmax(1).tolist()} against ours {want.argmax(1).tolist()}"
    )
    if fused_err / scale > tolerance:
        # Seen with int8 graphs on AVX2 CPUs without VNNI, whose u8 x s8 kernels sum pairs of
        # products in 16 bits (vpmaddubsw), which saturate: the optimised run is then held to the
        # top-1 classes only.
        print("note: onnxruntime's optimised kernels differ from its unoptimised graph by more than the tolerance")
    ok = err / scale <= tolerance and single_err / scale <= tolerance and top1_same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
