"""``tfidf``: TF-IDF over word uni- and bigrams, reduced to 256 dimensions by truncated SVD.

Fitted on the dataset being audited, so its vectors depend on the whole corpus: it embeds all
texts at once and is never cached per text. It sees words, not topics, which is what some label
schemes need (sentiment: "not good"); see ``--encoder auto``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from credaudit.progress import NullProgress, Progress

N_COMPONENTS = 256


class TfidfEncoder:
    name = "tfidf"
    source = "scikit-learn TfidfVectorizer (1-2 grams, sublinear tf) + TruncatedSVD, fitted on the data"
    device = "cpu"
    dimension = N_COMPONENTS
    precision = "fp64"
    fingerprint = "tfidf-svd256-it2"
    whole_corpus = True  # fitted on all texts at once; never cached per text

    def __init__(self, *, seed: int = 0, batch_size: int | None = None) -> None:
        self.seed = seed

    def encode(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        progress = progress or NullProgress()
        texts = list(texts)
        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200_000, strip_accents="unicode"
        )
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        try:
            matrix = vectorizer.fit_transform(texts)
        except ValueError:  # empty vocabulary (tiny or empty texts): no word occurs twice
            vectorizer.set_params(min_df=1)
            try:
                matrix = vectorizer.fit_transform(texts)
            except ValueError:  # no word at all (every text empty or one-letter tokens): no direction
                progress.advance(len(texts))
                return out
        if matrix.shape[1] <= N_COMPONENTS:
            # Few distinct words (short, repetitive texts): the TF-IDF rows themselves, whose
            # cosines a reduction could only lose (and SVD needs more words than components).
            reduced = matrix.toarray()
        else:
            components = min(N_COMPONENTS, max(1, min(matrix.shape) - 1))
            # Two power iterations instead of sklearn's five: half the time on 25,000 IMDB reviews
            # (30 s vs 57 s) with the same detection quality there (AUROC 0.823 vs 0.824).
            svd = TruncatedSVD(n_components=components, n_iter=2, random_state=self.seed)
            reduced = svd.fit_transform(matrix)
        out[:, : reduced.shape[1]] = reduced
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        progress.advance(len(texts))
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
