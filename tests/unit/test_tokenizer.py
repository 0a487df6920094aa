"""Tests of MoSTTokenizer with a tiny SentencePiece model and a tiny transformers BPE tokenizer, both built here."""
import json

import pytest

from most_speech.text.token_layout import TokenLayout, deepseek_layout
from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "speech and text models",
             "transcribe the following speech into text", "convert the following text into speech"]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return train_sentencepiece(SENTENCES * 10, tmp_path_factory.mktemp("sp") / "sp", vocab_size=60)


@pytest.fixture(scope="module")
def hf_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_train_sentencepiece_writes_model_and_vocab(sp_model):
    assert sp_model.exists() and sp_model.with_suffix(".vocab").exists()
    assert not list(sp_model.parent.glob(".sp_*")), "temporary training directory left behind"


def test_train_sentencepiece_rejects_empty(tmp_path):
    with pytest.raises(ValueError, match="no non-empty"):
        train_sentencepiece(["", "  "], tmp_path / "sp", vocab_size=10)


def test_sentencepiece_layout_and_roundtrip(sp_model):
    tok = MoSTTokenizer.from_sentencepiece(sp_model, num_units=20, special_tokens=["task_asr"])
    lay = tok.layout
    n_text = tok.backend.sp.get_piece_size()
    assert lay.text_vocab_size == n_text and (lay.bos_id, lay.eos_id) == (1, 2)
    assert lay.unit_offset == n_text and lay.boa_id == n_text + 20
    assert lay.special_tokens == {"task_asr": n_text + 24} and lay.vocab_size == n_text + 25
    ids = tok.encode("the cat sat on the mat")
    assert all(i < n_text for i in ids)
    assert tok.decode(ids) == "the cat sat on the mat"
    with_bos = tok.encode("the cat", add_bos=True, add_eos=True)
    assert with_bos[0] == tok.bos_id and with_bos[-1] == tok.eos_id
    assert tok.decode(with_bos) == "the cat"


def test_special_strings_parsed_and_rendered(sp_model):
    tok = MoSTTokenizer.from_sentencepiece(sp_model, num_units=20, special_tokens=["task_asr"])
    lay = tok.layout
    ids = tok.encode("<|task_asr|>the dog<|bow|><|eow|> [Hu0][Hu19]<|eoa|><|unknown|>")
    assert ids[0] == lay.special_tokens["task_asr"]
    assert lay.bow_id in ids and ids[ids.index(lay.bow_id) + 1] == lay.eow_id
    assert lay.unit_id(0) in ids and lay.unit_id(19) in ids
    assert tok.decode(ids, skip_special=False).startswith("<|task_asr|>the dog<|bow|><|eow|>")
    assert "[Hu19]<|eoa|>" in tok.decode(ids, skip_special=False)
    assert "Hu" not in tok.decode(ids) and "nknown" in tok.decode(ids)  # left as text
    with pytest.raises(ValueError, match="unit 20"):
        tok.encode("[Hu20]")
    assert lay.boa_id not in tok.encode("<|boa|>", parse_special=False)


def test_units_to_ids_and_back(sp_model):
    tok = MoSTTokenizer.from_sentencepiece(sp_model, num_units=20)
    lay = tok.layout
    units = [3, 3, 7, 19, 0]
    ids = tok.units_to_ids(units)
    assert ids == [lay.unit_offset + u for u in units]
    wrapped = tok.units_to_ids(units, add_markers=True)
    assert wrapped[0] == lay.boa_id and wrapped[-1] == lay.eoa_id
    generated = tok.encode("the cat") + wrapped + tok.units_to_ids([5]) + [tok.eos_id]
    assert tok.ids_to_units(generated) == units
    assert tok.ids_to_units(ids + [tok.eos_id] + tok.units_to_ids([9])) == units
    with pytest.raises(ValueError, match="unit -1"):
        tok.units_to_ids([-1])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([lay.vocab_size])


def test_sentencepiece_save_and_load(sp_model, tmp_path):
    tok = MoSTTokenizer.from_sentencepiece(sp_model, num_units=8)
    out = tok.save(tmp_path / "tok")
    assert json.loads((out / "token_layout.json").read_text())["num_units"] == 8
    loaded = MoSTTokenizer.from_pretrained(out)
    assert loaded.layout == tok.layout
    text = "a dog ran in the park"
    assert loaded.encode(text) == tok.encode(text)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(ValueError, match="most_tokenizer.json"):
        MoSTTokenizer.from_pretrained(tmp_path)
    (tmp_path / "most_tokenizer.json").write_text('{"backend": "nope"}')
    deepseek_layout().save(tmp_path)
    with pytest.raises(ValueError, match="unknown tokenizer backend"):
        MoSTTokenizer.from_pretrained(tmp_path)


def test_transformers_backend_with_deepseek_layout(hf_tokenizer, tmp_path):
    lay = deepseek_layout()
    tok = MoSTTokenizer.from_transformers(hf_tokenizer, layout=lay)
    ids = tok.encode("the cat sat<|boa|>[Hu499]<|eoa|>", add_bos=True, add_eos=True)
    assert ids[0] == 100000 and ids[-1] == 100001
    assert ids[-4:-1] == [100502, 100501, 100503]
    assert tok.decode(ids) == "the cat sat"
    assert tok.ids_to_units(ids) == [499]
    tok.save(tmp_path / "hf")
    loaded = MoSTTokenizer.from_pretrained(tmp_path / "hf")
    assert loaded.backend.name == "transformers" and loaded.layout == lay
    assert loaded.encode("the dog ran") == tok.encode("the dog ran")


def test_transformers_backend_builds_own_layout(hf_tokenizer):
    tok = MoSTTokenizer.from_transformers(hf_tokenizer, num_units=4)
    n = len(hf_tokenizer)
    assert tok.layout == TokenLayout.build(n, 4, bos_id=hf_tokenizer.bos_token_id,
                                           eos_id=hf_tokenizer.eos_token_id)
    assert tok.decode(tok.encode("speech and text", add_eos=True)) == "speech and text"
