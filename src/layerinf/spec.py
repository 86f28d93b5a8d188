"""``ModuleSpec``: the name, owner and shape of one influence module.

A neutral, dependency-free module (no torch, no transformers) so that storage, scoring and math code can
describe modules without importing the model stack. ``layerinf.model.inventory`` builds these from a live
model; gradient stores persist them with ``to_dict`` / ``from_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModuleSpec:
    """One influence module: a single trainable (or WE) parameter tensor and where it lives."""

    name: str  # canonical: L03.query.A, WE, CL.classifier.weight
    param_name: str  # torch parameter name in the (peft) model
    module_name: str  # the nn.Module that owns the parameter (hooked by collect)
    attr: str  # "weight" or "bias"
    kind: str  # query_A | query_B | value_A | value_B | we | cl
    layer: int | None
    shape: tuple[int, ...] = field(default_factory=tuple)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["numel"] = self.numel
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModuleSpec":
        """Inverse of ``to_dict`` (extra keys such as ``numel`` are ignored)."""
        layer = d.get("layer")
        return cls(
            name=str(d["name"]),
            param_name=str(d.get("param_name", "")),
            module_name=str(d.get("module_name", "")),
            attr=str(d.get("attr", "weight")),
            kind=str(d["kind"]),
            layer=None if layer is None else int(layer),
            shape=tuple(int(s) for s in d.get("shape", ())),
        )


__all__ = ["ModuleSpec"]
