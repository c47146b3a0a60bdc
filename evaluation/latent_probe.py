"""Latent probe (essential forgetting, second measure): is the answer still linearly readable inside?

The likelihood probe asks whether the model still *says* the right answer first; it falls when the readout
to answer words is overwritten even though the features survive (a pilot: Shape's likelihood probe fell to
chance after Word while a linear probe still decoded shape at 83-85 %). This probe reads the final hidden
state of the last prompt token (the position that emits the first answer token), fits a multinomial logistic
regression on it right after the task's own stage, and reapplies that classifier *unchanged* after every later
stage: a fall means the representation moved, not only the words.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from sefe.models.family import FAMILY, ModelFamily

NO_LIMIT = 1 << 62  # a prompt is never cut


class LinearProbe(BaseModel):
    """A fitted classifier: standardise with `mean`/`std`, then the argmax of `weight @ x + bias`."""

    model_config = ConfigDict(extra="forbid")

    classes: list[str]
    mean: list[float]
    std: list[float]
    weight: list[list[float]]  # classes x features
    bias: list[float]
    fit_accuracy: float  # percent, on the items it was fitted on

    def save(self, path: Path) -> None:
        from sefe.atomic import atomic_write_bytes

        atomic_write_bytes(path, orjson.dumps(self.model_dump(mode="json")))

    @classmethod
    def load(cls, path: Path) -> LinearProbe:
        return cls.model_validate(orjson.loads(Path(path).read_bytes()))

    def predict(self, features: Any) -> list[str]:
        import torch

        x = (features.float() - torch.tensor(self.mean)) / torch.tensor(self.std)
        logits = x @ torch.tensor(self.weight).T + torch.tensor(self.bias)
        return [self.classes[int(j)] for j in logits.argmax(-1)]

    def hits(self, features: Any, labels: Sequence[str]) -> list[int]:
        """Per item, 1 when the probe predicts its label (a label it never saw counts as wrong)."""
        return [int(p == y) for p, y in zip(self.predict(features), labels, strict=True)] if labels else []

    def accuracy(self, features: Any, labels: Sequence[str]) -> float:
        """Percent of items whose label the probe predicts."""
        return 100.0 * sum(self.hits(features, labels)) / len(labels) if labels else 0.0


def fit_probe(
    features: Any, labels: Sequence[str], weight_decay: float = 1e-2, steps: int = 200
) -> LinearProbe:
    """Multinomial logistic regression (L-BFGS, a little L2) on centred, scaled features (deterministic)."""
    import torch

    classes = sorted(set(labels))
    x = features.float()
    # one scale for all dimensions (not one each): a near-constant dimension, scaled up, would let a
    # later stage's small shift there swamp the classifier
    mean = x.mean(0)
    std = ((x - mean).pow(2).mean().sqrt().clamp(min=1e-6)).expand(x.shape[1])
    z = (x - mean) / std
    y = torch.tensor([classes.index(lab) for lab in labels])
    w = torch.zeros(len(classes), z.shape[1], requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.T + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    probe = LinearProbe(
        classes=classes,
        mean=mean.tolist(),
        std=std.tolist(),
        weight=w.detach().tolist(),
        bias=b.detach().tolist(),
        fit_accuracy=0.0,
    )
    probe.fit_accuracy = probe.accuracy(features, labels)
    return probe


def last_prompt_states(
    model: Any,
    processor: Any,
    prompts: Sequence[tuple[str, Any]],
    batch_size: int = 64,
    family: ModelFamily | None = None,
) -> Any:
    """Final-layer hidden state of the last prompt token of each `(question, PIL image or None)`
    (n x hidden). The prompt is built as in training, through `family`'s `encode` and `collate` (LLaVA by
    default: the release's tokenisation); the position is the one before the reply's first token, found
    from the labels, so image-token expansion and padding cannot shift it."""
    import torch

    family = family or FAMILY
    out = []
    device = next(model.parameters()).device
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            items = [
                family.encode(processor, [(question, "x")], image, NO_LIMIT, "latent probe prompt")
                for question, image in prompts[start : start + batch_size]
            ]
            batch = family.collate(processor, items)
            batch = {k: v.to(device) for k, v in batch.items()}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
            labels = batch.pop("labels")
            first = (labels != -100).int().argmax(-1)  # the reply's first token
            with torch.inference_mode():
                hidden = model(**batch, use_cache=False, output_hidden_states=True).hidden_states[-1]
            out.append(hidden[torch.arange(hidden.shape[0]), first - 1].float().cpu())
    finally:
        if was_training:
            model.train()
    return torch.cat(out) if out else torch.zeros(0)
