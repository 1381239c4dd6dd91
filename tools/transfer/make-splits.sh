#!/usr/bin/env bash
# Builds the transfer experiment's two image folders from the CIFAR-10 JPEG copy, as symbolic
# links (nothing is copied):
#   OUT/source: airplane, automobile, bird, cat, deer; all 25,000 training and 5,000 test images
#   OUT/target: dog, frog, horse, ship, truck; the first PER_CLASS training images of each class
#               (by file name) and all 5,000 test images
# Usage: make-splits.sh CIFAR10_JPG OUT [PER_CLASS=100]
set -euo pipefail
src=$(cd "$1" && pwd)
out=$2
per_class=${3:-100}
[ -d "$src/train/airplane" ] || { echo "$src is not the CIFAR-10 JPEG copy (no train/airplane)" >&2; exit 1; }
[ -e "$out" ] && { echo "$out exists; remove it or choose another folder" >&2; exit 1; }
for class in airplane automobile bird cat deer; do
    mkdir -p "$out/source/train" "$out/source/test"
    ln -s "$src/train/$class" "$out/source/train/$class"
    ln -s "$src/test/$class" "$out/source/test/$class"
done
for class in dog frog horse ship truck; do
    mkdir -p "$out/target/train/$class" "$out/target/test"
    ln -s "$src/test/$class" "$out/target/test/$class"
    # Process substitution: head closing the pipe early is not a failure here.
    mapfile -t first < <(find "$src/train/$class" -maxdepth 1 -name '*.jpg' | sort | head -n "$per_class")
    ln -s "${first[@]}" "$out/target/train/$class/"
done
echo "source: $(find -L "$out/source/train" -name '*.jpg' | wc -l) training, $(find -L "$out/source/test" -name '*.jpg' | wc -l) test images"
echo "target: $(find -L "$out/target/train" -name '*.jpg' | wc -l) training, $(find -L "$out/target/test" -name '*.jpg' | wc -l) test images"
