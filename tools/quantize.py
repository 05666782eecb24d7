"""``turnout tools quantize``: weight-only quantization into an artifact the HF backend (and vLLM, for GPTQ) loads.

Methods (all through transformers' quantizer integrations, so ``from_pretrained`` restores them):
  int8  torchao Int8WeightOnlyConfig: per-channel int8 weights of every nn.Linear, CPU friendly.
  nf4   bitsandbytes 4-bit NormalFloat, blocks of 64 weights per scale.
  gptq  4-bit GPTQ (gptqmodel + optimum), calibrated on the training corpus; vLLM loads it too.

The tied embedding / LM head stays in full precision in every method (the integrations quantize
nn.Linear layers only, and the LM head shares the embedding's weight).

4-bit kernels want round layer widths: gptqmodel packs only layers whose in and out features are
multiples of 32, and bitsandbytes' CPU path needs out features divisible by 32 and in features by the
block size. The bundled model's feed-forward width (688) is neither, so for 4-bit methods the
feed-forward is first zero-padded to a multiple of ``--pad-multiple`` (688 -> 704). Padding is exact:
the extra gate/up rows give silu(0) * 0 = 0 and the extra down-projection columns are zero.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tools import derived
from tools.artifact import check_out_dir, require_model_dir, staged_output
from tools.manifest import utc_now
from tools.options import add_fields, from_args

METHODS = ("int8", "nf4", "gptq")
BITS = {"int8": 8, "nf4": 4, "gptq": 4}


@dataclass(frozen=True)
class QuantizeOptions:
    """Quantization settings."""

    method: str = "int8"
    """int8 (torchao weight-only), nf4 (bitsandbytes 4-bit) or gptq (4-bit, calibrated)."""
    group_size: int = 64
    """gptq: weights per scale (nf4 uses bitsandbytes' blocks of 64; int8 one scale per output channel)."""
    pad_multiple: int = -1
    """Zero-pad the feed-forward width to a multiple of this before quantizing (exact); -1: 64 for
    4-bit methods, none for int8; 0: never."""
    calibration_samples: int = 32
    """gptq: calibration texts drawn from the training corpus."""
    calibration_chars: int = 1000
    """gptq: characters per calibration text (~250 tokens)."""
    seed: int = 0
    """Seeds the choice of calibration texts."""
    threads: int = 2
    """torch intra-op threads."""

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.group_size < 16 or self.group_size & (self.group_size - 1):
            raise ValueError(f"group_size must be a power of two >= 16, got {self.group_size!r}")
        if self.pad_multiple < -1:
            raise ValueError(f"pad_multiple must be -1, 0 or positive, got {self.pad_multiple!r}")
        for name in ("calibration_samples", "calibration_chars", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    @property
    def padding(self) -> int:
        if self.pad_multiple == -1:
            return 64 if BITS[self.method] == 4 else 0
        return self.pad_multiple


def pad_feed_forward(model, multiple: int) -> dict[str, int] | None:
    """Zero-pad every gate/up/down projection to an intermediate width that is a multiple of ``multiple``."""
    import torch

    old = getattr(model.config, "intermediate_size", None)
    if not multiple or old is None or old % multiple == 0:
        return None
    new = multiple * math.ceil(old / multiple)
    with torch.no_grad():
        for layer in model.model.layers:
            mlp = layer.mlp
            if not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
                raise ValueError(f"cannot pad {type(mlp).__name__}: not a gated (SwiGLU) feed-forward")
            for name in ("gate_proj", "up_proj"):
                linear = getattr(mlp, name)
                padded = torch.nn.Linear(linear.in_features, new, bias=linear.bias is not None)
                padded.weight.zero_()
                padded.weight[:old] = linear.weight
                if linear.bias is not None:
                    padded.bias.zero_()
                    padded.bias[:old] = linear.bias
                setattr(mlp, name, padded)
            linear = mlp.down_proj
            padded = torch.nn.Linear(new, linear.out_features, bias=linear.bias is not None)
            padded.weight.zero_()
            padded.weight[:, :old] = linear.weight
            if linear.bias is not None:
                padded.bias.copy_(linear.bias)
            mlp.down_proj = padded
    model.config.intermediate_size = new
    return {"from": old, "to": new}


def _calibration_texts(parent: Path, options: QuantizeOptions) -> list[str]:
    import random

    from tools.corpus import split_corpus

    seed, fraction, _ = derived.held_out_setup(parent)
    split = split_corpus(seed=seed, held_out_fraction=fraction)
    text = "\n\n".join(split.train.values())
    rng = random.Random(options.seed)
    starts = [rng.randrange(0, max(1, len(text) - options.calibration_chars)) for _ in range(options.calibration_samples)]
    return [text[s : s + options.calibration_chars] for s in starts]


def _quantization_config(method: str, options: QuantizeOptions, tokenizer, calibration: list[str]):
    import torch

    if method == "int8":
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        return TorchAoConfig(quant_type=Int8WeightOnlyConfig())
    if method == "nf4":
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.float32,
            bnb_4bit_quant_storage=torch.uint8,
        )
    from transformers import GPTQConfig

    return GPTQConfig(
        bits=4, group_size=options.group_size, dataset=calibration, tokenizer=tokenizer, desc_act=False, sym=True
    )


def _quantize(source: Path, method: str, config, dtype):
    import torch
    from transformers import AutoModelForCausalLM

    if method == "gptq":
        # gptqmodel reads its worker count from the environment; on a 2-core machine more workers thrash.
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(torch.get_num_threads()))
    kwargs = {"device_map": "cpu"} if method in ("nf4", "gptq") else {}
    return AutoModelForCausalLM.from_pretrained(source, quantization_config=config, dtype=dtype, **kwargs)


