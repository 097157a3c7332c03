"""What encryption at rest adds to the load: full Adult as a user's CSV files, plaintext against age-encrypted.

    python bench/encryption.py              # 15 rounds
    python bench/encryption.py --rounds 31

Adult's shipped training and test files (48,842 rows, read with `humane.data.datasets.read_adult`) are written as
CSV under data/raw/bench/ of a temporary folder, and encrypted for one new X25519 recipient with
`humane.privacy.encryption`. In one process, each round reads both sources with `humane.data.sources.load` (what
the load stage calls: parse, label and number checks), once as plaintext (data.encryption: none) and once as the
.age files (data.encryption: age, identity from HUMANE_AGE_IDENTITY), in alternating order; and times decryption
alone (both files, in memory). Prints the median of the rounds, the file sizes and a JSON line; nothing here is a
test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from humane.data.datasets import ADULT_CATEGORIES, ADULT_RANGES, read_adult  # noqa: E402
from humane.data.sources import load  # noqa: E402
from humane.pipeline.params import load_params  # noqa: E402
from humane.privacy.encryption import decrypt, encrypt_file, keygen, parse_identity, read_recipients  # noqa: E402

DATA_DIR = "data/raw/bench"
SPLITS = (("train", "adult.data"), ("test", "adult.test"))


def prepare(root: Path) -> tuple[str, dict[str, int]]:
    """Write Adult's files as CSV, encrypt them for a new identity; return the identity and the file sizes."""
    data = root / DATA_DIR
    data.mkdir(parents=True)
    recipient = keygen(root / "identity.txt")
    (root / "recipients.txt").write_text(recipient + "\n")
    sizes = {}
    for split, file in SPLITS:
        plain = data / f"{split}.csv"
        read_adult(ROOT / "data/raw/adult" / file).to_csv(plain, index=False)
        age = encrypt_file(plain, read_recipients(root / "recipients.txt"))
        sizes[f"{split}.csv"], sizes[f"{split}.csv.age"] = plain.stat().st_size, age.stat().st_size
    return (root / "identity.txt").read_text(), sizes


def spec(encrypted: bool):
    """The data section for the bench files: Adult's column roles, labels and ranges, as a user declares them."""
    suffix = ".age" if encrypted else ""
    return load_params(ROOT / "params.yaml").data.model_copy(
        update={
            "name": "adultbench",
            "source": f"{DATA_DIR}/train.csv{suffix}",
            "test_source": f"{DATA_DIR}/test.csv{suffix}",
            "labels": list(ADULT_CATEGORIES["income"]),
            "numeric": list(ADULT_RANGES),
            "categorical": [c for c in ADULT_CATEGORIES if c != "income"],
            "encryption": "age" if encrypted else "none",
        }
    )


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(root: Path, rounds: int) -> dict[str, list[float]]:
    """Seconds per round: load as plaintext, load as age files, decryption alone."""
    plain, age = spec(False), spec(True)
    identity = parse_identity(os.environ["HUMANE_AGE_IDENTITY"], "bench")
    files = [root / DATA_DIR / f"{split}.csv.age" for split, _ in SPLITS]
    rows = {len(t) for t in (load(plain, root).train, load(age, root).train)}  # warm-up; both read the same rows
    assert len(rows) == 1
    times: dict[str, list[float]] = {"plaintext": [], "encrypted": [], "decrypt_only": []}
    for i in range(rounds):
        order = ("plaintext", "encrypted") if i % 2 == 0 else ("encrypted", "plaintext")
        for name in order:
            times[name].append(timed(lambda n=name: load(plain if n == "plaintext" else age, root)))
        times["decrypt_only"].append(timed(lambda: [decrypt(f, identity) for f in files]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="humane-bench-enc-") as folder:
        root = Path(folder)
        os.environ["HUMANE_AGE_IDENTITY"], sizes = prepare(root)
        times = measure(root, args.rounds)
    median = {name: statistics.median(values) for name, values in times.items()}
    added = median["encrypted"] - median["plaintext"]
    print(f"full Adult (48,842 rows, 2 files), median of {args.rounds} rounds, one process:")
    print(f"  load, plaintext CSV      {median['plaintext']:.3f} s")
    share = added / median["plaintext"]
    print(f"  load, age-encrypted CSV  {median['encrypted']:.3f} s  ({added:+.3f} s, {share:+.1%})")
    print(f"  decryption alone         {median['decrypt_only']:.3f} s")
    for name, size in sizes.items():
        print(f"  {name:<16} {size:>10,} bytes")
    overhead = sum(v for k, v in sizes.items() if k.endswith(".age")) / sum(
        v for k, v in sizes.items() if not k.endswith(".age")
    )
    print(f"  ciphertext / plaintext size: {overhead:.5f}")
    print(json.dumps({"rounds": args.rounds, "median_s": median, "added_s": added, "sizes": sizes, "times": times}))


if __name__ == "__main__":
    main()
