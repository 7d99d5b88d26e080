"""Print the serving benchmarks' ratios from a pytest-benchmark JSON file:
    python tests/bench/serving_ratios.py serving.json

Per goal (tests/bench/test_serving_bench.py): the min and median of each
variant, and the ratio that the goal is about. Times are per call: for
"batching" one call is CALLERS images either way, so the ratio of times is
the inverse ratio of throughputs."""
import json
import sys
from collections import defaultdict

# goal -> (numerator, denominator, what the ratio means)
RATIOS = {
    "overhead": ("service", "in-process", "service / in-process time per batch-1 request"),
    "batching": ("service", "in-process", "time for CALLERS callers / one in-process batch of CALLERS"),
    "decode_pool": ("off", "on", "speed-up of decoding in a thread pool"),
    "device_decode": ("off", "on", "speed-up of decoding + preprocessing on the device"),
    "pinned": ("off", "on", "speed-up of pinned staging + non-blocking copy"),
    "compile": ("off", "on", "speed-up of torch.compile"),
    "half_channels_last": ("off", "on", "speed-up of half precision + channels-last"),
}


def main(path: str) -> None:
    groups = defaultdict(dict)
    info = {}
    for b in json.load(open(path))["benchmarks"]:
        extra = b.get("extra_info", {})
        if "goal" not in extra:
            continue
        groups[b["group"]][extra["variant"]] = (b["stats"]["min"], b["stats"]["median"])
        info[b["group"]] = extra
    for group, t in groups.items():
        extra = info[group]
        print(f"{group}  ({extra.get('arch')} on {extra.get('device')}; min / median ms)")
        for variant, (lo, med) in t.items():
            print(f"  {variant:12s} {lo * 1e3:10.2f} {med * 1e3:10.2f}")
        num, den, meaning = RATIOS[extra["goal"].split()[0]]
        if num in t and den in t:
            print(f"  {meaning}: {t[num][0] / t[den][0]:.3f}x (min)  {t[num][1] / t[den][1]:.3f}x (median)")


if __name__ == "__main__":
    main(sys.argv[1])
