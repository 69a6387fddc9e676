#!/usr/bin/env python3
"""Golden training data from PyTorch + transformers for ternlab's training engine (tests/train/test_golden_grad.cpp).

Two steps (tools/golden/README.md has the exact commands):

  prepare SRC DST --seed S   (standard library only; runs anywhere)
      Copies a checkpoint written by `ternlab init --dtype f32` from SRC to DST and replaces every RMSNorm
      gain (input_layernorm, attn_sub_norm, post_attention_layernorm, ffn_sub_norm, model.norm) with
      uniform [0.5, 1.5) values. Gains of exactly 1 would hide a misplaced gain in a backward pass, and
      make ActQuant inputs exact integer ratios (v at position 0 is a multiple of one scale), whose
      rounding ties fp32 noise resolves either way.

  run --out OUT DIR...        (torch + transformers, on the GPU machine; needs TORCHDYNAMO_DISABLE=1)
      Loads each DIR with BitNetForCausalLM and its online AutoBitLinear quantization (absmean WeightQuant +
      per-token ActQuant, identity backward), fp32, eager attention, and writes OUT/<dir name>.tlfx with:
        meta                        JSON text: versions, device, the STE checks, the fp64 noise floor
        bitlinear_source            text: the transformers source of WeightQuant, ActQuant, AutoBitLinear
        input_ids (B,T) i32         batch 0
        labels (B,T) i32            HF labels (= input_ids, two positions -100), shifted inside HF
        targets (B,T) i32           the same as ternlab's next-token targets: targets[b,t] = labels[b,t+1],
                                    -1 where that is -100 and at t = T-1
        logits (B,T,V) f32, loss (1) f32          the forward on batch 0
        grad.<HF name> f32          d loss / d param of batch 0 (before clipping)
        train.input_ids, train.targets (S,B,T) i32  the batch of each step (step 0 = batch 0)
        train.loss, train.grad_norm, train.lr (S) f32   per step: the loss, clip_grad_norm_'s returned norm
                                    (before clipping) and the learning rate the step used
        final.<HF name> f32         the parameters after S steps
        final_loss (1) f32          the loss of batch 0 with the final parameters
      The steps: torch.optim.AdamW(lr=1e-3, weight_decay=0.01, default betas/eps, single-tensor path),
      CosineAnnealingLR(T_max=S), clip_grad_norm_(1.0), S = 10.
      Also OUT/diag/<dir name>.noquant.tlfx (not committed): batch 0 with both quantizers replaced by the
      identity, to tell a quantizer difference from any other when a comparison fails.

The straight-through estimator: transformers' WeightQuant and ActQuant are torch.autograd.Functions whose
backward returns grad_output unchanged, i.e. the gradient of x + (q(x) - x).detach(). check_ste() verifies
that (backward is exactly the identity; the detach form gives the same gradient) and that AutoBitLinear.forward
still applies both, so no monkeypatching is needed; their source is stored in the fixture.
"""
import json
import os
import pathlib
import random
import shutil
import struct
import sys

B, T, STEPS = 2, 16, 10
LR, WD, MAX_NORM = 1e-3, 0.01, 1.0
# HF label positions set to -100 (ignored) in every batch: (b, t). t = 0 is dropped by the shift anyway.
IGNORED = [(0, 5), (1, 0), (1, 11)]


# ---------------------------------------------------------------------------------------------------------
# prepare (standard library only)

def prepare(src: pathlib.Path, dst: pathlib.Path, seed: int):
    raw = bytearray((src / "model.safetensors").read_bytes())
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    base = 8 + hlen
    rng = random.Random(seed)
    changed = []
    for name in sorted(k for k in header if k != "__metadata__"):
        info = header[name]
        assert info["dtype"] == "F32", f"{src}: {name} is {info['dtype']}; make the checkpoint with --dtype f32"
        if not name.endswith("norm.weight"):
            continue
        a, b = info["data_offsets"]
        n = (b - a) // 4
        vals = [0.5 + rng.random() for _ in range(n)]
        raw[base + a:base + b] = struct.pack(f"<{n}f", *vals)
        changed.append(name)
    assert changed, f"{src}: no norm weights found"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors" and f.is_file():
            shutil.copyfile(f, dst / f.name)
    (dst / "model.safetensors").write_bytes(bytes(raw))
    print(f"{dst}: {len(changed)} norm gains randomised (seed {seed})")


