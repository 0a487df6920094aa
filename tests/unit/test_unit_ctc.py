"""The optional CTC loss on TTS responses' unit tokens (MoSTConfig.unit_ctc_weight) and the data that feeds it."""
import pytest
import torch
import torch.nn.functional as F

from most_speech.data.batching import pack_examples
from most_speech.data.collate import collate_examples
from most_speech.data.templates import TaskTemplates, UnitSpan
from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.training.features import batch_unit_spans

from test_audio_splicing import FEAT_DIM, batch_with_segments


def unit_ctc_model(weight=0.5):
    torch.manual_seed(0)
    return MoSTForCausalLM(MoSTConfig.tiny(audio_feature_dim=FEAT_DIM, audio_ctc_weight=1.0, unit_ctc_weight=weight))


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece

    sp = train_sentencepiece(["hello world", "good morning"] * 20, tmp_path_factory.mktemp("sp") / "sp",
                             vocab_size=30)
    return TaskTemplates(MoSTTokenizer.from_sentencepiece(sp, num_units=8))


def test_tts_examples_mark_their_units_and_text(templates):
    ex = templates.build("tts", {"id": "u1", "text": "hello world", "units": [3, 3, 4, 5, 5, 6]})
    (span,) = ex.unit_spans
    tok = templates.tokenizer
    assert list(span.transcript) == tok.encode("hello world", parse_special=False)
    units = ex.input_ids[span.position:span.position + span.length]
    assert tok.ids_to_units(units) == [3, 4, 5, 6]  # deduplicated, without boa / eoa
    assert ex.input_ids[span.position - 1] == templates.layout.boa_id
    assert ex.input_ids[span.position + span.length] == templates.layout.eoa_id
    assert templates.build("tts", {"id": "u1", "text": "hello world"}, prompt_only=True).unit_spans == []
    assert templates.build("asr", {"id": "u2", "text": "hello", "num_frames": 4}).unit_spans == []


def test_packing_and_collation_keep_the_spans_on_their_tokens(templates):
    a = templates.build("tts", {"id": "a", "text": "good morning", "units": [1, 2, 3]})
    b = templates.build("tts", {"id": "b", "text": "hello world", "units": [4, 5, 6, 7]})
    (row,) = pack_examples([a, b], max_length=len(a) + len(b))  # one row, either order
    batch = collate_examples([row, b], pad_id=templates.tokenizer.pad_id)
    out = batch_unit_spans(batch["unit_spans"])
    layout, tok = templates.layout, templates.tokenizer
    read = []
    for (r, c), n, k in zip(out["starts"].tolist(), out["lengths"].tolist(), out["target_lengths"].tolist()):
        ids = batch["input_ids"][r].tolist()
        assert ids[c - 1] == layout.boa_id and ids[c + n] == layout.eoa_id
        read.append((r, tuple(tok.ids_to_units(ids[c:c + n])), tuple(out["targets"][len(read), :k].tolist())))
    units_a, units_b = (1, 2, 3), (4, 5, 6, 7)
    assert sorted(read) == sorted([(0, units_a, a.unit_spans[0].transcript), (0, units_b, b.unit_spans[0].transcript),
                                   (1, units_b, b.unit_spans[0].transcript)])
    assert batch_unit_spans([[], [UnitSpan(3, 4, ())]]) is None  # nothing to read: no loss


def _by_hand(model, hidden, row, col, n, target):
    lp = model.audio_ctc_head.proj(hidden[row, col:col + n]).log_softmax(-1)
    blank = model.config.layout.text_vocab_size
    loss = F.ctc_loss(lp[:, None], target[None], torch.tensor([n]), torch.tensor([len(target)]), blank=blank,
                      reduction="sum")
    return loss / len(target)


def test_unit_ctc_loss_is_the_heads_ctc_of_the_unit_states_with_its_weight():
    model = unit_ctc_model(0.5).train()
    layout = model.config.layout
    u = layout.unit_offset
    ids = torch.tensor([[layout.bos_id, 5, 6, layout.boa_id, u, u + 1, u + 2, u + 3, layout.eoa_id]])
    labels = ids.clone()
    spans = {"starts": torch.tensor([[0, 4]]), "lengths": torch.tensor([4]), "targets": torch.tensor([[5, 6]]),
             "target_lengths": torch.tensor([2])}
    plain = model(input_ids=ids, labels=labels)
    out = model(input_ids=ids, labels=labels, unit_spans=spans)
    hidden = model.model(input_ids=ids).last_hidden_state
    expected = _by_hand(model, hidden, 0, 4, 4, torch.tensor([5, 6]))
    torch.testing.assert_close(out.loss, plain.loss + 0.5 * expected, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    assert model.audio_ctc_head.proj.weight.grad.abs().sum() > 0
    off = unit_ctc_model(0.0)  # weight 0: the spans are ignored
    assert float(off(input_ids=ids, labels=labels, unit_spans=spans).loss) == float(off(input_ids=ids,
                                                                                      labels=labels).loss)


def test_unit_spans_follow_their_tokens_past_spliced_frames():
    model = unit_ctc_model(1.0).eval()
    ids, mask, labels, feats, lengths = batch_with_segments(model.config.layout)
    # the tokens "8, 9" of row 0 come after two spliced segments (3 + 5 frames); "11, 12" of row 1 after one (2)
    spans = {"starts": torch.tensor([[0, 7], [1, 3]]), "lengths": torch.tensor([2, 2]),
             "targets": torch.tensor([[4], [4]]), "target_lengths": torch.tensor([1, 1])}
    out = model(input_ids=ids, attention_mask=mask, labels=labels, audio_features=feats,
                audio_feature_lengths=lengths, unit_spans=spans)
    base = model(input_ids=ids, attention_mask=mask, labels=labels, audio_features=feats,
                 audio_feature_lengths=lengths)
    spliced = model.splice_audio(ids, feats, lengths, attention_mask=mask, labels=labels)
    hidden = model.model(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                         position_ids=spliced.position_ids, modality_ids=spliced.modality_ids).last_hidden_state
    expected = torch.stack([_by_hand(model, hidden, 0, 7 + 8, 2, torch.tensor([4])),
                            _by_hand(model, hidden, 1, 3 + 2, 2, torch.tensor([4]))]).mean()
    torch.testing.assert_close(out.loss - base.loss, expected, atol=1e-5, rtol=1e-5)


def test_config_needs_the_ctc_head():
    with pytest.raises(ValueError, match="unit_ctc_weight"):
        MoSTConfig.tiny(audio_feature_dim=FEAT_DIM, unit_ctc_weight=0.3)
    with pytest.raises(ValueError, match="unit_ctc_weight"):
        MoSTConfig.tiny(audio_feature_dim=FEAT_DIM, audio_ctc_weight=1.0, unit_ctc_weight=-1.0)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_brain_passes_the_spans_only_to_a_model_that_uses_them(weight, bare_brain):
    import speechbrain as sb

    brain = bare_brain(unit_ctc_model(weight))
    ids = torch.ones(1, 6, dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": ids, "labels": ids, "unit_spans": [[UnitSpan(2, 3, (4,))]]}
    inputs = brain._model_inputs(batch, sb.Stage.TRAIN)
    assert ("unit_spans" in inputs) == (weight > 0)
    if weight:
        assert inputs["unit_spans"]["starts"].tolist() == [[0, 2]]
    assert "unit_spans" not in brain._model_inputs(batch, sb.Stage.VALID)  # validation scores lm_loss only
