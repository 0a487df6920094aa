"""The optional CTC loss on spliced audio frames (most_speech.models.audio_ctc) and the data that feeds it."""
import pytest
import torch
import torch.nn.functional as F

from most_speech.data.templates import AudioSpan, TaskTemplates
from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.training.features import batch_audio_features
from most_speech.training.monitor import TrainingMonitor

from test_audio_splicing import FEAT_DIM, batch_with_segments


def ctc_model(weight=0.5, **kw):
    torch.manual_seed(0)
    return MoSTForCausalLM(MoSTConfig.tiny(audio_feature_dim=FEAT_DIM, audio_ctc_weight=weight, **kw))


@pytest.mark.parametrize("side", ["right", "left"])
def test_frame_starts_point_at_each_segments_frames(side):
    model = ctc_model()
    ids, mask, labels, feats, lengths = batch_with_segments(model.config.layout)
    out = model.splice_audio(ids, feats, lengths, attention_mask=mask, labels=labels, padding_side=side)
    frames, _ = model.audio_projector(feats, lengths)
    assert out.frame_lengths.tolist() == lengths.tolist()
    for s, (row, col) in enumerate(out.frame_starts.tolist()):
        n = int(lengths[s])
        torch.testing.assert_close(out.inputs_embeds[row, col:col + n], frames[s, :n])
        assert (out.modality_ids[row, col:col + n] == 1).all() and (out.labels[row, col:col + n] == -100).all()


def test_ctc_loss_matches_a_by_hand_computation_and_is_added_with_its_weight():
    model = ctc_model(weight=0.5).train()
    ids, mask, labels, feats, lengths = batch_with_segments(model.config.layout)
    targets = torch.tensor([[3, 4], [5, 0], [6, 7]])
    target_lengths = torch.tensor([2, 1, 0])  # the third segment has no transcript: left out
    out = model(input_ids=ids, attention_mask=mask, labels=labels, audio_features=feats,
                audio_feature_lengths=lengths, audio_ctc_targets=targets, audio_ctc_target_lengths=target_lengths)

    spliced = model.splice_audio(ids, feats, lengths, attention_mask=mask, labels=labels)
    hidden = model.model(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                         position_ids=spliced.position_ids, modality_ids=spliced.modality_ids).last_hidden_state
    blank = model.config.layout.text_vocab_size
    by_hand = []
    for s, (row, col) in enumerate(spliced.frame_starts.tolist()[:2]):
        n = int(lengths[s])
        lp = model.audio_ctc_head.proj(hidden[row, col:col + n]).log_softmax(-1)
        loss = F.ctc_loss(lp[:, None], targets[s:s + 1, :target_lengths[s]], torch.tensor([n]),
                          target_lengths[s:s + 1], blank=blank, reduction="sum")
        by_hand.append(loss / target_lengths[s])
    torch.testing.assert_close(out.ctc_loss, torch.stack(by_hand).mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, out.lm_loss + out.aux_loss + 0.5 * out.ctc_loss)


def test_ctc_gradient_reaches_the_projector_and_the_layers():
    model = ctc_model().train()
    ids, mask, labels, feats, lengths = batch_with_segments(model.config.layout)
    out = model(input_ids=ids, attention_mask=mask, labels=labels, audio_features=feats,
                audio_feature_lengths=lengths, audio_ctc_targets=torch.tensor([[3], [4], [5]]),
                audio_ctc_target_lengths=torch.tensor([1, 1, 1]))
    out.ctc_loss.backward()
    assert model.audio_projector.proj.weight.grad.abs().sum() > 0
    assert model.model.layers[0].self_attn.o_proj.weight.grad.abs().sum() > 0
    assert model.lm_head.weight.grad is None or model.lm_head.weight.grad.abs().sum() == 0