# ---------------------------------------------------------------------------------------------------------
# run (torch + transformers)

def check_ste(torch, bitnet):
    """transformers' quantizers must be the straight-through estimator: identity backward, and a forward
    equal to the plain quantizer. Returns what was found, for the record."""
    import inspect
    out = {}
    g = torch.Generator(device="cuda").manual_seed(7)
    x = torch.randn(8, 64, device="cuda", generator=g) * 0.3
    grad_out = torch.randn(8, 64, device="cuda", generator=g)
    for name in ("WeightQuant", "ActQuant"):
        fn = getattr(bitnet, name)
        xi = x.clone().requires_grad_(True)
        y = fn.apply(xi)
        y.backward(grad_out)
        assert torch.equal(xi.grad, grad_out), f"{name}.backward is not the identity"
        # the STE written as x + (q(x) - x).detach(): same gradient, forward equal up to one rounding
        xs = x.clone().requires_grad_(True)
        q = fn.apply(x)
        ys = xs + (q - xs).detach()
        ys.backward(grad_out)
        assert torch.equal(xs.grad, grad_out)
        out[name] = {"backward_identity": True,
                     "detach_form_forward_max_abs_diff": float((ys - q).abs().max()),
                     "nonzero_codes": int((q != 0).sum())}
    fwd = inspect.getsource(bitnet.AutoBitLinear.forward)
    assert "WeightQuant.apply" in fwd and "ActQuant.apply" in fwd, "AutoBitLinear.forward changed:\n" + fwd
    src = "\n".join(inspect.getsource(c) for c in (bitnet.WeightQuant, bitnet.ActQuant, bitnet.AutoBitLinear))
    return out, src


def tlfx_write(path, entries):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import tlfx
    tlfx.write(path, entries)


def hf_to_targets(np, labels):
    # HF's causal-LM loss: position t predicts labels[t+1]; -100 is ignored. ternlab: targets[t], -1 ignored.
    tg = np.full_like(labels, -1)
    tg[:, :-1] = labels[:, 1:]
    tg[tg == -100] = -1
    return tg


