"""One-row LightGBM prediction through the C API's prepared "fast" single-row path.

`Booster.predict` rebuilds a predictor object and parses its parameters on every call (about 0.2 ms),
more than the trees cost for one row. LightGBM's C API has a prepared path for exactly this case
(`LGBM_BoosterPredictForMatSingleRowFast*`), which the Python package does not wrap; this does, for the
one thread that serves requests. Results are identical to `Booster.predict` (the serving tests compare).
"""

from __future__ import annotations

import ctypes
import weakref

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _safe_call

_PREDICT_NORMAL = 0
_DTYPE_FLOAT64 = 1


class SingleRowPredictor:
    """A prepared one-row predictor for a booster; not thread-safe (one per serving thread)."""

    def __init__(self, booster: lgb.Booster, width: int) -> None:
        self.width = width
        outputs = ctypes.c_int(0)
        _safe_call(_LIB.LGBM_BoosterGetNumClasses(booster._handle, ctypes.byref(outputs)))
        self._row = np.empty(width, dtype=np.float64)  # the C call reads its input here and writes its output into _out:
        self._out = np.empty(outputs.value, dtype=np.float64)  # both live as long as the predictor, so their pointers are
        self._out_len = ctypes.c_int64(0)  # converted once, not on every call (that conversion cost more than the copies)
        self._handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle, ctypes.c_int(_PREDICT_NORMAL), ctypes.c_int(0), ctypes.c_int(booster.best_iteration),
                ctypes.c_int(_DTYPE_FLOAT64), ctypes.c_int32(width), ctypes.c_char_p(b"num_threads=1"), ctypes.byref(self._handle),
            )
        )
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, self._handle)
        self._booster = booster  # the prepared config points into the booster: keep it alive
        self._predict = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._arguments = (self._handle, self._row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._out_len),
                           self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)))

    def predict(self, row: np.ndarray) -> np.ndarray:
        """Scores for one row of `width` values (as `Booster.predict` on a 1×width matrix, flattened)."""
        self._row[:] = row
        _safe_call(self._predict(*self._arguments))
        return self._out[: self._out_len.value].copy()
