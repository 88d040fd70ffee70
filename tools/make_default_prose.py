"""Build the embedded prose sets for language models from the raw WikiText-2 test split.

Why: a causal LM (or a VLM's text decoder) is pruned to keep its language, so it is calibrated and
evaluated on general English prose, not on the verbalised triples the MKGC recipes read. WikiText-2
is the set llama.cpp's ``llama-perplexity``, lm-eval's ``wikitext`` task and the layer-pruning
papers report on. Only its raw *test* split is shipped here (``wiki.test.raw``, 60 articles), cut
by article into three disjoint parts:

* ``default_calibration_prose.jsonl`` (shipped): the paragraphs of the even-numbered articles
  (0, 2, 4, ...), one sample each, a long one cut at sentence ends into samples of at most 150 words;
* ``default_eval_prose.jsonl`` (shipped): articles 1, 5, 9, ..., one document each, as in the
  raw file (headings included, one line per paragraph), read as a perplexity tool reads them;
* ``wikitext2_valid_articles.jsonl`` (benchmarks only): articles 3, 7, 11, ..., the same way: a
  validation part to select settings on, so that the evaluation part is only ever reported.

Source and licence: WikiText-2 (Merity et al., 2016, *Pointer Sentinel Mixture Models*), the
``wikitext-2-raw-v1`` configuration of ``Salesforce/wikitext``; text from Wikipedia under
CC BY-SA 3.0 (and GFDL). The shipped files stay under that licence (see
``prune_compensate/data/PROSE_LICENSE.md``). The file read here is byte-identical to the upstream
``test`` split; the copy used was the one committed as ``data/wikitext-2-raw/wiki.test.raw`` in the
public GitHub repository ``Tylogi/TyloQuant`` (commit ``aa7023b``), checked against its SHA-256.
That copy holds the split's 2,891 non-empty rows, each as one CRLF-ended line (the upstream's blank
rows between paragraphs are left out); the text of every row is the upstream's:

    python tools/make_default_prose.py wiki.test.raw prune_compensate/data benchmarks/core/data
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

RAW_SHA256 = "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"
ARTICLE_HEADING = re.compile(r"^ = [^=].* = $")  # " = Title = "; sections are " = = Section = = "
MIN_PARAGRAPH_WORDS = 20  # shorter lines are captions, list items and table debris
MAX_SAMPLE_WORDS = 150  # about 200 tokens: a longer paragraph is cut at sentence ends, so that
# calibration at the default --max-length 256 reads all of it


def articles(raw: str) -> list[list[str]]:
    """The raw text's lines, grouped by article (a group starts at each top-level heading)."""
    groups: list[list[str]] = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        if ARTICLE_HEADING.match(line) or not groups:
            groups.append([])
        groups[-1].append(line)
    return groups


def paragraphs(article: list[str]) -> list[str]:
    """Body paragraphs of an article: lines that are no heading and have ``MIN_PARAGRAPH_WORDS`` words."""
    return [
        line.strip()
        for line in article
        if not line.strip().startswith("=") and len(line.split()) >= MIN_PARAGRAPH_WORDS
    ]


def sentence_chunks(paragraph: str, max_words: int = MAX_SAMPLE_WORDS) -> list[str]:
    """``paragraph`` cut after whole sentences (WikiText writes `` . ``) into chunks of at most
    ``max_words`` words (a longer single sentence stays whole)."""
    pieces = [s for s in paragraph.split(" . ") if s.strip()]
    sentences = [s + " ." for s in pieces[:-1]] + pieces[-1:]  # the last piece keeps its own ending
    chunks: list[list[str]] = [[]]
    for sentence in sentences:
        if chunks[-1] and sum(len(s.split()) for s in chunks[-1]) + len(sentence.split()) > max_words:
            chunks.append([])
        chunks[-1].append(sentence)
    return [" ".join(chunk) for chunk in chunks]


def split_prose(raw: str) -> tuple[list[str], list[str], list[str]]:
    """(calibration paragraphs of articles 0, 2, 4, ..., evaluation documents 1, 5, 9, ...,
    validation documents 3, 7, 11, ...)."""
    groups = articles(raw)
    calibration = [c for group in groups[0::2] for p in paragraphs(group) for c in sentence_chunks(p)]
    evaluation = ["\n".join(group).strip("\n") for group in groups[1::4]]
    validation = ["\n".join(group).strip("\n") for group in groups[3::4]]
    return calibration, evaluation, validation


def _write_jsonl(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")


def main(raw_path: str, out_dir: str, valid_dir: str) -> None:
    data = Path(raw_path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != RAW_SHA256:
        raise SystemExit(f"{raw_path} is not the raw WikiText-2 test split (SHA-256 {digest}, expected {RAW_SHA256})")
    calibration, evaluation, validation = split_prose(data.decode("utf-8"))
    out = Path(out_dir)
    _write_jsonl(out / "default_calibration_prose.jsonl", calibration)
    _write_jsonl(out / "default_eval_prose.jsonl", evaluation)
    _write_jsonl(Path(valid_dir) / "wikitext2_valid_articles.jsonl", validation)
    print(f"{len(calibration)} calibration samples; {len(evaluation)} + {len(validation)} articles (eval, valid)")


if __name__ == "__main__":
    main(*sys.argv[1:4])
