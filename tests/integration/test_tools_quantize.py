"""`turnout tools quantize`: each method writes an artifact with a lineage manifest that the HF backend serves."""

import asyncio
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from backends.hf.backend import HFBackend
from backends.hf.config import HFEngineConfig
from backends.types import GenerateRequest, SamplingParams
from tools.cli import main
from tools.manifest import read_manifest, verify_digests
from tools.quantize import pad_feed_forward

METHODS = ("int8", "nf4", "gptq")


@pytest.fixture(scope="session")
def quantized(random_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("quantized")
    out = {}
    for method in METHODS:
        argv = ["quantize", "--model", str(random_models["llama"]), "--out", str(root / method),
                "--method", method, "--calibration-samples", "4", "--calibration-chars", "300",
                "--quiet", "--report", str(root / f"{method}.json")]
        assert main(argv) == 0
        out[method] = root / method
    return out


@pytest.mark.parametrize("method", METHODS)
def test_artifact_has_manifest_lineage_and_tokenizer(quantized, method, random_models):
    artifact = quantized[method]
    manifest = read_manifest(artifact)
    assert verify_digests(artifact, manifest) == []
    assert manifest["base_model"] == str(random_models["llama"].resolve())
    [entry] = manifest["lineage"]  # the parent has no manifest, so this run is the whole lineage
    assert entry["tool"] == "quantize" and entry["arguments"]["method"] == method
    assert set(entry) == {"tool", "command", "arguments", "started_utc", "duration_s", "metrics"}
    assert entry["metrics"]["weight_bytes"] < entry["metrics"]["parent_weight_bytes"]
    assert manifest["quantization"]["method"] == method and manifest["quantization"]["quantized_linear_layers"] > 0
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (artifact / name).is_file(), name
    report = json.loads((artifact.parent / f"{method}.json").read_text())
    assert report["held_out_perplexity"] == entry["metrics"]["held_out_perplexity"]


@pytest.mark.parametrize("method", METHODS)
def test_hf_backend_serves_the_quantized_artifact_with_the_transformers_forward(quantized, method):
    async def generate() -> list[int]:
        backend = HFBackend(HFEngineConfig(model=str(quantized[method]), max_num_seqs=2, max_model_len=64))
        await backend.start()
        try:
            assert backend.engine.core.runner.fast_forward is None  # packed weights: no lean forward
            request = GenerateRequest("r", "m", SamplingParams(max_tokens=6, temperature=0, ignore_eos=True),
                                      prompt_token_ids=[5, 9, 33, 7])
            return [t async for d in backend.generate(request) for t in d.token_ids]
        finally:
            await backend.close()

    assert len(asyncio.run(generate())) == 6


def test_feed_forward_padding_is_exact(random_models):
    model = AutoModelForCausalLM.from_pretrained(random_models["llama"]).eval()
    ids = torch.tensor([[5, 9, 33, 7, 11]])
    with torch.no_grad():
        before = model(ids).logits
        assert pad_feed_forward(model, 96) == {"from": 128, "to": 192}
        after = model(ids).logits
    assert model.model.layers[0].mlp.down_proj.in_features == 192
    assert torch.allclose(before, after, atol=1e-6)


def test_bad_method_is_a_clear_error(random_models, tmp_path, capsys):
    assert main(["quantize", "--model", str(random_models["llama"]), "--out", str(tmp_path / "q"),
                 "--method", "int3"]) == 2
    assert "method must be one of" in capsys.readouterr().err