def run_one(ckpt: pathlib.Path, out_dir: pathlib.Path, torch, np, transformers, ste, bitlinear_source):
    from transformers import AutoModelForCausalLM
    device = "cuda"
    cfg = json.loads((ckpt / "config.json").read_text())
    V = cfg["vocab_size"]

    def load(dtype):
        m = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, device_map=device,
                                                 attn_implementation="eager")
        # The bitnet quantizer may pick its own dtype at load time: force it (nn.Module.to, past HF's guard
        # against casting quantized models; AutoBitLinear keeps latent float weights, so a cast is exact).
        m = torch.nn.Module.to(m, dtype)
        m.train()  # attention_dropout is 0: train mode changes nothing but is what a trainer runs
        for p in m.parameters():
            p.requires_grad_(True)
        kinds = {type(mod).__name__ for n, mod in m.named_modules() if n.endswith("_proj")}
        assert kinds == {"AutoBitLinear"}, f"{ckpt}: projections are {kinds}"
        assert all(mod.online_quant for n, mod in m.named_modules() if n.endswith("_proj"))
        assert type(m.lm_head).__name__ == "Linear"
        return m

    model = load(torch.float32)
    dtypes = sorted({str(t.dtype) for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()})
    assert dtypes == ["torch.float32"], f"{ckpt}: {dtypes}"
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    assert tied == cfg["tie_word_embeddings"], f"{ckpt}: tied {tied}"

    rng = np.random.default_rng(4321)
    ids = rng.integers(0, V, size=(STEPS, B, T)).astype(np.int32)
    labels = ids.astype(np.int64).copy()
    for b, t in IGNORED:
        labels[:, b, t] = -100
    targets = np.stack([hf_to_targets(np, labels[s]) for s in range(STEPS)]).astype(np.int32)

    def dev(a):
        return torch.from_numpy(np.ascontiguousarray(a)).long().to(device)

    names = [n for n, _ in model.named_parameters()]  # the tied lm_head appears once, as embed_tokens
    params = dict(model.named_parameters())

    # fp64 noise floor: the same forward/backward in double (quantizers still round in fp32, as they cast)
    # (BitNetRMSNorm and the eager softmax still compute in fp32). For the record only.
    try:
        m64 = load(torch.float64)
        out64 = m64(input_ids=dev(ids[0]), labels=dev(labels[0]))
        out64.loss.backward()
        g64 = {n: p.grad.detach().clone() for n, p in m64.named_parameters()}
        logits64, loss64 = out64.logits.detach(), out64.loss.item()
        del m64, out64
    except Exception as e:  # noqa: BLE001 -- the noise floor is optional
        g64, noise = None, {"error": repr(e)}

    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, foreach=False, fused=False)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    losses, norms, lrs = [], [], []
    out = {}
    for s in range(STEPS):
        opt.zero_grad(set_to_none=True)
        res = model(input_ids=dev(ids[s]), labels=dev(labels[s]))
        res.loss.backward()
        if s == 0:
            logits = res.logits.detach().float()
            # HF's loss against the explicit next-token targets ternlab uses
            tg = dev(targets[0]).reshape(-1)
            own = torch.nn.functional.cross_entropy(logits.reshape(-1, V), tg, ignore_index=-1)
            assert torch.allclose(own, res.loss.detach(), rtol=1e-5, atol=0), (float(own), float(res.loss))
            out["logits"] = logits.cpu().numpy().astype(np.float32)
            out["loss"] = np.array([res.loss.item()], dtype=np.float32)
            grads0 = {n: params[n].grad.detach().clone() for n in names}
            if g64 is not None:
                noise = {
                    "loss_rel": abs(res.loss.item() - loss64) / loss64,
                    "logits_max_abs": float((logits.double() - logits64).abs().max()),
                    "grad_rel_l2": {n: float((grads0[n].double() - g64[n]).norm() / g64[n].norm()) for n in names},
                    "grad_max_abs_over_max": {n: float((grads0[n].double() - g64[n]).abs().max() / g64[n].abs().max())
                                              for n in names},
                }
            for n in names:
                out[f"grad.{n}"] = grads0[n].cpu().numpy().astype(np.float32)
        lrs.append(opt.param_groups[0]["lr"])
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM, foreach=False)))
        losses.append(res.loss.item())
        opt.step()
        sched.step()
    with torch.no_grad():
        final_loss = model(input_ids=dev(ids[0]), labels=dev(labels[0])).loss.item()

    meta = {
        "torch": torch.__version__, "transformers": transformers.__version__, "device": torch.cuda.get_device_name(),
        "checkpoint": ckpt.name, "dtypes": dtypes, "tied": tied,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "optimizer": {"AdamW": {"lr": LR, "weight_decay": WD, "betas": [0.9, 0.999], "eps": 1e-8,
                                "foreach": False, "fused": False},
                      "CosineAnnealingLR": {"T_max": STEPS}, "clip_grad_norm_": MAX_NORM},
        "ignored_label_positions": IGNORED, "losses": losses, "grad_norms": norms, "lrs": lrs,
        "final_loss": final_loss, "fp64_noise_floor": noise, "ste_check": ste,
    }
    # Diagnostics, not committed: the same batch-0 forward/backward with both quantizers replaced by the
    # identity (smooth maths only), to tell a quantizer difference from a difference elsewhere.
    import transformers.integrations.bitnet as bitnet
    saved = bitnet.WeightQuant.apply, bitnet.ActQuant.apply
    try:
        bitnet.WeightQuant.apply = bitnet.ActQuant.apply = lambda x: x
        mq = load(torch.float32)
        r = mq(input_ids=dev(ids[0]), labels=dev(labels[0]))
        r.loss.backward()
        diag = {"input_ids": ids[0], "targets": targets[0], "loss": np.array([r.loss.item()], dtype=np.float32),
                "logits": r.logits.detach().float().cpu().numpy()}
        for n, p in mq.named_parameters():
            diag[f"grad.{n}"] = p.grad.detach().float().cpu().numpy()
        (out_dir / "diag").mkdir(exist_ok=True)
        tlfx_write(out_dir / "diag" / f"{ckpt.name}.noquant.tlfx", diag)
        del mq
    except Exception as e:  # noqa: BLE001 -- diagnostics are optional
        print(f"  {ckpt.name}: no-quant diagnostics failed: {e!r}")
    finally:
        bitnet.WeightQuant.apply, bitnet.ActQuant.apply = saved

    entries = {"meta": json.dumps(meta), "bitlinear_source": bitlinear_source,
               "input_ids": ids[0], "labels": labels[0].astype(np.int32), "targets": targets[0]}
    entries.update(out)
    entries["train.input_ids"] = ids
    entries["train.targets"] = targets
    entries["train.loss"] = np.array(losses, dtype=np.float32)
    entries["train.grad_norm"] = np.array(norms, dtype=np.float32)
    entries["train.lr"] = np.array(lrs, dtype=np.float32)
    for n in names:
        entries[f"final.{n}"] = params[n].detach().cpu().numpy().astype(np.float32)
    entries["final_loss"] = np.array([final_loss], dtype=np.float32)
    tlfx_write(out_dir / f"{ckpt.name}.tlfx", entries)
    print(f"{ckpt.name}: tied {tied}, loss {losses[0]:.6f} -> {losses[-1]:.6f} (final {final_loss:.6f}), "
          f"grad norms {[round(x, 4) for x in norms]}")
    if "error" in noise:
        print("  fp64 noise floor failed:", noise["error"])
    else:
        print(f"  fp32 vs fp64: loss rel {noise['loss_rel']:.3g}, logits max abs {noise['logits_max_abs']:.3g}, "
              f"grad rel L2 max {max(noise['grad_rel_l2'].values()):.3g}, grad max abs / max|g| "
              f"{max(noise['grad_max_abs_over_max'].values()):.3g}")
    return meta


