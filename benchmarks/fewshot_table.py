"""Prints the Markdown tables of docs/results.md from `benchmarks/results_fewshot/<task>/results.json`.

    python benchmarks/fewshot_table.py [benchmarks/results_fewshot]

One table per task: a row per N-way K-shot setting, a column per method (accuracy and its Wilson 95 % interval),
with chance, episodes and scored queries. The `logmel` column (the no-learning reference) is shown for tasks whose
results have it.
"""

import json
import sys
from pathlib import Path

METHODS = ("icl", "calibrated", "embedding")
OPTIONAL_METHODS = ("codes", "logmel")  # a column only when a task's results have it


def load(root: Path) -> dict[str, list[dict]]:
    tasks = {}
    for path in sorted(root.glob("*/results.json")):
        tasks[path.parent.name] = json.loads(path.read_text())["results"]
    return tasks


def cell(r: dict) -> str:
    return f"{r['accuracy']:.2f} [{r['ci_low']:.2f}-{r['ci_high']:.2f}]"


def main(argv=None) -> int:
    root = Path((argv or sys.argv[1:] or ["benchmarks/results_fewshot"])[0])
    tasks = load(root)
    if not tasks:
        raise SystemExit(f"No results under {root}: run benchmarks/run_fewshot_tasks.sh first.")
    for task, results in tasks.items():
        first = results[0]
        extra = f", demonstrations and queries from different `{first['group_key']}`s" if first["group_key"] else ""
        print(f"### {task}\n")
        print(f"{first['episodes']} episodes per setting, {first['n_queries']} queries per class and episode, "
              f"seed {first['seed']}{extra}.\n")
        present = {r["method"] for r in results}
        methods = METHODS + tuple(m for m in OPTIONAL_METHODS if m in present)
        print("| setting | chance | queries | " + " | ".join(methods) + " |")
        print("| --- | --- | --- | " + " | ".join("---" for _ in methods) + " |")
        settings = sorted({(r["n_way"], r["k_shot"]) for r in results})
        for n_way, k_shot in settings:
            row = {r["method"]: r for r in results if (r["n_way"], r["k_shot"]) == (n_way, k_shot)}
            any_r = next(iter(row.values()))
            cells = [cell(row[m]) if m in row else "-" for m in methods]
            print(f"| {n_way}-way {k_shot}-shot | {any_r['chance']:.2f} | {any_r['n']} | " + " | ".join(cells) + " |")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