def _strip_calibration(out: Path) -> None:
    """GPTQConfig serialises its calibration texts and tokenizer into config.json: keep the settings only
    (the manifest records where the calibration texts came from)."""
    path = out / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    quant = config.get("quantization_config") or {}
    quant.pop("dataset", None)
    quant.pop("tokenizer", None)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def quantized_modules(model) -> dict[str, list[str] | int]:
    """How many linear layers hold quantized weights, and which weight modules stayed full precision."""
    import torch

    quantized, kept = 0, []
    for name, module in model.named_modules():
        packed = hasattr(module, "qweight") or type(module).__module__.startswith(("bitsandbytes", "gptqmodel"))
        # torchao keeps nn.Linear but swaps its weight for a quantized tensor subclass.
        subclassed = isinstance(module, torch.nn.Linear) and type(module.weight) is not torch.nn.Parameter
        if packed or subclassed:
            quantized += 1
        elif isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            kept.append(name)
    return {"quantized": quantized, "full_precision": kept}


def run_quantize(
    model_dir: str | Path, out: str | Path, options: QuantizeOptions, command: str = "", show_progress: bool = True
) -> dict:
    """Quantize into ``out`` (weights, tokenizer, manifest); return the JSON report."""
    import torch
    from transformers import AutoTokenizer

    options.validate()
    parent = require_model_dir(model_dir)
    check_out_dir(out)
    started, started_utc = time.monotonic(), utc_now()
    torch.set_num_threads(options.threads)
    if not show_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(parent)
    with staged_output(out) as out_dir:
        padded, modules = _write_quantized(out_dir, parent, tokenizer, options)
        metrics = _score_against_parent(out_dir, parent, tokenizer)
        quantization = _quantization_record(options, padded, modules)
        derived.write_derived_manifest(
            out_dir, parent, name=Path(out).name, tool="quantize", command=command,
            arguments={"model": str(model_dir), **asdict(options)}, started_utc=started_utc, started=started,
            metrics=metrics, quantization=quantization,
        )
    return {"out": str(Path(out).resolve()), "quantization": quantization, **metrics}


