"""Print the Grad-CAM benchmark's ratios from a pytest-benchmark JSON file:
    python tests/bench/gradcam_ratios.py gradcam.json"""
import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    groups = defaultdict(dict)
    for b in json.load(open(path))["benchmarks"]:
        groups[b["group"]][b["extra_info"]["impl"]] = (b["stats"]["min"], b["stats"]["median"])
    for group, t in groups.items():
        print(f"{group}  (min / median ms)")
        for impl, (lo, med) in t.items():
            print(f"  {impl:22s} {lo * 1e3:9.1f} {med * 1e3:9.1f}")
        pairs = [("ours", "floor"), ("pytorch_grad_cam", "ours"), ("captum", "ours")]
        for a, b in pairs:
            if a in t and b in t:
                print(f"  {a + ' / ' + b:30s} {t[a][0] / t[b][0]:.2f}x (min)  {t[a][1] / t[b][1]:.2f}x (median)")


if __name__ == "__main__":
    main(sys.argv[1])
