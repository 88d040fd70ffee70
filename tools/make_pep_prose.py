"""Build ``benchmarks/core/data/pep_prose.jsonl``: English technical prose from a source other than
the calibration text, for judging a pruned language model on text it was not fitted to.

Why a second source: calibrating on text close to the evaluation text can adapt the pruned model to
that domain instead of copying the original (its perplexity can even fall below the dense
model's), so the decoder benchmark reports agreement with the original on prose from elsewhere:
Python Enhancement Proposals, which are public domain or CC0-1.0 (each PEP says which in its
Copyright section; a PEP that says neither is skipped).

Each PEP in ``PEPS`` becomes one document: its paragraphs of running text, with the reST markup
(header fields, directives, literal blocks, tables, section underlines, role markup) removed.
Read from a clone of https://github.com/python/peps (commit ba4deeb7, 2026-08-22):

    python tools/make_pep_prose.py PEPS_REPO_GIT_DIR ba4deeb7969588d937da609008d05bb83a47b1ab \\
        benchmarks/core/data/pep_prose.jsonl
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

PEPS = (257, 343, 380, 492, 498, 572)  # about 21k SmolLM2 tokens: a few minutes to score on a CPU
PERMISSIVE = ("public domain", "CC0-1.0")
MIN_PARAGRAPH_WORDS = 12
ROLE = re.compile(r":[a-z]+:`([^`<]*?)(?:\s*<[^>]*>)?`")  # :pep:`8`, :ref:`text <target>`
LINK = re.compile(r"`([^`<]+?)(?:\s*<[^>]*>)?`_{1,2}")  # `text <url>`_
LITERAL = re.compile(r"``([^`]*)``")
FOOTNOTE = re.compile(r"\s*\[(?:#|\d)[^\]]*\]_")  # [#]_, [1]_
UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")


def pep_text(git_dir: str, commit: str, number: int) -> str:
    path = f"peps/pep-{number:04d}.rst"
    return subprocess.run(
        ["git", "-C", git_dir, "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def is_permissive(text: str) -> bool:
    copyright_section = text.rsplit("Copyright\n=========", 1)[-1]
    return any(word in copyright_section for word in PERMISSIVE)


def prose(text: str) -> list[str]:
    """Paragraphs of running text: blank-line separated blocks that are not indented (literal
    blocks, directive bodies, quotes), not tables or directives, after the header fields."""
    body = text.split("\n\n", 1)[1] if ":" in text.split("\n", 1)[0] else text
    body = body.rsplit("Copyright\n=========", 1)[0]
    paragraphs = []
    for block in re.split(r"\n\s*\n", body):
        lines = [line for line in block.split("\n") if not UNDERLINE.match(line)]
        if not lines or lines[0].startswith((" ", "\t", "..", "+", "|", "=")):
            continue
        paragraph = " ".join(line.strip() for line in lines)
        paragraph = LITERAL.sub(r"\1", LINK.sub(r"\1", ROLE.sub(r"\1", FOOTNOTE.sub("", paragraph)))).replace("::", ":")
        if len(paragraph.split()) >= MIN_PARAGRAPH_WORDS:
            paragraphs.append(paragraph)
    return paragraphs


def main(git_dir: str, commit: str, out: str) -> None:
    documents = []
    for number in PEPS:
        text = pep_text(git_dir, commit, number)
        if is_permissive(text):
            documents.append({"text": "\n".join(prose(text)), "pep": number})
    Path(out).write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents), encoding="utf-8")
    print(f"{len(documents)} PEPs, {sum(len(d['text'].split()) for d in documents)} words")


if __name__ == "__main__":
    main(*sys.argv[1:4])
