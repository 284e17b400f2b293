"""How QC's detectors agree with outputs labelled by eye.

Reads a quality-matrix CSV (``benchmarks/quality_matrix.py``: one row per pair and mode, with the
metrics QC flagged in ``reason_metrics``) and a labels CSV (``pair,mode,classes,notes``; classes
``;``-separated defect classes seen by eye, ``clean`` for none, ``uncertain`` to leave a row out),
and prints, per defect class, how many labelled outputs QC flagged with the measure made for that
class (detection on real defects) and how many outputs labelled without that class it flagged all
the same (false alarms). Labels are made from plate|output sheets before looking at QC's overlay;
rows labelled after seeing it say so in their notes.

    .venv/bin/python benchmarks/label_agreement.py /tmp/qm12/matrix.csv benchmarks/labels/sample12_by_eye.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

#: the defect class a person sees -> the QC measures that are meant to catch it
CLASS_MEASURES = {
    "foreign_pieces": ("foreign_pieces",),
    "leftover_plate_head": ("leftover_plate_head",),
    "fill_artefacts": ("fill_artefacts",),
    "inner_edges": ("inner_edges", "seam_score"),
    "colour_blotches": ("colour_blotches", "hair_colour_de"),
    "blur": ("sharpness", "source_vetting"),
    "objects_from_source": ("source_vetting", "foreign_pieces"),
    "wrong_person": ("wrong_person",),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("matrix", type=Path)
    ap.add_argument("labels", type=Path)
    a = ap.parse_args(argv)
    flagged = {}
    for row in csv.DictReader(a.matrix.open()):
        flagged[(row["pair"], row["mode"])] = (set(filter(None, row.get("reason_metrics", "").split(";"))), row.get("verdict"))
    labelled = []
    for row in csv.DictReader(a.labels.open()):
        classes = set(filter(None, row["classes"].split(";")))
        if "uncertain" in classes:
            continue
        key = (row["pair"], row["mode"])
        if key not in flagged:
            print(f"no matrix row for {key}")
            continue
        labelled.append((key, classes - {"clean"}))
    print(f"{len(labelled)} outputs labelled ({sum(1 for _, c in labelled if not c)} clean)")
    print(f"{'class':<22}{'labelled':>9}{'detected':>10}{'rate':>7}   {'false alarms on outputs without it':>36}")
    for cls, measures in CLASS_MEASURES.items():
        pos = [k for k, c in labelled if cls in c]
        neg = [k for k, c in labelled if cls not in c]
        hit = [k for k in pos if flagged[k][0] & set(measures)]
        fa = [k for k in neg if flagged[k][0] & set(measures[:1])]  # the class's own measure only
        rate = f"{100 * len(hit) / len(pos):.0f}%" if pos else "–"
        far = f"{len(fa)}/{len(neg)} ({100 * len(fa) / len(neg):.0f}%)" if neg else "–"
        print(f"{cls:<22}{len(pos):>9}{len(hit):>10}{rate:>7}   {far:>36}")
    clean = [k for k, c in labelled if not c]
    defective = [k for k, c in labelled if c]
    print(f"verdict on outputs labelled clean: " + ", ".join(f"{k[0][:28]}/{k[1]} {flagged[k][1]}" for k in clean))
    passed_defective = [k for k in defective if flagged[k][1] == "pass"]
    print(f"outputs with a labelled defect that QC passed: {len(passed_defective)}/{len(defective)}"
          + (": " + ", ".join(f"{k[0][:28]}/{k[1]}" for k in passed_defective) if passed_defective else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
