"""Built-in `image_folder` task: a small ResNet classifying the images of the spec's `data:`
section (one subfolder per class, PNG or JPEG; a local folder, NFS or S3), streamed by Ray
Data (ingest.py), which decodes, resizes and normalises them.

`python benchmarks/make_image_dataset.py OUT --per-class N` writes such a folder from
scikit-learn's digits; `search_spaces/image_folder.yaml` searches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

from .base import SupervisedTask, accuracy_sum
from .params import COUNT, PROBABILITY, Bounds, OneOf

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..loop import SumMetrics


class ImageFolder(SupervisedTask):
    """Config: channels (16), stages (3), dropout (0), augment (false: random shifts and zoom
    of each training batch), and lr, batch_size, weight_decay, lr_schedule as every task."""

    val_metrics: ClassVar[SumMetrics] = {"val_accuracy": accuracy_sum}
    data_formats: ClassVar[tuple[str, ...]] = ("images",)
    needs_data: ClassVar[bool] = True
    param_rules = {**SupervisedTask.param_rules, "channels": COUNT, "stages": Bounds(1, 5, integer=True),
                   "dropout": PROBABILITY, "augment": OneOf((False, True))}

    def build_model(self, config: dict[str, Any], info: dict | None = None) -> nn.Module:
        from .resnet import small_resnet

        if info is None:
            raise ValueError("image_folder: needs the spec's data: section (format: images) to size its model")
        stages = int(config.get("stages", 3))
        if not 1 <= stages <= 5:
            raise ValueError(f"image_folder: stages ({stages}) must be 1 to 5")
        return small_resnet(info["input_shape"][0], len(info["classes"]), channels=int(config.get("channels", 16)),
                            stages=stages, dropout=float(config.get("dropout", 0.0)))

    def augmentation(self, config: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        if not config.get("augment", False):
            return None
        from .resnet import shift_and_scale

        return shift_and_scale
