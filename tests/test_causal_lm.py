"""The causal-LM task: masked loss on a hand-made example, token-weighted validation, generation logging."""

from __future__ import annotations

import math

import pytest
import torch

from loldu.tasks.causal_lm import CausalLMModule, masked_lm_loss


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    norm = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - norm for v in row]


def test_masked_loss_matches_hand_computation():
    # batch of 1, 4 positions, vocabulary of 3; the first two label positions are the prompt (-100)
    logits = torch.tensor([[[0.0, 1.0, 2.0], [2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[-100, -100, 2, 0]])
    total, count = masked_lm_loss(logits, labels)
    # position t predicts label t+1: logits[1] -> 2, logits[2] -> 0; logits[0] -> -100 is skipped
    expected = -_log_softmax([2.0, 0.5, -1.0])[2] - _log_softmax([0.1, 0.2, 3.0])[0]
    assert count.item() == 2
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_masked_loss_ignores_padding_and_prompt_in_batches():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 3, 4, -100, -100], [-100, -100, -100, 1, 6]])
    total, count = masked_lm_loss(logits, labels)
    # row 0: positions 0, 1 predict 3, 4; row 1: positions 2, 3 predict 1, 6
    ce = torch.nn.functional.cross_entropy
    manual = ce(logits[0, 0:2], labels[0, 1:3], reduction="sum") + ce(logits[1, 2:4], labels[1, 3:5], reduction="sum")
    assert count.item() == 4
    assert total.item() == pytest.approx(manual.item(), rel=1e-6)
    # changing a masked position's logits changes nothing
    logits2 = logits.clone()
    logits2[0, 0] += 5.0
    logits2[1, 4] -= 3.0
    assert masked_lm_loss(logits2, labels)[0].item() == pytest.approx(total.item(), rel=1e-6)


def test_masked_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        masked_lm_loss(torch.zeros(1, 4, 3), torch.zeros(1, 5, dtype=torch.long))


class _ConstantLM(torch.nn.Module):
    """Logits that do not depend on the input, so the validation loss can be computed by hand."""

    def __init__(self, vocab: int = 5):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.linspace(-1.0, 1.0, vocab))

    def forward(self, input_ids, attention_mask=None):
        out = torch.nn.Module()
        out.logits = self.bias.expand(*input_ids.shape, -1)
        return out


def test_validation_loss_is_token_weighted_over_the_split():
    module = CausalLMModule(_ConstantLM(), lr=1e-3)
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    module._trainer = None
    batches = [
        {
            "input_ids": torch.zeros(1, 4, dtype=torch.long),
            "attention_mask": torch.ones(1, 4, dtype=torch.long),
            "labels": torch.tensor([[-100, 1, 2, 3]]),
        },  # 3 supervised tokens
        {
            "input_ids": torch.zeros(1, 4, dtype=torch.long),
            "attention_mask": torch.ones(1, 4, dtype=torch.long),
            "labels": torch.tensor([[-100, -100, -100, 4]]),
        },  # 1 supervised token
    ]
    for i, batch in enumerate(batches):
        module.validation_step(batch, i)
    module._eval_end("val")
    logp = torch.log_softmax(torch.linspace(-1.0, 1.0, 5), -1)
    expected = -(logp[1] + logp[2] + logp[3] + logp[4]).item() / 4  # not the mean of the two batch means
    assert logged["val/loss"] == pytest.approx(expected, rel=1e-6)
    assert logged["val/ppl"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert logged["val/tokens"] == 4
