"""Continuous audio input: projector, splicing between audio-wave markers, training and generation with it."""
import pytest
import torch

from most_speech.audio.hubert import HubertEncoder, tiny_hubert_config
from most_speech.models import MoSTConfig, MoSTForCausalLM
from most_speech.models.audio_projector import AudioProjector, splice_audio_frames

FEAT_DIM = 12


def model_with_projector(**kw):
    torch.manual_seed(0)
    return MoSTForCausalLM(MoSTConfig.tiny(audio_feature_dim=FEAT_DIM, **kw)).eval()


def batch_with_segments(layout):
    """Row 0: text, [bow eow], text, [bow eow], text; row 1: text, [bow eow], text, then right padding."""
    bw, ew, pad = layout.bow_id, layout.eow_id, layout.pad_id
    ids = torch.tensor([[5, 6, bw, ew, 7, bw, ew, 8, 9],
                        [10, bw, ew, 11, 12, pad, pad, pad, pad]])
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    labels = torch.tensor([[-100, -100, -100, -100, 7, -100, -100, 8, 9],
                           [-100, -100, -100, 11, 12, -100, -100, -100, -100]])
    lengths = torch.tensor([3, 5, 2])
    feats = torch.randn(3, 5, FEAT_DIM)
    return ids, mask, labels, feats, lengths


def test_spliced_lengths_marks_labels_positions():
    model = model_with_projector()
    layout = model.config.layout
    ids, mask, labels, feats, lengths = batch_with_segments(layout)
    out = model.splice_audio(ids, feats, lengths, attention_mask=mask, labels=labels)
    # Row 0: 9 tokens + 3 + 5 frames; row 1: 5 tokens + 2 frames, right-padded to 17.
    assert out.attention_mask.sum(1).tolist() == [17, 7]
    assert out.inputs_embeds.shape == (2, 17, model.config.hidden_size)
    audio = layout.modality_of(layout.bow_id)
    row0 = out.modality_ids[0].tolist()
    assert row0 == [0, 0, audio] + [audio] * 3 + [audio, 0, audio] + [audio] * 5 + [audio, 0, 0]
    assert out.labels[0].tolist() == [-100] * 4 + [-100] * 3 + [7, -100, -100] + [-100] * 5 + [8, 9]
    assert out.labels[1, :7].tolist() == [-100, -100, -100, -100, -100, 11, 12]
    assert (out.labels[1, 7:] == -100).all() and (out.attention_mask[1, 7:] == 0).all()
    assert out.position_ids[0].tolist() == list(range(17))
    assert out.position_ids[1, :7].tolist() == list(range(7))
    # The frames sit between the markers, projected.
    frames, _ = model.audio_projector(feats, lengths)
    assert torch.allclose(out.inputs_embeds[0, 3:6], frames[0, :3])
    assert torch.allclose(out.inputs_embeds[0, 9:14], frames[1, :5])
    assert torch.allclose(out.inputs_embeds[1, 2:4], frames[2, :2])
    emb = model.model.embed_tokens(ids)
    assert torch.equal(out.inputs_embeds[0, 6], emb[0, 3]) and torch.equal(out.inputs_embeds[1, 5], emb[1, 3])


