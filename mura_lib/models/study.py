"""A study-level model: one backbone embeds every view, a pooling head gives the study's logit.

MURA's labels belong to studies. The image-level recipe (the paper's) trains every view on its
study's label, including the views on which an abnormal study's finding cannot be seen, and
scores a study by the plain mean over its views. A :class:`StudyModel` is trained on the
study's label directly; its head decides how the views are combined:

* ``mean``: the mean of the views' logits (the paper's study rule, trained end to end);
* ``max``: the largest view logit (one clearly abnormal view makes the study abnormal);
* ``attention``: gated attention pooling (Ilse, Tomczak & Welling 2018, "Attention-based Deep
  Multiple Instance Learning"): a score per view embedding ``h``,
  ``w . (tanh(V h) * sigmoid(U h))``, a softmax over the study's views, and the classifier
  applied to the weighted mean of the embeddings. The weights are kept: they say which view
  the model trusted.

The backbone is exactly what :func:`~mura_lib.models.build.build_model` makes (a one-logit
classifier), so an image-level checkpoint of ours can start a study-level model and CAMs work
per view unchanged. The embedding of a view is the input of the backbone's last Linear layer,
captured by a hook, whatever the architecture; because that layer is linear and the attention
weights of a study sum to 1, the classifier of the pooled embedding equals the weighted mean
of the view logits, which is how it is computed.

Views arrive as one flat batch with a study index per view (segment pooling): no padding, no
view dropped, and studies of 1 to 11 views mix freely in a batch.
"""

from __future__ import annotations

import torch
from torch import nn

STUDY_HEADS = ("none", "mean", "max", "attention")  # "none": the image-level model
ATTENTION_HIDDEN = 128  # Ilse et al. use 128 for their histopathology bags


def segment_sum(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of ``values`` (V,) per segment: out[s] = sum of values[v] with index[v] == s."""
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, index, values)


def segment_max(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Largest of ``values`` per segment (every segment must have a member)."""
    out = torch.full((n,), float("-inf"), dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, index, values, reduce="amax", include_self=True)


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of ``scores`` within each segment (shifted by the segment's max: no overflow)."""
    shifted = torch.exp(scores - segment_max(scores, index, n).detach()[index])
    return shifted / segment_sum(shifted, index, n)[index]


class GatedAttention(nn.Module):
    """Ilse et al.'s gated attention score of each view embedding (V, D) -> (V,)."""

    def __init__(self, in_features: int, hidden: int = ATTENTION_HIDDEN) -> None:
        super().__init__()
        self.tanh_branch = nn.Linear(in_features, hidden)
        self.gate_branch = nn.Linear(in_features, hidden)
        self.score = nn.Linear(hidden, 1)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        gated = torch.tanh(self.tanh_branch(embeddings)) * torch.sigmoid(
            self.gate_branch(embeddings)
        )
        return self.score(gated).squeeze(1)


def _last_linear(model: nn.Module) -> nn.Linear:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:  # build_model has already refused such architectures
        raise ValueError(f"{type(model).__name__} has no Linear classifier")
    return last


class StudyModel(nn.Module):
    """A backbone over the views of a batch of studies and a pooling head.

    ``forward(x, study_index, n_studies)`` takes the views (V, C, S, S) and each view's study
    (V,), numbered 0..n_studies-1, and returns the study logits (n_studies,). After a forward
    pass, ``view_logits`` (V,) and ``view_weights`` (V,) hold each view's own logit and its
    share of the study's score: 1/n for ``mean``, 1 for the arg-max view for ``max``, the
    attention weights for ``attention``; each study's weights sum to 1.
    """

    def __init__(self, backbone: nn.Module, head: str) -> None:
        super().__init__()
        if head not in STUDY_HEADS[1:]:
            raise ValueError(f"study head {head!r}: use one of {STUDY_HEADS[1:]}")
        self.backbone = backbone
        self.head = head
        classifier = _last_linear(backbone)
        self.attention = GatedAttention(classifier.in_features) if head == "attention" else None
        self._embeddings: list[torch.Tensor] = []
        if self.attention is not None:
            classifier.register_forward_pre_hook(self._capture)
        self.view_logits: torch.Tensor | None = None
        self.view_weights: torch.Tensor | None = None

    def _capture(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self._embeddings.append(inputs[0])

    def forward(self, x: torch.Tensor, study_index: torch.Tensor, n_studies: int) -> torch.Tensor:
        self._embeddings.clear()
        view_logits = self.backbone(x).squeeze(1).float()
        if self.head == "mean":
            counts = segment_sum(torch.ones_like(view_logits), study_index, n_studies)
            weights = 1.0 / counts[study_index]
        elif self.head == "max":
            top = segment_max(view_logits, study_index, n_studies)
            is_top = (view_logits == top[study_index]).float()  # ties share the weight
            weights = is_top / segment_sum(is_top, study_index, n_studies)[study_index]
        else:
            assert self.attention is not None
            embeddings = self._embeddings.pop().float()
            weights = segment_softmax(self.attention(embeddings).float(), study_index, n_studies)
        self.view_logits, self.view_weights = view_logits.detach(), weights.detach()
        if self.head == "max":
            return segment_max(view_logits, study_index, n_studies)
        return segment_sum(weights * view_logits, study_index, n_studies)
