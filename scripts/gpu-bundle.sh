#!/usr/bin/env bash
# Packs built binaries and the shared libraries they need that a bare GPU machine lacks (fmt, PCRE2,
# OpenBLAS, ...) into one folder, so they run on a machine without Debian's packages:
#   scripts/gpu-bundle.sh OUT_DIR BINARY...        then, there:  OUT_DIR/run BINARY_NAME [ARGS...]
# CUDA's own libraries (cudart, cuBLASLt, NCCL) and the C/C++ runtime are left to the GPU machine.
set -euo pipefail
out="${1:?usage: gpu-bundle.sh OUT_DIR BINARY...}"
shift
mkdir -p "$out/lib"
for bin in "$@"; do
  cp -f "$bin" "$out/"
  ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libstdc++.so* | libgcc_s.so*) ;;
      libcuda.so* | libcudart.so* | libcublas*.so* | libnccl.so* | libnvidia*) ;;
      *) cp -fL "$lib" "$out/lib/" ;;
    esac
  done
done
cat >"$out/run" <<'RUN'
#!/usr/bin/env bash
# Runs one bundled binary with the bundled libraries first and CUDA's from the usual places.
here="$(cd "$(dirname "$0")" && pwd)"
name="$1"
shift
cuda_libs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu 2>/dev/null | tr '\n' ':')
torch_libs=$(python3 -c 'import nvidia, os; print(":".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null || true)
LD_LIBRARY_PATH="$here/lib:${cuda_libs}${torch_libs}:${LD_LIBRARY_PATH:-}" exec "$here/$name" "$@"
RUN
chmod +x "$out/run"
du -sh "$out"
