"""Which class each image is explained for.

    Targets(spec, n_images, class_names).pick(logits) -> (N, k) class indices

A spec is one target for every image (None: the top-1; an index; a label; a
`Target` with top_k for the top-k classes) or one per image (a sequence of
None / index / label / `Target` without top_k), so a batch can explain each
image for its own true class. Labels are matched by `class_index`: an exact
match wins; otherwise a case-insensitive one; a label that names several
classes either way (ImageNet lists 'crane' twice; a model may have both
'Tiger Cat' and 'tiger cat') is refused, listing the candidates, rather than
resolved silently to one of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

from ..errors import InvalidArgument, closest, closest_metadata, shown

SHOWN_CANDIDATES = 8  # of an ambiguous label's classes, named in the message


@dataclass(frozen=True)
class Target:
    """Which class to explain: an index, a label, or (neither) the top-k
    predicted classes (top_k 0 or 1: the top-1)."""

    index: int | None = None
    label: str | None = None
    top_k: int = 0


One = Union[None, int, str, Target]
TargetLike = Union[One, Sequence[One]]


def class_index(label: str, class_names: Sequence[str], field: str = "target.label") -> int:
    """The index of the class called `label`: the one exact match, else the one
    case-insensitive match. InvalidArgument (reason LABEL_AMBIGUOUS, metadata
    `candidates` "index:name,...") when several classes match, LABEL_NOT_FOUND
    with the closest names when none does; `field` names the request field."""
    names = list(class_names)
    exact = [i for i, n in enumerate(names) if n == label]
    folded = label.casefold()
    matches = exact or [i for i, n in enumerate(names) if n.casefold() == folded]
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = ", ".join(f"{i} {shown(names[i])}" for i in matches[:SHOWN_CANDIDATES])
        more = f" and {len(matches) - SHOWN_CANDIDATES} more" if len(matches) > SHOWN_CANDIDATES else ""
        how = "exactly" if exact else "case-insensitively"
        raise InvalidArgument(
            f"target label {shown(label)} is ambiguous: it matches {len(matches)} classes {how} ({listed}{more}); "
            f"give the class index" + ("" if exact else ", or the label exactly as in class_names"),
            reason="LABEL_AMBIGUOUS", field=field,
            metadata={"candidates": ",".join(f"{i}:{names[i][:64]}" for i in matches[:SHOWN_CANDIDATES])})
    raise InvalidArgument(f"no class labelled {shown(label)}{closest(label, names)}; give a label from the model's "
                          "class_names or an index", reason="LABEL_NOT_FOUND", field=field,
                          metadata=closest_metadata(label, names))


class Targets:
    """A target spec checked against a model's classes, then resolved against
    its logits per image (`pick`). Raises InvalidArgument naming the field:
    `target.index`, `target.label`, `target.top_k`, `targets`, `targets[i].label`."""

    def __init__(self, spec: TargetLike, n_images: int, class_names: Sequence[str] | None):
        self.class_names = list(class_names) if class_names is not None else None
        self.n = n_images
        self.per_image: list[int | None] | None = None  # one class per image; None: that image's top-1
        self.index: int | None = None  # one class for all
        self.k = 1  # else the top-k
        if not isinstance(spec, (str, Target)) and not hasattr(spec, "__index__") and hasattr(spec, "__iter__"):
            spec = list(spec)  # one per image: a list, a tuple, an array of indices
            if len(spec) != n_images:
                raise InvalidArgument(
                    f"{len(spec)} targets for {n_images} images: give one target per image, in the images' order "
                    f"(or one `target` for all of them)", reason="TARGET_COUNT", field="targets",
                    metadata={"targets": str(len(spec)), "images": str(n_images)})
            self.per_image = [self._one(t, f"targets[{i}]") for i, t in enumerate(spec)]
            return
        spec = self._target(spec)
        if spec.index is None and not spec.label:
            if spec.top_k < 0:
                raise InvalidArgument(f"top_k must be >= 1 (or 0 for the top-1); got {spec.top_k}", field="target.top_k")
            self.k = max(1, spec.top_k)
            if self.class_names is not None and self.k > len(self.class_names):
                raise InvalidArgument(f"top_k must be between 1 and {len(self.class_names)} (the model's class count); "
                                      f"got {self.k}", field="target.top_k")
            return
        self.index = self._one(spec, "target")

    @staticmethod
    def _target(spec: One) -> Target:
        if spec is None:
            return Target()
        if isinstance(spec, bool):
            raise InvalidArgument("target must be a class index, a label, or top-k", field="target")
        if isinstance(spec, str):
            return Target(label=spec)
        if isinstance(spec, Target):
            return spec
        if hasattr(spec, "__index__"):  # int, numpy integers
            return Target(index=int(spec))
        raise InvalidArgument(f"target must be a class index, a label, or top-k; got a {type(spec).__name__}",
                              field="target")

    def _one(self, spec: One, field: str) -> int | None:
        """One image's class (None: its top-1), checked against the class names."""
        spec = self._target(spec)
        if spec.index is not None and spec.label:
            raise InvalidArgument("give a target index or a label, not both", field=field)
        if spec.top_k > 1:
            raise InvalidArgument(f"{field}: a per-image target is one class (an index or a label); top_k "
                                  f"{spec.top_k} is taken only by `target`, for every image", field=f"{field}.top_k")
        if spec.label:
            if self.class_names is None:
                raise InvalidArgument(f"target label {shown(spec.label)}: this model has no class names; give a class "
                                      f"index", field=f"{field}.label")
            return class_index(spec.label, self.class_names, f"{field}.label")
        if spec.index is not None:
            return self._check_index(int(spec.index), field=f"{field}.index")
        return None

    def _check_index(self, i: int, num_classes: int | None = None, field: str = "target.index") -> int:
        n = num_classes if num_classes is not None else (len(self.class_names) if self.class_names is not None else None)
        if i < 0 or (n is not None and i >= n):
            raise InvalidArgument(f"target class {i} is out of range: the model has {n} classes (0..{(n or 1) - 1})"
                                  if n is not None else f"target class {i} must be >= 0", field=field)
        return i

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, k) long tensor of target classes on the logits' device."""
        num_classes = logits.shape[1]
        if self.per_image is not None:
            for i, v in enumerate(self.per_image):
                if v is not None:
                    self._check_index(v, num_classes, field=f"targets[{i}].index")
            chosen = torch.tensor([-1 if v is None else v for v in self.per_image], device=logits.device,
                                  dtype=torch.long)[:, None]
            if any(v is None for v in self.per_image):  # those images' top-1, picked as `target` unset picks it
                chosen = torch.where(chosen < 0, logits.topk(1, dim=1).indices, chosen)
            return chosen
        if self.index is not None:
            self._check_index(self.index, num_classes)
            return torch.full((logits.shape[0], 1), self.index, device=logits.device, dtype=torch.long)
        if self.k > num_classes:
            raise InvalidArgument(f"top_k must be between 1 and {num_classes} (the model's class count); got {self.k}",
                                  field="target.top_k")
        return logits.topk(self.k, dim=1).indices

    def label(self, i: int) -> str:
        if self.class_names is not None and 0 <= i < len(self.class_names):
            return self.class_names[i]
        return str(i)
