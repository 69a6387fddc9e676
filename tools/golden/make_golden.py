#!/usr/bin/env python3
"""Golden tensors from transformers for ternlab's forward-pass parity tests.

Run on a machine with torch and transformers (the GPU machine):
    python3 tools/golden/make_golden.py --out OUTDIR tests/fixtures/golden/*/
For every checkpoint directory (written by `ternlab init`, in either Microsoft layout) this loads
BitNetForCausalLM in fp32 with the checkpoint's own quantization_config — online AutoBitLinear
(absmean WeightQuant + ActQuant) for the master layout, offline AutoBitLinear (unpacked codes ×
weight_scale) for the packed layout — runs fixed token ids, and writes OUTDIR/<dir name>.tlfx (copy it to
<dir>/golden.tlfx) with:
  input_ids (B,T) i32, logits (B,T,V) f32, and for the q_proj and down_proj of the first and last
  layers (q_proj, o_proj, gate_proj, down_proj of every layer): <tap>.input (B,T,K) f32 (the BitLinear input before ActQuant), <tap>.act_codes (B,T,K) i8,
  <tap>.weight_codes (out,in) i8, <tap>.weight_scale (1,) f32; and layers.<l>.output (B,T,C) f32, the
  hidden state leaving each decoder layer.
"""
import json
import os
import pathlib
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import tlfx  # noqa: E402

B, T = 2, 24


def act_codes(x):
    # transformers ActQuant, returning the integer codes instead of q/s
    s = 127 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    return (x * s).round().clamp(-128, 127).to(torch.int8)


def weight_codes(module):
    w = module.weight.detach().float()
    if getattr(module, "online_quant", False):
        scale = w.abs().mean().clamp(min=1e-5)
        s = 1.0 / scale
        return (w * s).round().clamp(-1, 1).to(torch.int8), scale.reshape(1)
    # offline: the weight already holds the unpacked codes; the output is multiplied by weight_scale
    return w.round().to(torch.int8), module.weight_scale.detach().float().reshape(1)


def run(ckpt: pathlib.Path, out_dir: pathlib.Path, device: str):
    cfg = json.loads((ckpt / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, device_map=device)
    # The bitnet quantizer may choose its own dtype at load time: force fp32 everywhere and check it.
    model = model.to(torch.float32)
    model.eval()
    dtypes = sorted({str(t.dtype) for t in list(model.parameters()) + list(model.buffers())
                     if t.is_floating_point()})
    assert dtypes == ["torch.float32"], f"{ckpt}: parameters/buffers in {dtypes}, expected float32 only"
    n_layers = cfg["num_hidden_layers"]
    vocab = cfg["vocab_size"]
    ids = np.random.default_rng(1234).integers(0, vocab, size=(B, T)).astype(np.int32)

    taps = {}
    handles = []
    modules = dict(model.named_modules())
    for layer in range(n_layers):
        for part in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"):
            name = f"model.layers.{layer}.{part}"
            mod = modules[name]
            kind = type(mod).__name__
            assert "BitLinear" in kind, f"{name} is {kind}, expected a BitLinear (quantization not applied)"

            def hook(m, args, _name=name):
                taps[_name] = args[0].detach().float().cpu()

            handles.append(mod.register_forward_pre_hook(hook))

    outputs = {}
    for layer in range(n_layers):
        def out_hook(m, args, result, _layer=layer):
            h = result[0] if isinstance(result, tuple) else result
            outputs[_layer] = h.detach().float().cpu()

        handles.append(modules[f"model.layers.{layer}"].register_forward_hook(out_hook))

    with torch.no_grad():
        logits = model(torch.from_numpy(ids).long().to(device)).logits.float().cpu()
    for h in handles:
        h.remove()

    out = {
        "meta": json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                            "device": device, "checkpoint": ckpt.name, "dtypes": dtypes,
                            "classes": sorted({type(m).__name__ for m in modules.values()})}),
        "input_ids": ids,
        "logits": logits.numpy().astype(np.float32),
    }
    for layer, h in outputs.items():
        out[f"layers.{layer}.output"] = h.numpy().astype(np.float32)
    for name, x in taps.items():
        key = name.removeprefix("model.")
        out[f"{key}.input"] = x.numpy().astype(np.float32)
        out[f"{key}.act_codes"] = act_codes(x).numpy()
        wc, ws = weight_codes(modules[name])
        out[f"{key}.weight_codes"] = wc.cpu().numpy()
        out[f"{key}.weight_scale"] = ws.cpu().numpy().astype(np.float32)
    # transformers must also load the tokenizer that `ternlab init` wrote
    tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    out["tokenizer_check"] = np.array(tok("Hello world!", add_special_tokens=True)["input_ids"], dtype=np.int32)
    tlfx.write(out_dir / f"{ckpt.name}.tlfx", out)
    print(f"{ckpt}: logits {tuple(logits.shape)}, |logits| mean {logits.abs().mean():.4f}, "
          f"taps {len(taps)}, classes {sorted({type(m).__name__ for m in modules.values() if 'Linear' in type(m).__name__})}")


def main():
    # The reference is the eager maths: IEEE fp32 everywhere, no TF32, no torch.compile (whose fused GPU
    # kernels may divide approximately). Set TORCHDYNAMO_DISABLE=1 in the environment before running.
    assert os.environ.get("TORCHDYNAMO_DISABLE") == "1", "run with TORCHDYNAMO_DISABLE=1"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args = sys.argv[1:]
    if len(args) < 3 or args[0] != "--out":
        sys.exit("usage: make_golden.py --out OUTDIR CHECKPOINT_DIR...")
    out_dir = pathlib.Path(args[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    for d in args[2:]:
        run(pathlib.Path(d), out_dir, device)


if __name__ == "__main__":
    main()
