"""Train a small classifier on scikit-learn's digits on the embedded aiaas backend.

    python examples/train_digits.py [--max-epochs N]

Prints the validation accuracy the remote run reached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import aiaas

# The model and data the tutorials use, defined once (tutorials/digits.py). Being
# outside site-packages, that module travels to the backend by value like __main__.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tutorials"))
from digits import DigitsClassifier, DigitsData  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=10)
    args = parser.parse_args()

    torch.manual_seed(0)
    client = aiaas.connect("local")  # starts the embedded backend, or reuses it
    run = client.train(DigitsClassifier(), datamodule=DigitsData(), max_epochs=args.max_epochs,
                       accelerator="cpu", name="digits")
    print(f"submitted {run.id}; waiting for it to finish ...")
    run.wait()
    print(f"run {run.id} {run.status.value} on {run.data.device}")
    print(f"validation accuracy: {run.final_metrics['val_acc']:.3f}")


if __name__ == "__main__":
    main()
