#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (device tool): the core CUDA checks (bench_cuda.py), then
# five shapes-recipe variants trained side by side and scored as they finish (recipe_study.py).
# Needs two folders beside the repo's files, git-ignored locally (.git/info/exclude) and named in the
# device call's carry:
#   .whl/        wheels of the packages the GPU image lacks or has in other versions, for Python 3.12:
#                diffusers, transformers (as pinned in requirements.txt), importlib_metadata, regex
#                (pip download --no-deps --only-binary=:all: --python-version 3.12 ...), and .whl/bnb/ =
#                bitsandbytes unpacked with only its CPU and CUDA 13 libraries (the full wheel is 43 MB)
#   .study-base/ tokenizer/, vae/ and siglip.pt of a recipe work folder (runs/<name>/)
# Smoke run here: SKIP_WHEELS=1 PY=.venv/bin/python DEVICE=cpu OUT=/tmp/o END=$(($(date +%s)+420)) \
#   BENCH_ARGS="--device cpu --preset tiny" TRAIN_ARGS="--scale 0.003 --pool-scale 0.01" \
#   SCORE_ARGS="--per-task 1 --n 4 --snap-per-task 1 --snap-n 2" bash bench/gpu_study.sh
# Everything it reports lands in $OUT; stop times are absolute so it ends inside the call's limit.
T0=$(date +%s); rm -rf /tmp/study
END=${END:-$((T0 + 530))}
if [ -z "${SKIP_WHEELS:-}" ]; then  # SKIP_WHEELS=1: a smoke run here, with the project's venv
  ${PY:-python3} -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/.whl/bnb || exit 1
fi
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi -L
timeout 95 ${PY:-python3} bench/bench_cuda.py --budget-s 70 ${BENCH_ARGS:-} --out "$OUT/cuda.json" > "$OUT/cuda.log" 2>&1
echo "cuda bench rc $? at $(( $(date +%s) - T0 )) s"
LEFT=$(( END - $(date +%s) ))
S2=$(( (LEFT - 150) * 3 / 4 )); S3=$(( (LEFT - 150) / 4 ))   # ~150 s kept for pools, exports, final scores
echo "stage 2 ${S2} s, stage 3 ${S3} s"
VARIANTS="repa norepa repa1 longstage3 big"
for v in $VARIANTS; do
  snap=0; [ "$v" = big ] && snap=1000
  ${PY:-python3} bench/recipe_study.py train --variant $v --base .study-base --work /tmp/study \
    --stage2-s $S2 --stage3-s $S3 --snapshot-every $snap ${TRAIN_ARGS:-} >> "$OUT/train.log" 2>&1 &
  ${PY:-python3} bench/recipe_study.py score --work /tmp/study --only $v --device ${DEVICE:-cuda} --until $END \
    --scores "$OUT/scores.jsonl" --snap-per-task 8 --snap-n 100 ${SCORE_ARGS:-} >> "$OUT/score.log" 2>&1 &
done
sleep 5; nvidia-smi 2>/dev/null --query-gpu=utilization.gpu,memory.used --format=csv
wait
echo "all done at $(( $(date +%s) - T0 )) s"
tar czf "$OUT/logs.tgz" /tmp/study/*/stage*/log.jsonl /tmp/study/*/study.json /tmp/study/*/summary.json 2>/dev/null
