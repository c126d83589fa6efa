"""Is an int8 embedder worth shipping? The ONNX export quantised to int8 weights, against the float export.

    .venv/bin/python scripts/bench/int8.py [--pairs 4000] [--rounds 2] [--static 512 [--percentile 99.99]]

ONNX Runtime's dynamic quantisation (int8 weights, one scale per output channel; activations quantised
on the fly) is made from edge-ai's own float export into a temporary folder, so nothing is downloaded and
the production export is untouched. `--static N` adds static quantisation (activation scales fixed from
calibration passes over N questions from the file's other end, range or `--percentile`). Both models run through the same Embedder; rounds alternate the
two. Printed, per model:
- speed: QQP questions in length-sorted passes of 16 (as the server runs them), and one at a time;
- closeness to the float vectors (cosine, same texts);
- batch dependence: a text embedded alone against the same text in a pass with 15 others. The server
  coalesces concurrent callers, so a vector that moves with its pass-mates can turn a hit into a miss;
- ranking quality: precision at recall 0.30 / 0.40 / 0.50 of raw cosine on QQP pairs 0..N-1.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_ai.engines.embedder import Embedder  # noqa: E402
from edge_ai.evaluate import precision_at, read_pairs  # noqa: E402
from edge_ai.model_files import resolve_embedder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4000, help="QQP pairs scored for ranking quality")
    ap.add_argument("--rounds", type=int, default=2, help="speed rounds, alternating the models")
    ap.add_argument("--static", type=int, default=0, metavar="N",
                    help="also static int8 (activation scales calibrated on N other QQP questions)")
    ap.add_argument("--percentile", type=float, default=0.0, metavar="P",
                    help="with --static: scales from the P-th percentile of activations instead of their range")
    args = ap.parse_args()

    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    rows = read_pairs(ROOT.parent / "shared" / "data" / "qqp_dev.jsonl.gz", args.pairs)
    texts = [r["text_a"] for r in rows[:1024]]
    labels = np.array([int(r["label"]) for r in rows])
    emb = Embedder(resolve_embedder(""), backend="onnx", export_dir=ROOT / "models" / "embedders")
    assert emb._onnx is not None, "the ONNX export failed; see the log"
    float_session = emb._onnx.session
    int8_path = Path(tempfile.mkdtemp(prefix="edge-int8-")) / "int8.onnx"
    quantize_dynamic(emb._onnx.path, int8_path, weight_type=QuantType.QInt8, per_channel=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = float_session.get_session_options().intra_op_num_threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    models = {"float": float_session, "int8": ort.InferenceSession(str(int8_path), opts, providers=["CPUExecutionProvider"])}
    if args.static:
        # activation scales fixed from calibration passes over other QQP questions (the second half of the
        # file), so a vector no longer depends on its pass-mates
        calib = [r["text_a"] for r in read_pairs(ROOT.parent / "shared" / "data" / "qqp_dev.jsonl.gz")[-args.static:]]

        class Passes(CalibrationDataReader):
            def __init__(self) -> None:
                self.groups = iter([calib[i : i + 16] for i in range(0, len(calib), 16)])

            def get_next(self) -> dict | None:
                group = next(self.groups, None)
                if group is None:
                    return None
                f = emb.model.preprocess(group)
                width = 64  # one shape for every pass: histogram calibration stacks them
                return {k: np.pad(f[k].numpy()[:, :width], ((0, 0), (0, max(0, width - f[k].shape[1])))).astype(np.int64)
                        for k in emb._onnx.inputs}

        static_path = int8_path.with_name("int8-static.onnx")
        quantize_static(emb._onnx.path, static_path, Passes(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"],
                        calibrate_method=CalibrationMethod.Percentile if args.percentile else CalibrationMethod.MinMax,
                        extra_options={"CalibPercentile": args.percentile} if args.percentile else {})
        models["static"] = ort.InferenceSession(str(static_path), opts, providers=["CPUExecutionProvider"])

    speed: dict[str, list[tuple[float, float]]] = {k: [] for k in models}
    for r in range(args.rounds):
        for name in list(models) if r % 2 == 0 else reversed(list(models)):
            emb._onnx.session = models[name]
            emb.encode(texts[:32])
            t = time.perf_counter()
            emb.encode(texts)
            batched = len(texts) / (time.perf_counter() - t)
            t = time.perf_counter()
            for s in texts[:200]:
                emb._forward([s])
            speed[name].append((batched, 200 / (time.perf_counter() - t)))

    rng = random.Random(0)
    mates = [rng.sample(texts[200:], 15) for _ in range(200)]
    vectors: dict[str, np.ndarray] = {}
    print(f"all-MiniLM-L6-v2 on ONNX Runtime, float vs int8 weights; QQP questions; {args.rounds} alternating rounds")
    print(f"{'model':<7}{'passes of 16 /s':>18}{'one at a time /s':>18}{'cos to float':>14}{'alone vs in a pass':>20}"
          f"{'P@R0.30':>9}{'P@R0.40':>9}{'P@R0.50':>9}")
    for name, session in models.items():
        emb._onnx.session = session
        vectors[name] = emb.encode(texts)
        alone = np.stack([emb._forward([t])[0][0] for t in texts[:200]])
        in_pass = np.stack([emb._forward([t, *m])[0][0] for t, m in zip(texts[:200], mates)])
        moved = (alone * in_pass).sum(1)
        a = emb.encode([r["text_a"] for r in rows])
        b = emb.encode([r["text_b"] for r in rows])
        scores = (a * b).sum(1)
        to_float = (vectors[name] * vectors["float"]).sum(1)
        batched = "/".join(f"{s[0]:.0f}" for s in speed[name])
        one = "/".join(f"{s[1]:.0f}" for s in speed[name])
        print(f"{name:<7}{batched:>18}{one:>18}{f'{to_float.min():.3f}-{to_float.max():.3f}':>14}"
              f"{f'{moved.min():.3f} (mean {moved.mean():.4f})':>20}"
              + "".join(f"{precision_at(scores, labels, r):>9.3f}" for r in (0.3, 0.4, 0.5)))
    emb.close()


if __name__ == "__main__":
    main()
