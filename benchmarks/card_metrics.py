"""Write the measured figures into a model card: real-data dev scores and held-out simulated F1.

Reads what the benchmarks wrote — ``benchmarks/results/real_data{suffix}.json``
(``benchmarks/real_data.py``) and an evaluation summary CSV (``stemflow evaluate``) — and puts
them under ``metrics`` of the card (``NAME.json`` beside ``NAME.pt``); nothing is typed in. The
weights' checksum is not touched (the card is not hashed).

Run: ``python benchmarks/card_metrics.py stemflow/weights/default.json``
(``--real benchmarks/results/real_data.json --evaluation docs/evaluation/evaluation.csv``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def metrics(real: Path, evaluation: Path, dose: float = 1e5) -> dict:
    """The ``metrics`` block from the benchmark outputs."""
    from stemflow.find import AUTO_FLIPS

    r = json.loads(real.read_text())
    out = {"real_dev": {"source": f"{real.relative_to(ROOT)} (python benchmarks/real_data.py), date "
                                  f"{r.get('si', r.get('pt', {})).get('date', '?')}",
                        "settings": f"stemflow.find_atoms defaults: {AUTO_FLIPS} network passes on graphene "
                                    "(flips=None), one on amorphous supports"}}
    if "si" in r and "stemflow" in r["si"].get("methods", {}):
        m = r["si"]["methods"]["stemflow"]
        keys = ("dopant_recall", "dopant_precision", "dopant_f1", "host_recall", "host_mean_pm", "host_rmse_pm",
                "defect_accuracy")
        out["real_dev"]["si_graphene_61_frames"] = {k: m[k] for k in keys if k in m}
        out["real_dev"]["si_graphene_61_frames"]["dopant_prob_ece"] = m.get("calibration", {}).get("ece")
    if "pt" in r and "stemflow" in r["pt"].get("methods", {}):
        m = r["pt"]["methods"]["stemflow"]
        out["real_dev"]["pt_on_carbon_nitride_11_frames"] = {k: m[k] for k in ("precision", "recall", "f1",
                                                                                "support_rows") if k in m}
        out["real_dev"]["pt_on_carbon_nitride_11_frames"]["dopant_prob_ece"] = m.get("calibration", {}).get("ece")
        hp = real.parent / "heavy_atom_prob.json"          # benchmarks/heavy_atom_prob.py
        if hp.exists():     # prob of heavy atoms is fitted on these frames: the honest figure is leave-one-frame-out
            out["real_dev"]["pt_on_carbon_nitride_11_frames"]["dopant_prob_ece_leave_one_frame_out"] = \
                json.loads(hp.read_text())["ece_leave_one_frame_out"]
    ev = pd.read_csv(evaluation)
    ev = ev[ev["dose"] == dose]
    out[f"simulated_heldout_{dose:.0e}".replace("+0", "")] = {
        f"{row.lattice}/{row['class']}": round(float(row.f1), 4) for _, row in ev.iterrows()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("card", type=Path)
    ap.add_argument("--real", type=Path, default=ROOT / "benchmarks" / "results" / "real_data.json")
    ap.add_argument("--evaluation", type=Path, default=ROOT / "docs" / "evaluation" / "evaluation.csv")
    a = ap.parse_args(argv)
    card = json.loads(a.card.read_text())
    card["metrics"] = metrics(a.real.resolve(), a.evaluation.resolve())
    a.card.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(card["metrics"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
