"""Convert the BRISQUE SVR shipped by the `brisque` package (0.2.0, Apache-2.0: a
pretrained RBF ε-SVR for Mittal et al.'s 2012 features, in libsvm text format, plus its
feature ranges) into
``src/rewardlab/rewards/data/brisque_svr.safetensors``, so rewardlab needs neither
libsvm nor pickle at run time.

    pip install --no-deps brisque==0.2.0 && python scripts/convert_brisque_model.py
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "src" / "rewardlab" / "rewards" / "data" / "brisque_svr.safetensors"


class _NoGlobals(pickle.Unpickler):
    """Reads plain containers only: the ranges file is a dict of float lists."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_libsvm_svr(text: str) -> dict:
    header, _, body = text.partition("\nSV\n")
    head = dict(line.split(" ", 1) for line in header.splitlines())
    if head["svm_type"] != "epsilon_svr" or head["kernel_type"] != "rbf":
        raise ValueError(f"expected an RBF epsilon-SVR, got {head['svm_type']} / {head['kernel_type']}")
    coef, rows = [], []
    for line in body.strip().splitlines():
        first, *pairs = line.split()
        coef.append(float(first))
        row = {int(k): float(v) for k, v in (p.split(":") for p in pairs)}
        rows.append([row.get(i, 0.0) for i in range(1, 37)])
    assert len(rows) == int(head["total_sv"])
    return {"support_vectors": torch.tensor(rows, dtype=torch.float64), "coef": torch.tensor(coef, dtype=torch.float64),
            "rho": torch.tensor([float(head["rho"])], dtype=torch.float64),
            "gamma": torch.tensor([float(head["gamma"])], dtype=torch.float64)}


def main() -> None:
    from brisque.models import MODEL_PATH

    model = read_libsvm_svr((Path(MODEL_PATH) / "svm.txt").read_text())
    ranges = _NoGlobals(io.BytesIO((Path(MODEL_PATH) / "normalize.pickle").read_bytes())).load()
    model["feature_min"] = torch.tensor(ranges["min_"], dtype=torch.float64)
    model["feature_max"] = torch.tensor(ranges["max_"], dtype=torch.float64)
    save_file(model, str(OUT), metadata={"source": "brisque 0.2.0 (Apache-2.0) pretrained SVR; BRISQUE, Mittal et al. 2012"})
    print(f"wrote {OUT}: {len(model['coef'])} support vectors")


if __name__ == "__main__":
    main()
