"""Write recipes/prune_compensate_recipes/mkgc/downloads.json: where each dataset file comes from and its SHA-256.

The checksums are of the files' plain-text content, computed from a complete local copy of the
datasets (``--data-dir``; every file there is byte-for-byte the public repository's file, some
stored gzipped), so ``pc data download`` can verify what it fetches.

    python tools/make_download_registry.py --data-dir DIR
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from pathlib import Path

NATIVE = ("zjukg/NATIVE", "c5c864ec4749cbe70f654faa93361822c64bb353")
MMKB = ("mniepert/mmkb", "a0fb019b0cbe5ba9f2a18d3ef85d1bfc235ac885")
KG_BERT = ("yao8839836/kg-bert", "62b76ed5652bf3da5a355cbe9c1109f58290756f")
VILLMOW = ("villmow/datasets_knowledge_embedding", "master")
GRAIL = ("kkteru/grail", "master")
INDUCTIVE = [f"{g}_v{v}{s}" for g in ("fb237", "WN18RR", "nell") for v in range(1, 5) for s in ("", "_ind")]


def sources() -> dict[str, tuple[tuple[str, str], str]]:
    """{path under the data root (``.gz`` = stored gzipped): ((repo, ref), path in the repo)}."""
    files: dict[str, tuple[tuple[str, str], str]] = {}
    for name in ("DB15K", "MKG-W", "MKG-Y"):
        for stem in ("entity2id", "relation2id", "train2id", "valid2id", "test2id"):
            files[f"{name}/{stem}.txt"] = (NATIVE, f"benchmarks/{name}/{stem}.txt")
    files["mmkb/DB15K_SameAsLink.txt"] = (MMKB, "DB15K/DB15K_SameAsLink.txt")
    files["FB15k-237/entity2text.txt"] = (KG_BERT, "data/FB15k-237/entity2text.txt")
    files["FB15k-237/relation2text.txt"] = (KG_BERT, "data/FB15k-237/relation2text.txt")
    files["FB15k-237/entity2wikidata.json.gz"] = (VILLMOW, "FB15k-237/entity2wikidata.json")
    files["WN18RR/entity2text.txt.gz"] = (KG_BERT, "data/WN18RR/entity2text.txt")
    files["WN18RR/relation2text.txt"] = (KG_BERT, "data/WN18RR/relation2text.txt")
    for split in INDUCTIVE:
        for part in ("train", "valid", "test"):
            files[f"inductive/{split}/{part}.txt"] = (GRAIL, f"data/{split}/{part}.txt")
    return files


def content(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "recipes/prune_compensate_recipes/mkgc/downloads.json",
    )
    args = parser.parse_args()
    registry = {}
    for target, ((repo, ref), path) in sources().items():
        data = content(args.data_dir / target)
        registry[target] = {
            "repo": repo,
            "ref": ref,
            "path": path,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
    args.out.write_text(json.dumps(registry, indent=1) + "\n", encoding="utf-8")
    print(f"{len(registry)} files written to {args.out}")


if __name__ == "__main__":
    main()