def test_projector_ctc_reads_the_projected_frames_and_needs_no_lm_pass():
    model = ctc_model(weight=1.0, audio_ctc_input="projector", audio_projector_type="conv",
                      audio_encoder_layers=1).train()
    ids, mask, labels, feats, lengths = batch_with_segments(model.config.layout)
    targets, target_lengths = torch.tensor([[3, 4], [5, 0], [6, 7]]), torch.tensor([2, 1, 2])
    out = model(input_ids=ids, attention_mask=mask, labels=labels, audio_features=feats,
                audio_feature_lengths=lengths, audio_ctc_targets=targets, audio_ctc_target_lengths=target_lengths)
    frames, _ = model.audio_projector(feats, lengths)
    blank = model.config.layout.text_vocab_size
    by_hand = [F.ctc_loss(model.audio_ctc_head.proj(frames[s, :n]).log_softmax(-1)[:, None],
                          targets[s:s + 1, :target_lengths[s]], torch.tensor([n]), target_lengths[s:s + 1],
                          blank=blank, reduction="sum") / target_lengths[s]
               for s, n in enumerate(lengths.tolist())]
    torch.testing.assert_close(out.ctc_loss, torch.stack(by_hand).mean(), atol=1e-5, rtol=1e-5)
    out.ctc_loss.backward()
    assert model.audio_projector.encoder.layers[0].linear1.weight.grad.abs().sum() > 0
    assert model.model.layers[0].self_attn.o_proj.weight.grad is None
    log_probs, n = model.eval().audio_ctc_log_probs(ids, feats, lengths, attention_mask=mask)
    assert n.tolist() == lengths.tolist()
    torch.testing.assert_close(log_probs, model.audio_ctc_head(model.audio_projector(feats, lengths)[0]))


def test_no_head_no_ctc_and_no_transcripts_no_ctc():
    plain = MoSTForCausalLM(MoSTConfig.tiny(audio_feature_dim=FEAT_DIM))
    assert plain.audio_ctc_head is None
    model = ctc_model()
    ids, mask, labels, feats, lengths = batch_with_segments(model.config.layout)
    kw = dict(input_ids=ids, attention_mask=mask, labels=labels, audio_features=feats, audio_feature_lengths=lengths)
    assert plain(**kw).ctc_loss is None and model(**kw).ctc_loss is None
    zero = model(**kw, audio_ctc_targets=torch.zeros(3, 1, dtype=torch.long),
                 audio_ctc_target_lengths=torch.zeros(3, dtype=torch.long))
    assert float(zero.ctc_loss) == 0.0


def test_config_refuses_ctc_without_audio_input():
    with pytest.raises(ValueError, match="audio_ctc_weight"):
        MoSTConfig.tiny(audio_ctc_weight=0.3)
    with pytest.raises(ValueError, match="audio_ctc_weight"):
        MoSTConfig.tiny(audio_feature_dim=FEAT_DIM, audio_ctc_weight=-1.0)
    with pytest.raises(ValueError, match="audio_ctc_input"):
        MoSTConfig.tiny(audio_feature_dim=FEAT_DIM, audio_ctc_weight=1.0, audio_ctc_input="encoder")


def test_head_round_trips_through_save_and_load(tmp_path):
    model = ctc_model()
    model.save_pretrained(tmp_path)
    loaded = MoSTForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.audio_ctc_head.proj.weight, model.audio_ctc_head.proj.weight)


def test_asr_examples_carry_their_transcript_and_batches_turn_it_into_targets(tmp_path):
    from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece

    sp = train_sentencepiece(["hello world", "good morning", "spoken answer"] * 20, tmp_path / "sp", vocab_size=30)
    tpl = TaskTemplates(MoSTTokenizer.from_sentencepiece(sp, num_units=8))
    asr = tpl.build("asr", {"id": "u1", "text": "hello world", "num_frames": 9})
    qa = tpl.build("speech_instruction", {"id": "u2", "answer": "spoken answer", "num_frames": 4,
                                          "instruction": "Answer."})
    transcript = asr.audio_spans[0].transcript
    assert list(transcript) == [t for t in asr.labels if t >= 0][:-1]  # the labelled text, without EOS
    assert qa.audio_spans[0].transcript is None  # an answer is not what the audio says
    feats = batch_audio_features([asr.audio_spans, qa.audio_spans], lambda keys: [torch.zeros(9, 2)] * len(keys))
    assert feats["audio_ctc_target_lengths"].tolist() == [len(transcript), 0]
    assert feats["audio_ctc_targets"][0].tolist() == list(transcript)
    assert "audio_ctc_targets" not in batch_audio_features([[AudioSpan(1, "a")]], lambda k: [torch.zeros(3, 2)])


def test_monitor_reports_the_ctc_loss(tmp_path):
    mon = TrainingMonitor(str(tmp_path), {0: [0, 1]}, log_interval=1, use_tensorboard=False)
    mon.record_batch("asr", 2.0, 1.9, 0.0, tokens=10, extra_losses={"ctc_loss": 3.0})
    mon.record_batch("tts", 2.0, 1.9, 0.0, tokens=10)
    assert mon.flush(1, 1e-3)["ctc_loss"] == 3.0
