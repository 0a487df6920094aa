"""The guided-attention prior on TTS responses (most_speech.models.tts_alignment, MoSTConfig.tts_alignment_*)."""
import math

import pytest
import torch

from most_speech.data.templates import UnitSpan
from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.models.tts_alignment import guided_attention_loss
from most_speech.training.monitor import TrainingMonitor


def _by_hand(query, key, scale, spans, sigma, allowed=None):
    """A loop over spans, units and keys: softmax over the visible keys, weight 1 off the text."""
    total, count = 0.0, 0
    for row, first, n_units, n_text in spans:
        text0 = first - 1 - n_text
        for t in range(n_units):
            q_col = first - 1 + t
            keys = [j for j in range(q_col + 1) if allowed is None or allowed[row, j]]
            for h in range(query.shape[1]):
                scores = torch.stack([query[row, h, q_col] @ key[row, h, j] * scale for j in keys])
                probs = scores.softmax(0)
                for p, j in zip(probs, keys):
                    w = 1.0
                    if text0 <= j < first - 1:
                        x, y = (t + 0.5) / n_units, (j - text0 + 0.5) / n_text
                        w = 1.0 - math.exp(-(y - x) ** 2 / (2 * sigma ** 2))
                    total += float(p) * w
                count += 1
    return total / count


def test_loss_matches_a_loop_over_units_and_keys():
    torch.manual_seed(0)
    query, key = torch.randn(2, 2, 14, 6), torch.randn(2, 2, 14, 6)
    # row 0: a response at columns 5..8 after 3 text tokens (2..4) and boa (5); row 1: two packed responses
    spans = [(0, 6, 4, 3), (1, 3, 2, 1), (1, 9, 5, 2)]
    starts = torch.tensor([[r, c] for r, c, _, _ in spans])
    lengths, text_lengths = torch.tensor([s[2] for s in spans]), torch.tensor([s[3] for s in spans])
    loss = guided_attention_loss(query, key, 0.4, starts, lengths, text_lengths, sigma=0.3)
    assert float(loss) == pytest.approx(_by_hand(query, key, 0.4, spans, 0.3), abs=1e-5)
    # a padding mask: keys the attention may not see are not in the softmax either
    keep = torch.ones(2, 14, dtype=torch.bool)
    keep[1, 0] = False
    mask = torch.ones(14, 14, dtype=torch.bool).tril()[None, None] & keep[:, None, None, :]
    masked = guided_attention_loss(query, key, 0.4, starts, lengths, text_lengths, mask=mask, sigma=0.3)
    assert float(masked) == pytest.approx(_by_hand(query, key, 0.4, spans, 0.3, allowed=keep), abs=1e-5)
    additive = torch.zeros(2, 1, 14, 14).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(guided_attention_loss(query, key, 0.4, starts, lengths, text_lengths,
                                                     mask=additive, sigma=0.3), masked)


def _attention_to(targets, length=12, dim=16, sharpness=30.0):
    """Queries and keys whose attention from column ``c`` goes (almost) all to column ``targets[c]``."""
    key = torch.eye(dim)[:length][None, None]
    query = torch.zeros(1, 1, length, dim)
    for col, target in targets.items():
        query[0, 0, col, target] = sharpness
    return query, key


def test_diagonal_attention_costs_little_and_other_attention_a_lot():
    # text at columns 1..4, boa at 5, units 6..9: unit t is predicted at column 5 + t
    starts, lengths, text_lengths = torch.tensor([[0, 6]]), torch.tensor([4]), torch.tensor([4])

    def loss(targets):
        query, key = _attention_to(targets)
        return float(guided_attention_loss(query, key, 1.0, starts, lengths, text_lengths, sigma=0.2))

    diagonal = loss({5: 1, 6: 2, 7: 3, 8: 4})
    reversed_ = loss({5: 4, 6: 3, 7: 2, 8: 1})
    on_units = loss({5: 5, 6: 6, 7: 7, 8: 8})       # each query looks at itself: no text at all
    assert diagonal < 0.1 < 0.5 < reversed_ < on_units <= 1.0


def alignment_model(weight=1.0, **kw):
    torch.manual_seed(0)
    return MoSTForCausalLM(MoSTConfig.tiny(tts_alignment_weight=weight, **kw))


def _tts_row(layout):
    u = layout.unit_offset
    ids = torch.tensor([[layout.bos_id, 5, 6, 7, layout.boa_id, u, u + 1, u + 2, u + 3, u + 4, layout.eoa_id]])
    spans = {"starts": torch.tensor([[0, 5]]), "lengths": torch.tensor([5]), "targets": torch.tensor([[5, 6, 7]]),
             "target_lengths": torch.tensor([3])}
    return ids, spans


