"""`build_model`: the one call that assembles a multi-task model."""

from kmtl.model.multitask_model import MultiTaskModel


def build_model(encoder, tasks, *, pooling: str = "mean", sharing="full", lora_rank: int = 8,
                lora_alpha=None, lora_targets=None, adapter_size: int = 64, name: str = "kmtl",
                max_length: int = 128) -> MultiTaskModel:
    """Assemble the shared encoder and one head per task into a `MultiTaskModel`.

    Args:
        encoder: from `kmtl.load_backbone` (or a keras-hub backbone).
        tasks: `kmtl.tasks.Task` objects with their label sets known (call
            ``task.fit_labels(train_examples)`` first for inferred label sets).
        pooling: ``mean`` or ``cls`` sentence vector for sentence-level heads.
        sharing: ``full``, ``frozen``, ``lora``, ``adapters`` or a `kmtl.sharing.Sharing`
            object (see `kmtl.sharing`).
        lora_rank: LoRA rank when ``sharing="lora"``.
        lora_alpha: LoRA scale numerator (update scaled by ``alpha / rank``); default: the rank.
        lora_targets: names of the backbone layers LoRA adapts; default ``["query", "value"]``.
        adapter_size: adapter bottleneck width when ``sharing="adapters"``.
        name: the Keras model name.
        max_length: sequence length of the preprocessor attached as ``model.preprocessor``
            (when ``encoder`` has a tokenizer), which ``model.predict`` uses on raw text.

    Example:
        >>> tasks = [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
        ...          kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER", "LOC"]))]
        >>> model = kmtl.build_model(kmtl.load_backbone(), tasks)
        >>> sorted(model.output.keys())
        ['ner', 'sentiment']
        >>> adapted = kmtl.build_model(kmtl.load_backbone(), tasks, sharing="adapters", adapter_size=32)
    """
    model = MultiTaskModel(encoder, tasks, pooling=pooling, sharing=sharing, lora_rank=lora_rank,
                           lora_alpha=lora_alpha, lora_targets=lora_targets, adapter_size=adapter_size, name=name)
    if hasattr(encoder, "preprocessor"):
        model.preprocessor = encoder.preprocessor(max_length)
    return model
