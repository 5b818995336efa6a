#!/usr/bin/env bash
# Few-shot classification of the offline real-audio tasks (bash scripts/prepare_data.sh builds data/tasks) with the
# embedded default codec and SmolLM2-135M: 2-way and 3-way at 1 and 3 shots, and 5-way 5-shot, 20 episodes per
# setting, 2 queries per class and episode, seed 0, all three methods. Results: benchmarks/results_fewshot/<task>/.
# JOBS=2 runs the four tasks as two processes.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # one thread: two busy processes on 2 cores with 2 threads each run ~20x slower
run() {  # task, extra arguments
  local task="$1"; shift
  "${PYTHON:-.venv/bin/python}" -m llm_codec.cli evaluate fewshot --data "data/tasks/$task" --task-name "$task" --episodes 20 \
    --queries-per-class 2 --seed 0 --output "benchmarks/results_fewshot/$task" "$@"
}
first_half() {
  run drum_type --group-key kit --settings 2x1,2x3,3x1,3x3,5x5
  run speaker_id --settings 2x1,2x3,3x1,3x3
  run sound_event --group-key game --settings 2x1,2x3,3x1,3x3,5x3  # 5-way 5-shot cannot split the games
}
second_half() {
  run instrument --settings 2x1,2x3,3x1,3x3,5x5
  run language_id --settings 2x1,2x3,3x1,3x3,5x5
}
mkdir -p benchmarks/results_fewshot
if [ "${JOBS:-1}" = 2 ]; then  # JOBS=2: the two halves as two processes (about 26 min on 2 cores, one thread each)
  first_half > benchmarks/results_fewshot/first_half.log 2>&1 & first=$!
  second_half > benchmarks/results_fewshot/second_half.log 2>&1 & second=$!
  status=0; wait "$first" || status=$?; wait "$second" || status=$?
  [ "$status" = 0 ] || { echo "a half failed: see benchmarks/results_fewshot/*_half.log" >&2; exit "$status"; }
  rm -f benchmarks/results_fewshot/first_half.log benchmarks/results_fewshot/second_half.log
else
  first_half
  second_half
fi
