"""Real sentence embeddings for the speed benchmarks: all-MiniLM-L6-v2 over the shared text
(LoCoMo turns, WikiText-2 sentences, tiny-shakespeare sentences), cached as one .npy file.

    python benchmarks/store_ann_data.py --data ../shared/data --model DIR --out FILE [--budget-s 300]

Embeds as many distinct sentences as the time budget allows (round robin over the three
sources, so each is represented), one thread; a second run continues where an existing FILE
ends. ``store_speed.py --real FILE`` reads the result.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from itertools import zip_longest
from pathlib import Path

import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def locomo_turns(folder: Path) -> list[str]:
    """Every turn's text of the LoCoMo conversations in a folder."""
    out = []
    for path in sorted(folder.glob("*.json")):
        conv = json.loads(path.read_text())
        for key, value in conv.items():
            if re.fullmatch(r"session_\d+", key):
                out += [t["text"] for t in value if t.get("text")]
    return out


def sentences(text: str, min_chars: int = 20) -> list[str]:
    """Sentences of running text (split after . ! ?), whitespace collapsed, short ones dropped."""
    flat = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(flat) if len(s) >= min_chars]


def corpus(data: Path) -> list[str]:
    """Distinct sentences of the three sources, interleaved."""
    wiki = " ".join(p.read_text() for p in sorted((data / "wikitext-2").glob("*.tokens")))
    wiki = re.sub(r"^ = .* = $", " ", wiki, flags=re.M)
    sources = [locomo_turns(data / "locomo"), sentences(wiki),
               sentences((data / "tinyshakespeare" / "input.txt").read_text())]
    seen: set[str] = set()
    out = []
    for group in zip_longest(*sources):
        for s in group:
            if s is not None and s not in seen:
                seen.add(s)
                out.append(s)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    texts = corpus(args.data)
    model = SentenceTransformer(args.model, device="cpu")
    parts = [np.load(args.out)] if args.out.exists() else []
    done = len(parts[0]) if parts else 0
    start = time.perf_counter()
    for b in range(done, len(texts), args.batch):
        parts.append(model.encode(texts[b : b + args.batch], batch_size=64, convert_to_numpy=True))
        if time.perf_counter() - start > args.budget_s:
            break
    vectors = np.concatenate(parts).astype(np.float32)
    np.save(args.out, vectors)
    elapsed = time.perf_counter() - start
    print(f"{len(vectors):,} of {len(texts):,} sentences embedded ({len(vectors) - done:,} in "
          f"{elapsed:.0f} s, load average {os.getloadavg()[0]:.1f}) -> {args.out}")


if __name__ == "__main__":
    main()
