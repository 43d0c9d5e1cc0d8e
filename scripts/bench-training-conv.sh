#!/usr/bin/env bash
# Times training through 3x3 convolutions with two builds of the command line side by side, in
# one run on this machine (alternating, so both see the same conditions):
#   - the modern CNN from scratch: `bench --model modern-cnn` (its epochs, augmentation included);
#   - VGG-16 fine-tuned end to end at 32x32 on the first LIMIT training images, one epoch (the
#     epoch's own time, validation included), and its scoring of the 10,000 test images.
# Usage: scripts/bench-training-conv.sh OLD_BINARY NEW_BINARY [ROUNDS] [LIMIT]
# Prints the CPU's vector extensions and one line per measurement; progress goes to the log dir.
set -euo pipefail
old=${1:?old binary}
new=${2:?new binary}
rounds=${3:-2}
limit=${4:-1280}
logs=$(mktemp -d)
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "vector extensions: $(grep -m1 -o -w 'avx512[a-z0-9_]*\|avx2\|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "logs: $logs"
for round in $(seq "$rounds"); do
  for which in old new; do
    binary=$old
    [ "$which" = new ] && binary=$new
    log="$logs/$which-$round"
    "$binary" bench --model modern-cnn --batch-size 64 --images 12000 --epochs 2 >"$log-cnn.out" 2>"$log-cnn.err"
    grep 'modern CNN' "$log-cnn.out" | sed "s/^/round $round $which: /" || true
    start=$(date +%s.%N)
    "$binary" transfer --backbone vgg16 --preprocessing caffe --fine-tune-all --fine-tune-epochs 1 \
      --epochs 2 --limit "$limit" --cache "$logs/features-$which" --out "$log-vgg" \
      >"$log-vgg.out" 2>"$log-vgg.err"
    end=$(date +%s.%N)
    # The first epoch line after the fine-tuning starts (minute log lines may come between).
    epoch=$(awk '/fine-tuning VGG-16 end to end/ {f = 1} f && /^epoch +[0-9]+:/ {print; exit}' "$log-vgg.err" | grep -o '([0-9.]* s)' || true)
    echo "round $round $which VGG-16 end to end, $limit images: fine-tuning epoch $epoch, whole command $(awk "BEGIN {printf \"%.1f\", $end - $start}") s (round 1 extracts the features, later rounds read them from the cache)"
  done
done
