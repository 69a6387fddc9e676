#!/usr/bin/env python3
"""Golden tensors from transformers for ternlab's forward-pass parity tests.

Run on a machine with torch and transformers (the GPU machine):
    python3 tools/golden/make_golden.py tests/fixtures/golden/*/
For every checkpoint directory (written by `ternlab init`, in either Microsoft layout) this loads
BitNetForCausalLM in fp32 with the checkpoint's own quantization_config — online AutoBitLinear
(absmean WeightQuant + ActQuant) for the master layout, offline AutoBitLinear (unpacked codes ×
weight_scale) for the packed layout — runs fixed token ids, and writes <dir>/golden.tlfx with:
  input_ids (B,T) i32, logits (B,T,V) f32, and for the q_proj and down_proj of the first and last
  layers: <tap>.input (B,T,K) f32 (the BitLinear input before ActQuant), <tap>.act_codes (B,T,K) i8,
  <tap>.weight_codes (out,in) i8, <tap>.weight_scale (1,) f32.
"""
import json
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


def run(ckpt: pathlib.Path, device: str):
    cfg = json.loads((ckpt / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, device_map=device)
    model.eval()
    n_layers = cfg["num_hidden_layers"]
    vocab = cfg["vocab_size"]
    ids = np.random.default_rng(1234).integers(0, vocab, size=(B, T)).astype(np.int32)

    taps = {}
    handles = []
    modules = dict(model.named_modules())
    for layer in sorted({0, n_layers - 1}):
        for part in ("self_attn.q_proj", "mlp.down_proj"):
            name = f"model.layers.{layer}.{part}"
            mod = modules[name]
            kind = type(mod).__name__
            assert "BitLinear" in kind, f"{name} is {kind}, expected a BitLinear (quantization not applied)"

            def hook(m, args, _name=name):
                taps[_name] = args[0].detach().float().cpu()

            handles.append(mod.register_forward_pre_hook(hook))

    with torch.no_grad():
        logits = model(torch.from_numpy(ids).long().to(device)).logits.float().cpu()
    for h in handles:
        h.remove()

    out = {
        "meta": json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                            "device": device, "checkpoint": ckpt.name,
                            "classes": sorted({type(m).__name__ for m in modules.values()})}),
        "input_ids": ids,
        "logits": logits.numpy().astype(np.float32),
    }
    for name, x in taps.items():
        key = name.removeprefix("model.")
        out[f"{key}.input"] = x.numpy().astype(np.float32)
        out[f"{key}.act_codes"] = act_codes(x).numpy()
        wc, ws = weight_codes(modules[name])
        out[f"{key}.weight_codes"] = wc.cpu().numpy()
        out[f"{key}.weight_scale"] = ws.cpu().numpy().astype(np.float32)
    tlfx.write(ckpt / "golden.tlfx", out)
    print(f"{ckpt}: logits {tuple(logits.shape)}, |logits| mean {logits.abs().mean():.4f}, "
          f"taps {len(taps)}, classes {sorted({type(m).__name__ for m in modules.values() if 'Linear' in type(m).__name__})}")


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dirs = [pathlib.Path(a) for a in sys.argv[1:]]
    if not dirs:
        sys.exit("usage: make_golden.py CHECKPOINT_DIR...")
    for d in dirs:
        run(d, device)


if __name__ == "__main__":
    main()
