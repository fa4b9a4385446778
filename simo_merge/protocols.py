"""Evaluation protocols: how a run feeds, augments, scores and selects, named as one setting.

``data.protocol`` picks one. ``"default"`` is this toolkit's choice; ``"simo"`` reproduces the SIMO code
(d23845jg/simo_merging @ 2fcaa49a) formula for formula, so its numbers compare with the paper's tables.
A dataset with protocol-specific splits or target encodings (NYUv2, Cityscapes, Taskonomy) reads the
same name; the README's "protocol=simo vs default" table says why each default is what it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: what each field may be (checked when a Protocol is made)
CHOICES: dict[str, tuple[str, ...]] = {
    # "encoder": the encoder applies its own mean/std to [0, 1] images; "two_x_minus_one": 2x - 1
    "normalisation": ("encoder", "two_x_minus_one"),
    # "resize_flip": resize to data.size + h-flip; "scale_crop_flip": SIMO's random scale {1, 1.2, 1.5},
    # crop to data.size, h-flip, depth / disparity divided by the scale
    "augmentation": ("resize_flip", "scale_crop_flip"),
    # "resize": evaluate at data.size; "native_pad": evaluate at the stored size, centre-padded to the
    # patch grid, predictions cropped back
    "eval_size": ("resize", "native_pad"),
    # "pooled": errors averaged over all valid pixels; "per_batch": running mean of per-batch means
    "aggregation": ("pooled", "per_batch"),
    # which pixels a metric counts. "masked": the dataset's f"{task}_mask" and finite targets (depth > 0,
    # normals of non-zero length, both normals unit-normalised); "simo": SIMO's rules on the target alone
    # (segmentation labels in [0, C), other dense targets whose channels don't sum to 0, normals as given)
    "valid_pixels": ("masked", "simo"),
    # ΔMTL over "all" metrics of a task or its one "primary" metric (SIMO eq. 2)
    "delta_metrics": ("all", "primary"),
    # λ chosen by "normperf" (val score / val Individual) or "delta_mtl" (val ΔMTL vs fixed baselines)
    "selection": ("normperf", "delta_mtl"),
}


@dataclass(frozen=True)
class Protocol:
    """One protocol's choices; see :data:`CHOICES` for what each field means."""

    name: str
    normalisation: str
    augmentation: str
    augment_val: bool  # whether the validation split is augmented as train is (SIMO: yes)
    eval_size: str
    aggregation: str
    valid_pixels: str
    delta_metrics: str
    selection: str

    def __post_init__(self) -> None:
        for field_name, allowed in CHOICES.items():
            value = getattr(self, field_name)
            if value not in allowed:
                raise ValueError(
                    f"protocol {self.name!r}: {field_name} must be one of {allowed}, got {value!r}"
                )

    def record(self) -> dict[str, object]:
        """The choices as a plain dict, for sidecars."""
        return asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    "default": Protocol(
        name="default",
        normalisation="encoder",
        augmentation="resize_flip",
        augment_val=False,
        eval_size="resize",
        aggregation="pooled",
        valid_pixels="masked",
        delta_metrics="all",
        selection="normperf",
    ),
    "simo": Protocol(
        name="simo",
        normalisation="two_x_minus_one",
        augmentation="scale_crop_flip",
        augment_val=True,
        eval_size="native_pad",
        aggregation="per_batch",
        valid_pixels="simo",
        delta_metrics="primary",
        selection="delta_mtl",
    ),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; ValueError naming the known ones otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