def run(out_dir: pathlib.Path, dirs):
    # The reference is the eager maths: IEEE fp32, no TF32, no torch.compile, deterministic kernels.
    assert os.environ.get("TORCHDYNAMO_DISABLE") == "1", "run with TORCHDYNAMO_DISABLE=1"
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import numpy as np
    import torch
    import transformers
    from transformers.integrations import bitnet
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(0)
    try:
        ste, src = check_ste(torch, bitnet)
    except Exception as e:  # noqa: BLE001 -- keep going, but say so loudly and keep the source for the record
        import inspect
        import traceback
        traceback.print_exc()
        ste, src = {"error": repr(e)}, inspect.getsource(bitnet)
        print("STE CHECK FAILED; transformers.integrations.bitnet is:\n" + src)
    print("STE check:", json.dumps(ste))
    out_dir.mkdir(parents=True, exist_ok=True)
    for d in dirs:
        run_one(pathlib.Path(d), out_dir, torch, np, transformers, ste, src)


def main():
    a = sys.argv[1:]
    if len(a) >= 3 and a[0] == "prepare":
        seed = int(a[a.index("--seed") + 1]) if "--seed" in a else 0
        prepare(pathlib.Path(a[1]), pathlib.Path(a[2]), seed)
    elif len(a) >= 4 and a[0] == "run" and a[1] == "--out":
        run(pathlib.Path(a[2]), a[3:])
    else:
        sys.exit("usage: make_train_golden.py prepare SRC DST [--seed S] | run --out OUTDIR DIR...")


if __name__ == "__main__":
    main()