def test_model_adds_the_weighted_prior_of_its_recorded_heads_in_training_only():
    model = alignment_model(0.5, num_hidden_layers=3, tts_alignment_heads=2).train()
    assert [layer.self_attn.record_heads for layer in model.model.layers] == [0, 2, 2]  # all but the first
    ids, spans = _tts_row(model.config.layout)
    plain = model(input_ids=ids, labels=ids)
    out = model(input_ids=ids, labels=ids, unit_spans=spans)
    assert plain.tts_alignment_loss is None and out.unit_ctc_loss is None
    assert all(layer.self_attn.recorded is None for layer in model.model.layers)  # nothing kept after forward
    torch.testing.assert_close(out.loss, plain.loss + 0.5 * out.tts_alignment_loss)
    assert 0.0 < out.tts_alignment_loss.item() < 1.0
    out.tts_alignment_loss.backward()
    assert all(layer.self_attn.q_proj.weight.grad.abs().sum() > 0 for layer in model.model.layers)
    last = model.model.layers[-1]   # its attention is scored before its MLP, which the prior cannot reach
    assert all(p.grad is None for p in last.mlp.parameters()) and last.self_attn.o_proj.weight.grad is None
    model.eval()
    assert model(input_ids=ids, labels=ids, unit_spans=spans).tts_alignment_loss is None


def test_gradient_checkpointing_is_refused_with_the_prior():
    model = alignment_model(1.0).train()
    model.gradient_checkpointing_enable()
    ids, spans = _tts_row(model.config.layout)
    with pytest.raises(ValueError, match="gradient checkpointing"):
        model(input_ids=ids, labels=ids, unit_spans=spans)
    model.eval()
    assert model(input_ids=ids).logits.shape[1] == ids.shape[1]  # inference is unaffected


def test_model_prior_equals_the_mean_of_its_layers():
    model = alignment_model(1.0, num_hidden_layers=3, tts_alignment_layers=[0, 2]).train()
    ids, spans = _tts_row(model.config.layout)
    captured = []
    for i in (0, 2):
        attn = model.model.layers[i].self_attn
        attn.register_forward_hook(lambda mod, args, out: captured.append((mod.recorded, mod.scaling)))
    out = model(input_ids=ids, labels=ids, unit_spans=spans)
    expected = [guided_attention_loss(q, k, scale, spans["starts"], spans["lengths"], spans["target_lengths"], m)
                for (q, k, m), scale in captured]
    assert [q.shape[1] for (q, _, _), _ in captured] == [1, 1]
    torch.testing.assert_close(out.tts_alignment_loss, torch.stack(expected).mean())


@pytest.mark.parametrize("bad, match", [(dict(tts_alignment_weight=-1.0), "tts_alignment_weight"),
                                        (dict(tts_alignment_weight=1.0, tts_alignment_sigma=0.0), "sigma"),
                                        (dict(tts_alignment_weight=1.0, tts_alignment_heads=5), "heads"),
                                        (dict(tts_alignment_weight=1.0, tts_alignment_layers=[2]), "layers"),
                                        (dict(tts_alignment_weight=1.0, num_hidden_layers=1), "layers")])
def test_config_checks_the_prior(bad, match):
    with pytest.raises(ValueError, match=match):
        MoSTConfig.tiny(**bad)
    assert MoSTConfig.tiny(tts_alignment_layers=[7]).tts_alignment_layer_ids() == []  # weight 0: off


def test_brain_passes_the_spans_to_a_model_with_the_prior_alone(bare_brain):
    import speechbrain as sb

    brain = bare_brain(alignment_model(1.0))
    ids = torch.ones(1, 6, dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": ids, "labels": ids, "unit_spans": [[UnitSpan(2, 3, (4,))]]}
    assert brain._model_inputs(batch, sb.Stage.TRAIN)["unit_spans"]["target_lengths"].tolist() == [1]
    assert "unit_spans" not in brain._model_inputs(batch, sb.Stage.VALID)


def test_monitor_averages_each_auxiliary_loss_over_the_batches_that_had_it(tmp_path):
    mon = TrainingMonitor(str(tmp_path), {0: [0, 1]}, log_interval=1, use_tensorboard=False)
    mon.record_batch("tts", 2.0, 1.9, 0.0, tokens=10, extra_losses={"tts_alignment_loss": 0.2})
    mon.record_batch("tts", 2.0, 1.9, 0.0, tokens=10, extra_losses={"tts_alignment_loss": 0.4,
                                                                     "unit_ctc_loss": 3.0})
    mon.record_batch("asr", 2.0, 1.9, 0.0, tokens=10, extra_losses={"ctc_loss": 1.0})
    stats = mon.flush(1, 1e-3)
    assert stats["tts_alignment_loss"] == pytest.approx(0.3)
    assert stats["unit_ctc_loss"] == 3.0 and stats["ctc_loss"] == 1.0
