"""Hard parameter sharing: the backbone fine-tuned by every task, or frozen under the heads."""

from __future__ import annotations

import keras

from kmtl.sharing.base import Sharing


@keras.saving.register_keras_serializable(package="kmtl")
class FullFineTuning(Sharing):
    """Hard parameter sharing (Caruana, "Multitask Learning", Machine Learning 1997): one
    backbone, every weight fine-tuned by the sum of the task losses; one head per task.

    The strongest mode when the tasks help each other and there is data enough; the most
    trainable parameters.

    Example:
        >>> model = kmtl.build_model(encoder, tasks, sharing="full")
    """

    name = "full"
    choice_order = 0  # position in lists of choices (`kmtl.registry`)


@keras.saving.register_keras_serializable(package="kmtl")
class FrozenBackbone(Sharing):
    """The pretrained backbone frozen as a feature extractor; only the task heads train.

    The fewest trainable parameters and the fastest steps; no task can hurt another through
    the shared weights (nor help it).

    Example:
        >>> model = kmtl.build_model(encoder, tasks, sharing="frozen")
        >>> kmtl.sharing.trainable_parameter_counts(model)["parts"]["backbone"]["trainable"]
        0
    """

    name = "frozen"
    choice_order = 1

    def prepare(self, backbone, num_tasks: int) -> None:
        backbone.trainable = False
