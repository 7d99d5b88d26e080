"""Print the stream benchmark's images/s and ratio from a pytest-benchmark JSON file:
    python tests/bench/stream_ratio.py stream.json"""
import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    groups = defaultdict(dict)
    for b in json.load(open(path))["benchmarks"]:
        groups[b["group"]][b["extra_info"]["impl"]] = b
    for group, runs in groups.items():
        print(group)
        rate = {}
        for impl, b in runs.items():
            n = b["extra_info"]["images"]
            rate[impl] = (n / b["stats"]["min"], n / b["stats"]["median"])
            batches = b["extra_info"].get("device_batches")
            print(f"  {impl:12s} {rate[impl][0]:8.2f} img/s (best) {rate[impl][1]:8.2f} img/s (median)"
                  + (f"  device batches {batches}" if batches else ""))
        if {"in_process", "over_stream"} <= set(rate):
            best = rate["over_stream"][0] / rate["in_process"][0]
            median = rate["over_stream"][1] / rate["in_process"][1]
            print(f"  over_stream / in_process: {best:.3f} (best)  {median:.3f} (median)  goal >= 0.8")


if __name__ == "__main__":
    main(sys.argv[1])