def test_left_padding_for_generation():
    ids = torch.tensor([[0, 0, 4, 7, 8, 5], [3, 7, 8, 4, 5, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    out = splice_audio_frames(ids, torch.randn(2, 6, 4), torch.randn(2, 3, 4), torch.tensor([2, 3]), bow_id=7,
                              eow_id=8, modality_ids=torch.zeros_like(ids), attention_mask=mask,
                              padding_side="left")
    assert out.attention_mask.tolist() == [[0, 0, 0, 1, 1, 1, 1, 1, 1], [1] * 9]
    assert out.position_ids[0, 3:].tolist() == list(range(6))


def test_marker_and_segment_count_errors():
    kw = dict(bow_id=7, eow_id=8, modality_ids=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="2 feature segments"):
        splice_audio_frames(torch.tensor([[1, 7, 8, 2]]), torch.zeros(1, 4, 3), torch.zeros(2, 2, 3),
                            torch.tensor([2, 2]), **kw)
    with pytest.raises(ValueError, match="not immediately followed"):
        splice_audio_frames(torch.tensor([[1, 7, 2, 8]]), torch.zeros(1, 4, 3), torch.zeros(1, 2, 3),
                            torch.tensor([2]), **kw)


def test_frame_stacking_lengths():
    proj = AudioProjector(4, 6, stack=3)
    out, lens = proj(torch.randn(2, 7, 4), torch.tensor([7, 3]))
    assert out.shape == (2, 3, 6) and lens.tolist() == [3, 1]


def test_training_step_trains_projector_not_frozen_encoder():
    torch.manual_seed(0)
    encoder = HubertEncoder(tiny_hubert_config())
    encoder.train()  # a parent's .train() must not turn dropout back on
    model = MoSTForCausalLM(MoSTConfig.tiny(audio_feature_dim=encoder.dim)).train()
    layout = model.config.layout
    wavs = torch.randn(3, 16000) * 0.1
    feats, lengths = encoder(wavs, torch.tensor([16000, 12000, 8000]))
    ids, mask, labels, _, _ = batch_with_segments(layout)
    out = model(ids, attention_mask=mask, labels=labels, audio_features=feats, audio_feature_lengths=lengths)
    out.loss.backward()
    assert model.audio_projector.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())
    assert not any(m.training for m in encoder.modules())


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_generation_from_audio_same_with_and_without_cache(kind):
    model = model_with_projector(audio_projector_type=kind, audio_frame_stack=2)
    layout = model.config.layout
    ids = torch.tensor([[layout.bos_id, 5, layout.bow_id, layout.eow_id, 9],
                        [layout.pad_id, layout.bos_id, layout.bow_id, layout.eow_id, 6]])
    mask = torch.tensor([[1] * 5, [0, 1, 1, 1, 1]])
    feats, lengths = torch.randn(2, 6, FEAT_DIM), torch.tensor([6, 4])
    gen = dict(max_new_tokens=8, do_sample=False, eos_token_id=None)
    with_cache = model.generate(ids, attention_mask=mask, audio_features=feats, audio_feature_lengths=lengths,
                                use_cache=True, **gen)
    without = model.generate(ids, attention_mask=mask, audio_features=feats, audio_feature_lengths=lengths,
                             use_cache=False, **gen)
    assert with_cache.shape == (2, 8) and torch.equal(with_cache, without)
    # The audio is really used: other features give other continuations (first new token's logits differ).
    spliced_a = model.splice_audio(ids, feats, lengths, mask, padding_side="left")
    spliced_b = model.splice_audio(ids, feats + 1.0, lengths, mask, padding_side="left")
    logits = [model(inputs_embeds=s.inputs_embeds, attention_mask=s.attention_mask,
                    modality_ids=s.modality_ids).logits[:, -1] for s in (spliced_a, spliced_b)]
    assert not torch.allclose(logits[0], logits[1])


def test_utterance_norm_removes_each_segments_offset_and_scale_and_ignores_padding():
    torch.manual_seed(0)
    proj = AudioProjector(FEAT_DIM, 16, stack=2, norm="utterance")
    x = torch.randn(2, 7, FEAT_DIM)
    lengths = torch.tensor([7, 4])
    shifted = x * 3.0 + 16.0  # what raw log-mel filterbanks look like next to unit-variance features
    shifted[1, 4:] = 1e6       # padding must not enter the statistics
    a, la = proj(x, lengths)
    b, lb = proj(shifted, lengths)
    assert la.tolist() == lb.tolist() == [4, 2]
    torch.testing.assert_close(a[0], b[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a[1, :2], b[1, :2], atol=1e-4, rtol=1e-4)
    assert list(proj.state_dict()) == list(AudioProjector(FEAT_DIM, 16, stack=2).state_dict())
    with pytest.raises(ValueError, match="norm"):
        AudioProjector(FEAT_DIM, 16, norm="global")
    with pytest.raises(ValueError, match="audio_feature_norm"):
        MoSTConfig.tiny(audio_feature_dim=FEAT_DIM, audio_feature_norm="batch")
    model = model_with_projector(audio_feature_norm="utterance")
    assert model.audio_projector.norm is not None


@pytest.mark.parametrize("encoder_layers", [0, 2])
def test_conv_projector_output_does_not_depend_on_batching(encoder_layers):
    torch.manual_seed(0)
    proj = AudioProjector(FEAT_DIM, 16, stack=2, kind="conv", encoder_layers=encoder_layers).eval()
    a, b = torch.randn(1, 11, FEAT_DIM), torch.randn(1, 4, FEAT_DIM)
    alone, _ = proj(b, torch.tensor([4]))
    batch = torch.cat([a, torch.nn.functional.pad(b, (0, 0, 0, 7), value=5.0)])  # padding is junk on purpose
    together, lens = proj(batch, torch.tensor([11, 4]))
    assert lens.tolist() == [6, 2]
    torch.testing.assert_close(together[1, :2], alone[0], atol=1e-5, rtol=1e-5)
    assert together[1, 2:].abs().sum() == 0
    # and a position does see its right-hand neighbours (the convolutions are not causal) ...
    later = a.clone()
    later[0, 10:] += 1.0  # stacked positions 5 and up
    assert not torch.allclose(proj(a, torch.tensor([11]))[0][0, 3], proj(later, torch.tensor([11]))[0][0, 3])
    # ... beyond the convolutions' reach (2 x 2 stacked positions) only with the attention layers
    far = proj(a, torch.tensor([11]))[0][0, 0], proj(later, torch.tensor([11]))[0][0, 0]
    assert torch.allclose(*far) == (encoder_layers == 0)


def test_encoder_layers_need_the_conv_projector():
    with pytest.raises(ValueError, match="encoder_layers"):
        AudioProjector(FEAT_DIM, 16, kind="linear", encoder_layers=1)
    with pytest.raises(ValueError, match="audio_encoder_layers"):
        MoSTConfig.tiny(audio_feature_dim=FEAT_DIM, audio_projector_type="mlp", audio_encoder_layers=2)
    model = model_with_projector(audio_projector_type="conv", audio_encoder_layers=1)
    assert len(model.audio_projector.encoder.layers) == 1
