"""Print the engine benchmark's images/s and each engine against in-process:
    python tests/bench/engine_rates.py engines.json"""
import json
import sys


def main(path: str) -> None:
    runs = {b["extra_info"]["impl"]: b for b in json.load(open(path))["benchmarks"]}
    rate = {impl: (b["extra_info"]["images"] / b["stats"]["min"], b["extra_info"]["images"] / b["stats"]["median"])
            for impl, b in runs.items()}
    print(next(iter(runs.values()))["group"] if runs else "no runs")
    for impl, (best, median) in rate.items():
        vs = ""
        if "in_process" in rate and impl != "in_process":
            vs = f"  vs in_process {best / rate['in_process'][0]:.3f} (best) {median / rate['in_process'][1]:.3f} (median)"
        print(f"  {impl:12s} {best:8.2f} img/s (best) {median:8.2f} img/s (median){vs}")


if __name__ == "__main__":
    main(sys.argv[1])
