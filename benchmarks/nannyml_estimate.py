"""NannyML's CBPE or DLE on the chunks bench_estimation.py estimates, run in NannyML's own virtual environment.

NannyML pins lightgbm<4.6, so it cannot share the platform's environment: bench_estimation.py writes the hold-out
(reference) and the later events (analysis, without labels) as parquet and runs this file with the interpreter given
by `--nannyml`. Imports nothing from mlplatform.

    python nannyml_estimate.py FOLDER     # reads FOLDER/{reference,analysis}.parquet and meta.json, writes FOLDER/estimates.json
"""

import json
import sys
from pathlib import Path

import nannyml as nml
import pandas as pd


def main(folder: Path) -> int:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    reference = pd.read_parquet(folder / "reference.parquet")
    analysis = pd.read_parquet(folder / "analysis.parquet")
    if meta["task"] == "regression":
        estimator = nml.DLE(feature_column_names=meta["features"], y_pred="y_pred", y_true="y_true", metrics=meta["metrics"], chunk_size=meta["chunk"])
    else:
        estimator = nml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true", problem_type="classification_binary",
                             metrics=meta["metrics"], chunk_size=meta["chunk"])
    estimator.fit(reference)
    frame = estimator.estimate(analysis).filter(period="analysis").to_df()
    rows = [{"start_index": int(frame[("chunk", "start_index")].iloc[i]),
             **{m: float(frame[(m, "value")].iloc[i]) for m in meta["metrics"]}} for i in range(len(frame))]
    (folder / "estimates.json").write_text(json.dumps(rows), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
