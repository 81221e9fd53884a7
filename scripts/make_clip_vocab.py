"""Writes the CLIP BPE vocabulary shipped in model_loaders/data/ (vocab.json, merges.txt for transformers'
CLIPTokenizer) from the vocabulary file open_clip ships (bpe_simple_vocab_16e6.txt.gz).

    python scripts/make_clip_vocab.py [path/to/bpe_simple_vocab_16e6.txt.gz]

Without an argument the file is taken from the open_clip_torch wheel fetched by tests/cinematic_testing/refs.py.
The result is data (the 49,408-entry vocabulary and its 48,894 merges), the same that OpenAI CLIP, open_clip and
transformers use; the test suite checks the token ids against open_clip.tokenize.
"""

import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "model_loaders" / "data"


def byte_alphabet() -> list[str]:
    """GPT-2/CLIP's reversible mapping of the 256 byte values onto printable characters, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    # CLIP orders the vocabulary: printable bytes first (in order), then the remapped ones.
    return [mapping[b] for b in printable] + [mapping[b] for b in range(256) if b not in printable]


def main(source: Path):
    lines = gzip.open(source, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    alphabet = byte_alphabet()
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    print(f"wrote {OUT / 'vocab.json'} ({len(vocab)} tokens) and {OUT / 'merges.txt'} ({len(merges)} merges)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        src = Path(sys.argv[1])
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from cinematic_testing import refs

        src = refs._fetch(*refs.OPEN_CLIP) / "open_clip" / "bpe_simple_vocab_16e6.txt.gz"
    main(src)
