#!/usr/bin/env bash
# Two continuations of the default codec side by side on one lent GPU, in one device call (docs/training.md):
#
#   python experiments/gpu/gpu_travel.py hide          # here, then the device call, carrying .gpu_bundle:
#   bash experiments/gpu/gpu_pair.sh MINUTES CONFIG_A CONFIG_B
#   python experiments/gpu/gpu_travel.py restore       # here, afterwards
#
# Both start from experiments/default_codec/training/resume (or, on a machine still warm from an earlier call,
# continue their runs/gpu_a, runs/gpu_b exactly). A tiny codec leaves an H100 mostly idle, so two runs of 7 data
# workers each share it at about 0.13 s per step each (batch 64). Returned in $OUT (at most 8 files, the device's
# limit): a/ and b/ with model.safetensors (folded weights, no codebooks: what experiments/gpu/gpu_train.py writes) and
# log.jsonl, a.log and b.log (stdout), nvidia_smi.txt, and the discriminator (half precision) of the first run that
# trained one, in its folder. A design-2 config (experiments/semantic_layer1/design2_gpu.yaml) works as either one when
# the bundle was packed with --semantic-from (gpu_train.py adds layer 1 from it; the other run ignores it).
set -u
minutes=$1; config_a=$2; config_b=$3
tmp=${GPU_PAIR_TMP:-/tmp}  # where the runs write before the copy to $OUT
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu_bundle/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD:$PWD/experiments/gpu PYTHONUNBUFFERED=1
python3 -c "from pathlib import Path; from gpu_train import decode_audio; print(decode_audio(Path('.gpu_bundle'), Path('/tmp/llm_codec_gpu_audio')))"
for v in a b; do
  config=$config_a; [ $v = b ] && config=$config_b
  python3 experiments/gpu/gpu_train.py --bundle .gpu_bundle --config "$config" --minutes "$minutes" --out "$tmp/gpu_out_$v" \
    --state "runs/gpu_$v" --resume-from experiments/default_codec/training/resume --batch-size 64 --workers 7 \
    --eval-every 100000 --save-every 100000 > "$OUT/$v.log" 2>&1 &
done
sleep 150; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv > "$OUT/nvidia_smi.txt"
wait
for v in a b; do
  mkdir -p "$OUT/$v" && cp "$tmp/gpu_out_$v/model.safetensors" "$tmp/gpu_out_$v/log.jsonl" "$OUT/$v/"
done
# the 8th file: the discriminator of the first run that trained one (its log has discriminator losses)
for v in a b; do
  if grep -q '"loss_d"' "$tmp/gpu_out_$v/log.jsonl" && [ -f "$tmp/gpu_out_$v/resume/discriminator.safetensors" ]; then
    cp "$tmp/gpu_out_$v/resume/discriminator.safetensors" "$OUT/$v/" && break
  fi
done
tail -n 3 "$OUT/a.log" "$OUT/b.log"
