"""Inter-annotator agreement: Krippendorff's alpha for nominal data.

Follows Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C
(any number of observers, missing values). With the coincidences

    o_ck = sum_u (number of c-k pairs of values in unit u) / (m_u - 1)

over units u with m_u >= 2 values, n_c = sum_k o_ck and n = sum_c n_c,

    alpha = 1 - D_o / D_e,   D_o = sum_{c != k} o_ck / n,   D_e = sum_{c != k} n_c n_k / (n (n - 1)).

alpha = 1 is perfect agreement, 0 is chance level; it is undefined (nan) when no unit has two
values or when every value is the same (D_e = 0).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence


def krippendorff_alpha_nominal(units: Iterable[Sequence[Hashable]]) -> float:
    """Alpha over `units`, each the values it received (missing values simply left out)."""
    o: Counter[tuple[Hashable, Hashable]] = Counter()
    for values in units:
        m = len(values)
        if m < 2:  # a lone value pairs with nothing
            continue
        counts = Counter(values)
        for c, n_uc in counts.items():
            for k, n_uk in counts.items():
                pairs = n_uc * (n_uk - 1) if c == k else n_uc * n_uk
                if pairs:
                    o[c, k] += pairs / (m - 1)
    n_c: Counter[Hashable] = Counter()
    for (c, _), v in o.items():
        n_c[c] += v
    n = sum(n_c.values())
    if n < 2:
        return math.nan
    d_o = sum(v for (c, k), v in o.items() if c != k) / n
    d_e = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k) / (n * (n - 1))
    return math.nan if d_e == 0 else 1 - d_o / d_e


def label_alphas(binary: Iterable[tuple[str, frozenset[str]]], labels: Sequence[str]) -> dict[str, tuple[float, int]]:
    """Per label, (alpha, units with >= 2 judgements) from (image, checked labels) pairs; present/absent is the value."""
    by_image: dict[str, list[frozenset[str]]] = {}
    for image, checked in binary:
        by_image.setdefault(image, []).append(checked)
    paired = [v for v in by_image.values() if len(v) >= 2]
    return {lb: (krippendorff_alpha_nominal([[lb in c for c in v] for v in paired]), len(paired)) for lb in labels}
