"""The cost model of docs/scaling.md: data-parallel ResNet-50 training, 32 images per rank, ring
allreduce of the gradients in 25 MB buckets, with and without overlap with the backward pass.

    python3 tools/scaling/model.py [STEP_SECONDS]

STEP_SECONDS is one node's measured time of a training step of 32 images (`resnet bench
--model resnet50-v1.5 --batch 32 --mode train`); the default is this project's 2-core VM.
Prints, per link speed and node count, the predicted images/s and efficiency (compute time over
step time). Standard library only.
"""
import sys

GRADIENT_BYTES = 25_557_032 * 4  # ResNet-50 v1.5 parameters, f32
BUCKET_BYTES = 25 << 20
BUCKETS = -(-GRADIENT_BYTES // BUCKET_BYTES)
PER_RANK = 32
BACKWARD_SHARE = 2 / 3  # of a step's compute: backward is about twice the forward
LINKS = [  # name, bytes/s, per-message latency (s)
    ("10 Gb/s Ethernet (TCP)", 10e9 / 8, 30e-6),
    ("25 Gb/s Ethernet (TCP)", 25e9 / 8, 20e-6),
    ("100 Gb/s InfiniBand (RDMA)", 100e9 / 8, 3e-6),
]
NODES = [2, 4, 8, 16, 32, 64, 128, 256]


def allreduce_seconds(n, bandwidth, latency):
    """Ring allreduce: each rank sends and receives 2 (N-1)/N of the bytes, in 2 (N-1) steps per bucket."""
    return 2 * (n - 1) / n * GRADIENT_BYTES / bandwidth + 2 * (n - 1) * latency * BUCKETS


def exposed_seconds(comm, compute, overlap):
    """Communication left on the step's critical path: all of it without overlap; with it, what the
    backward pass cannot hide, and at least the last bucket (the first layers, ready last)."""
    if not overlap:
        return comm
    last_bucket = comm * (GRADIENT_BYTES - (BUCKETS - 1) * BUCKET_BYTES) / GRADIENT_BYTES
    return max(comm - BACKWARD_SHARE * compute, last_bucket)


def main():
    compute = float(sys.argv[1]) if len(sys.argv) > 1 else 5.55
    print(f"ResNet-50, {PER_RANK} images per node, step compute {compute:.3f} s, "
          f"gradient {GRADIENT_BYTES / 1e6:.1f} MB in {BUCKETS} buckets")
    for name, bandwidth, latency in LINKS:
        print(f"\n{name}")
        print(f"{'nodes':>6} {'allreduce ms':>13} {'images/s':>10} {'eff.':>6} {'images/s overlap':>17} {'eff.':>6}")
        for n in NODES:
            comm = allreduce_seconds(n, bandwidth, latency)
            row = [f"{n:>6}", f"{comm * 1e3:>13.1f}"]
            for overlap, width in [(False, 10), (True, 17)]:
                step = compute + exposed_seconds(comm, compute, overlap)
                row += [f"{n * PER_RANK / step:>{width}.1f}", f"{100 * compute / step:>5.1f}%"]
            print(" ".join(row))


if __name__ == "__main__":
    main()
