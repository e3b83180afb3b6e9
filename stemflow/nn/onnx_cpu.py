"""The network on CPU through ONNX Runtime: the same weights, exported once per process.

On CPUs, ONNX Runtime runs this small encoder–decoder faster than eager PyTorch (its convolutions,
upsampling and concatenations are fused and laid out for the cache; measured side by side in
``benchmarks/results/inference.md``). The network — BatchNorm folded in — is exported to ONNX in
memory the first time a model runs on the CPU, and the session is kept with the model, keyed by its
weights, so fine-tuned weights are exported again. The outputs equal PyTorch's to float rounding
(about 1e-5 in the logits).

The backend is chosen by the environment variable ``STEMFLOW_CPU_BACKEND``:

* ``auto`` (default): ONNX Runtime when ``onnxruntime`` and ``onnx`` import, else PyTorch;
* ``onnx``: ONNX Runtime, and an error when it cannot be used;
* ``torch``: always PyTorch.

GPU inference is unaffected (PyTorch, bf16).
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InputError, StemflowWarning

if TYPE_CHECKING:
    from .weights import Model

__all__ = ["cpu_backend", "onnx_session", "run_onnx", "BACKENDS"]

BACKENDS = ("auto", "onnx", "torch")
_LOCK = threading.Lock()
_WARNED: set = set()


def cpu_backend() -> str:
    """The CPU backend asked for by ``STEMFLOW_CPU_BACKEND``: ``auto``, ``onnx`` or ``torch``."""
    value = os.environ.get("STEMFLOW_CPU_BACKEND", "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise InputError(f"STEMFLOW_CPU_BACKEND={value!r} is not a CPU backend; use one of {', '.join(BACKENDS)}")
    return value


def _available() -> str | None:
    """None when ONNX Runtime can be used, else why not."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install onnxruntime onnx)"
    return None


def _export(net: torch.nn.Module) -> bytes:
    """The network as ONNX bytes: batch, height and width dynamic (heights and widths must be
    multiples of 8: :func:`run_onnx` pads as the network itself would)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer notes that the network's own padding branch is fixed at trace time (the
        # input is a multiple of 8 there; run_onnx pads before the session), and the exporter
        # that it is the TorchScript one.
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 64, 64),), buf, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


def onnx_session(model: Model, net: torch.nn.Module, key: tuple):
    """The model's ONNX Runtime session for the CPU network ``net`` (weights identified by ``key``),
    or None when the backend is ``torch`` or ONNX Runtime is not there (``auto``).

    Raises
    ------
    InputError
        ``STEMFLOW_CPU_BACKEND=onnx`` and ONNX Runtime cannot be used.
    """
    backend = cpu_backend()
    if backend == "torch":
        return None
    why = _available()
    if why is not None:
        if backend == "onnx":
            raise InputError(f"STEMFLOW_CPU_BACKEND=onnx, but {why}; or set STEMFLOW_CPU_BACKEND=torch")
        return None
    threads = torch.get_num_threads()
    full_key = key + (threads,)
    with _LOCK:
        cached = getattr(model, "_onnx_session", None)
        if cached is not None and cached[0] == full_key:
            return cached[1]
        import onnxruntime as ort

        try:
            data = _export(net)
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            # no busy-waiting between batches: a Dask worker's other tasks need the cores
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as e:                    # an exporter or runtime that cannot take it
            if backend == "onnx":
                raise InputError(f"the network could not run under ONNX Runtime ({e}); "
                                 "set STEMFLOW_CPU_BACKEND=torch") from e
            if "export" not in _WARNED:
                _WARNED.add("export")
                warnings.warn(f"ONNX Runtime could not run the network ({type(e).__name__}: {e}); "
                              "running it with PyTorch (set STEMFLOW_CPU_BACKEND=torch to skip the attempt)",
                              StemflowWarning, stacklevel=3)
            session = None
        object.__setattr__(model, "_onnx_session", (full_key, session))
        return session


def run_onnx(session, batch: np.ndarray) -> np.ndarray:
    """Logits (n, channels, y, x) float32 of a batch (n, y, x) of normalised frames.

    The frames are padded to multiples of 8 exactly as the network pads them (reflect, or edge
    when the frame is smaller than the padding) and the output is cropped back.
    """
    x = np.asarray(batch, np.float32)[:, None]
    h, w = x.shape[-2:]
    ph, pw = (-h) % 8, (-w) % 8
    if ph or pw:
        mode = "reflect" if min(h, w) > max(ph, pw) else "edge"
        x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
    y = session.run(None, {"x": np.ascontiguousarray(x)})[0]
    return y[..., :h, :w]
