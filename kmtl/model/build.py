"""`build_model`: the one call that assembles a multi-task model."""

from kmtl.model.multitask_model import MultiTaskModel


def build_model(encoder, tasks, *, pooling: str = "mean", sharing: str = "full", lora_rank: int = 8,
                name: str = "kmtl") -> MultiTaskModel:
    """Assemble the shared encoder and one head per task into a `MultiTaskModel`.

    Args:
        encoder: from `kmtl.load_backbone` (or a keras-hub backbone).
        tasks: `kmtl.tasks.Task` objects with their label sets known (call
            ``task.fit_labels(train_examples)`` first for inferred label sets).
        pooling: ``mean`` or ``cls`` sentence vector for sentence-level heads.
        sharing: ``full``, ``frozen`` or ``lora``.
        lora_rank: LoRA rank when ``sharing="lora"``.
        name: the Keras model name.

    Example:
        >>> tasks = [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
        ...          kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER", "LOC"]))]
        >>> model = kmtl.build_model(kmtl.load_backbone(), tasks)
        >>> sorted(model.output.keys())
        ['ner', 'sentiment']
    """
    return MultiTaskModel(encoder, tasks, pooling=pooling, sharing=sharing, lora_rank=lora_rank, name=name)