def _write_quantized(out_dir: Path, parent: Path, tokenizer, options: QuantizeOptions):
    """Quantize ``parent`` (its feed-forward padded first, if ``options`` ask) and save it with the tokenizer
    into ``out_dir``; return (the padding done or None, quantized_modules of the result)."""
    import torch

    method = options.method
    calibration = _calibration_texts(parent, options) if method == "gptq" else []
    config = _quantization_config(method, options, tokenizer, calibration)
    # GPTQ kernels and vLLM expect half-precision activations and scales; the others keep fp32 compute.
    dtype = torch.float16 if method == "gptq" else torch.float32
    with tempfile.TemporaryDirectory(prefix="turnout-quantize-") as scratch:
        source, padded = _padded_copy(parent, options.padding, Path(scratch))
        quantized = _quantize(source, method, config, dtype)
        modules = quantized_modules(quantized)
        quantized.save_pretrained(out_dir)
    if method == "gptq":
        _strip_calibration(out_dir)
    derived.copy_tokenizer_files(parent, out_dir)
    if not (out_dir / "tokenizer.json").is_file():
        tokenizer.save_pretrained(out_dir)
    return padded, modules


def _padded_copy(parent: Path, multiple: int, scratch: Path) -> tuple[Path, dict[str, int] | None]:
    """(the directory to quantize, the padding done): a copy of ``parent`` in ``scratch`` with its feed-forward
    zero-padded to a multiple of ``multiple``, or ``parent`` itself when there is nothing to pad."""
    import torch
    from transformers import AutoModelForCausalLM

    if not multiple:
        return parent, None
    model = AutoModelForCausalLM.from_pretrained(parent, dtype=torch.float32)
    padded = pad_feed_forward(model, multiple)
    if padded is None:
        return parent, None
    model.save_pretrained(scratch)
    derived.copy_tokenizer_files(parent, scratch)
    return scratch, padded


def _score_against_parent(out_dir: Path, parent: Path, tokenizer) -> dict:
    """Held-out perplexity and weight bytes of the quantized model and of its parent."""
    import torch
    from transformers import AutoModelForCausalLM

    from tools.evaluate import model_perplexity

    # Score what the server will load, loaded the way the HF backend loads it.
    _, held_out, seq_len = derived.corpus_streams(tokenizer, parent, chat=False)
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    ppl = model_perplexity(reloaded, held_out, seq_len)
    parent_ppl = model_perplexity(AutoModelForCausalLM.from_pretrained(parent, dtype=torch.float32), held_out, seq_len)
    return {
        "held_out_perplexity": round(ppl, 3),
        "parent_held_out_perplexity": round(parent_ppl, 3),
        "perplexity_change_pct": round(100 * (ppl / parent_ppl - 1), 2),
        "weight_bytes": derived.directory_bytes(out_dir),
        "parent_weight_bytes": derived.directory_bytes(parent),
    }


def _quantization_record(options: QuantizeOptions, padded: dict[str, int] | None, modules: dict) -> dict:
    """The manifest's ``quantization``: how the weights were quantized, and which stayed full precision."""
    method = options.method
    return {
        "method": method,
        "bits": BITS[method],
        "group_size": {"int8": "per-channel", "nf4": 64, "gptq": options.group_size}[method],
        "library": {"int8": "torchao", "nf4": "bitsandbytes", "gptq": "gptqmodel+optimum"}[method],
        "padded_intermediate_size": padded,
        "calibration": (
            f"{options.calibration_samples} x {options.calibration_chars} characters of the training split"
            if method == "gptq"
            else None
        ),
        "quantized_linear_layers": modules["quantized"],
        "full_precision_modules": modules["full_precision"],
    }


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "quantize",
        help="weight-only quantization: int8 (torchao), nf4 (bitsandbytes) or gptq 4-bit",
        description="Quantize a model's linear layers and save an artifact that `turnout serve --model DIR` "
        "loads (gptq artifacts load in vLLM too). Held-out perplexity before and after and the weight "
        "size go into the report and the manifest. `bench/quant_table.py` compares all methods.",
    )
    parser.add_argument("--model", type=Path, required=True, help="parent model directory")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced if an artifact)")
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON report to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_fields(parser, QuantizeOptions, "quantization")
    parser.set_defaults(run=_main)


def _main(args: argparse.Namespace, command: str) -> int:
    result = run_quantize(args.model, args.out, from_args(QuantizeOptions, args), command, not args.quiet)
    derived.report(args.report, result)
    return 0
