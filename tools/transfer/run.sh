#!/usr/bin/env bash
# The transfer experiment of issue 26: pretrain on five CIFAR-10 classes, then learn the other
# five from 100 images each, four ways:
#   (a) from scratch, (b) --init from the pretrained weights with a new classifier, every layer
#   training, (c) the same with --freeze backbone (a linear probe trained by SGD), (d) a logistic
#   regression on `resnet embed` features of the pretrained network.
# Each reports its test error on the 5,000 test images of the new classes.
#
# Usage: tools/transfer/run.sh CIFAR10_JPG OUT [r20|r18|all]
#   r20: CIFAR ResNet-20 at 32 px, pretrained with the 30-epoch recipe;
#   r18: ImageNet ResNet-18 at 64 px (upscaled), pretrained for 10 epochs, exported as a
#        torchvision safetensors file that (b) and (c) start from.
# Runs already finished are kept; an interrupted one resumes. RESNET names the binary (default
# target/release/resnet), PROBE the linear-probe example (target/release/examples/linear_probe),
# SEED the seed of the runs on the new classes (default 0; others get their own run directories
# and OUT/results-<net>-s<SEED>.md, the pretrained network is shared). Writes OUT/results-<net>.md.
set -euo pipefail
cifar=$1
out=$2
which=${3:-all}
root=$(cd "$(dirname "$0")/../.." && pwd)
resnet=${RESNET:-$root/target/release/resnet}
probe=${PROBE:-$root/target/release/examples/linear_probe}
seed=${SEED:-0}
tag=$([ "$seed" = 0 ] || echo "-s$seed")
mkdir -p "$out"
splits=$out/splits
[ -d "$splits" ] || "$root/tools/transfer/make-splits.sh" "$cifar" "$splits"

# train DIR ARGS...: a fresh run into DIR, or the resumption of the one there.
train() {
    local dir=$1
    shift
    if [ -f "$dir/checkpoints/last.safetensors" ]; then
        "$resnet" train --resume "$dir" --quiet
    else
        rm -rf "$dir"
        "$resnet" train "$@" --quiet --out "$dir"
    fi
}

# The last epoch's test error of a run, percent.
test_error() {
    tail -n 1 "$1/metrics.jsonl" | grep -o '"test_error":[0-9.]*' | cut -d: -f2
}

# probe_error CHECKPOINT NAME: (d), a logistic regression on the checkpoint's pooled features.
probe_error() {
    local ckpt=$1 name=$2
    for split in train test; do
        [ -f "$out/$name-$split.safetensors" ] || "$resnet" embed --checkpoint "$ckpt" --dataset imagefolder \
            --data "$splits/target" --split "$split" --out "$out/$name-$split.safetensors" >&2
    done
    # The penalty is chosen by 5-fold cross-validation on the 500 training images.
    "$probe" "$out/$name-train.safetensors" "$out/$name-test.safetensors" | tee -a "$out/probe-$name.log" |
        grep -o 'test error [0-9.]*' | cut -d' ' -f3
}

# experiment NAME MODEL SOURCE_ARGS... -- TARGET_ARGS...: the four ways for one network.
experiment() {
    local name=$1 model=$2
    shift 2
    local source_args=() target_args=()
    while [ "$1" != "--" ]; do source_args+=("$1"); shift; done
    shift
    target_args=("$@")
    train "$out/$name-source" --data "$splits/source" --model "$model" "${source_args[@]}"
    local weights=$out/$name-source/checkpoints/last.safetensors
    if [ "$name" = r18 ]; then
        # A torchvision-layout file, as a user would bring one.
        weights=$out/r18-torchvision.safetensors
        [ -f "$weights" ] || "$resnet" export --checkpoint "$out/$name-source/checkpoints/last.safetensors" \
            --safetensors "$weights"
    fi
    target_args+=(--seed "$seed")
    train "$out/$name-a-scratch$tag" --data "$splits/target" "${target_args[@]}" --model "$model" --lr 0.1
    train "$out/$name-b-finetune$tag" --data "$splits/target" "${target_args[@]}" --init "$weights" --lr 0.01
    train "$out/$name-c-probe$tag" --data "$splits/target" "${target_args[@]}" --init "$weights" \
        --freeze backbone --lr 0.1
    local d
    d=$(probe_error "$out/$name-source/checkpoints/last.safetensors" "$name")
    {
        echo "| $name | test error on the 5 new classes (5,000 images) |"
        echo "|---|---|"
        echo "| source (5 other classes, 25,000 images) | $(test_error "$out/$name-source")% on its own test set |"
        echo "| (a) from scratch, 500 images | $(test_error "$out/$name-a-scratch$tag")% |"
        echo "| (b) --init, all layers train | $(test_error "$out/$name-b-finetune$tag")% |"
        echo "| (c) --init --freeze backbone | $(test_error "$out/$name-c-probe$tag")% |"
        echo "| (d) logistic regression on resnet embed | ${d}% |"
    } | tee "$out/results-$name$tag.md"
}

if [ "$which" = r20 ] || [ "$which" = all ]; then
    experiment r20 resnet20 --recipe cifar-paper --epochs 30 --milestones 0.5,0.75 -- \
        --recipe cifar-paper --epochs 40 --batch-size 50 --milestones 0.5,0.75
fi
if [ "$which" = r18 ] || [ "$which" = all ]; then
    view=(--augment scale --image-size 64 --eval-view center --normalize imagenet)
    experiment r18 resnet18 --recipe cifar-paper --epochs 10 --milestones 0.5,0.75 "${view[@]}" -- \
        --recipe cifar-paper --epochs 40 --batch-size 50 --milestones 0.5,0.75 "${view[@]}"
fi
